"""The multi-person Associative Embedding model as a SavedModel: the network and the in-graph half of its decoding.

pose-ae-train's network (`keras_hourglass.model`, `block="conv"`) outputs 68
channels per stack; the last stack's first `NUM_JOINTS` are the COCO joint
heatmaps and the next `NUM_JOINTS` their tags (the other 34 channels are not
used). `MultiPersonEstimator` wraps the Keras model in a
`keras.export.ExportArchive` with one signature,

* `crops(images)`: float32 crops `[N, height, width, 3]` in `[0, 1]` ->
  `heatmaps` and `tags` `[N, h, w, 17]` (the last stack's), and each joint's
  `MAX_CANDIDATES` best candidates after 3x3 non-maximum suppression:
  `candidate_values [N, 17, K]` (highest first) and `candidate_indices
  [N, 17, K]` (int32, `row * w + column`). Every output has a fixed size.

What runs where: the suppression and the top-k are array operations on the
whole heatmaps, the costly part of the decoding, and run in the graph (also
in TFLite, whose built-in ops have both). Grouping the candidates into
people is a small assignment problem per joint whose size depends on the
image (SciPy's Hungarian algorithm on at most 30 x 30 costs); it runs in
Python, in `keras_hourglass.codec.AssociativeEmbeddingCodec`.

The directory has the same `assets.extra/keras_hourglass.json` as the
single-person SavedModels, with `format` `MULTI_PERSON_FORMAT`, the joint
names, flip partners, limbs and input size.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from keras_hourglass.export import MULTI_PERSON_FORMAT, NORMALIZATION, last_output_shape, save_estimator
from keras_hourglass.joints import COCO_PERSON
from keras_hourglass.model import stack_outputs

NUM_JOINTS = COCO_PERSON.num_keypoints
MAX_CANDIDATES = 30  # pose-ae-train's `max_num_people`
SIGNATURE = "crops"


def split_outputs(output):
    """`(heatmaps, tags)` of one stack's 68-channel output `[..., 68]`: channels 0-16 and 17-33."""
    return output[..., :NUM_JOINTS], output[..., NUM_JOINTS:2 * NUM_JOINTS]


def candidates(heatmaps, count: int = MAX_CANDIDATES):
    """`(values [N, J, K], flat indices [N, J, K] int32)`: each joint's `count` best 3x3 maxima, highest first.

    The graph's version of `AssociativeEmbeddingCodec.candidates` (one image there, a batch here).
    """
    peaks = tf.nn.max_pool2d(heatmaps, 3, 1, "SAME")
    suppressed = tf.where(tf.equal(peaks, heatmaps), heatmaps, tf.zeros_like(heatmaps))
    shape = tf.shape(suppressed)
    per_joint = tf.reshape(tf.transpose(suppressed, [0, 3, 1, 2]), [shape[0], shape[3], shape[1] * shape[2]])
    values, indices = tf.math.top_k(per_joint, k=count, sorted=True)
    return values, tf.cast(indices, tf.int32)


class MultiPersonEstimator:
    """The Associative Embedding network and the in-graph half of its decoding, as an `ExportArchive`.

    Args:
        model: the `block="conv"` network with `2 * NUM_JOINTS` or more output channels per stack.
        keypoint_names, flip_partners, limbs: the joints (`keras_hourglass.joints.COCO_PERSON`'s).
    """

    def __init__(self, model: keras.Model, keypoint_names: Sequence[str], flip_partners=(), limbs=()):
        channels = last_output_shape(model)[-1]
        if channels < 2 * NUM_JOINTS or len(keypoint_names) != NUM_JOINTS:
            raise ValueError(f"a multi-person model outputs {NUM_JOINTS} heatmaps and {NUM_JOINTS} tags per stack "
                             f"and names {NUM_JOINTS} joints; got {channels} channels and {len(keypoint_names)} names.")
        self.model = model
        self.keypoint_names = [str(name) for name in keypoint_names]
        self.flip_partners = [[str(a), str(b)] for a, b in flip_partners]
        self.limbs = [[str(a), str(b)] for a, b in limbs]
        self.input_size = tuple(model.input_shape[1:3])
        self.heatmap_size = tuple(last_output_shape(model)[1:3])
        self.archive = keras.export.ExportArchive()
        # not `archive.track(model)`: the endpoints track the variables they use, and tracking the model too
        # stores every weight twice (its Keras variable and the tf.Variable inside), doubling what is
        # written, loaded and restored
        crops = tf.TensorSpec([None, *self.input_size, 3], tf.float32, name="images")
        self.crops = self.archive.add_endpoint(SIGNATURE, self._crops, input_signature=[crops])

    def _crops(self, images):
        heatmaps, tags = split_outputs(tf.cast(stack_outputs(self.model(images, training=False))[-1], tf.float32))
        values, indices = candidates(heatmaps)
        return {"heatmaps": heatmaps, "tags": tags, "candidate_values": values, "candidate_indices": indices}

    def metadata(self) -> dict:
        return {
            "format": MULTI_PERSON_FORMAT,
            "keypoint_names": self.keypoint_names,
            "flip_partners": self.flip_partners,
            "limbs": self.limbs,
            "input_size": list(self.input_size),
            "heatmap_size": list(self.heatmap_size),
            "normalization": NORMALIZATION,
            "max_candidates": MAX_CANDIDATES,
            "signatures": [SIGNATURE],
            "description": (f"Associative Embedding multi-person pose network: {NUM_JOINTS} joint heatmaps and tags "
                            f"from a {self.input_size[1]}x{self.input_size[0]} RGB image (float32 pixel / 255), "
                            f"with each joint's {MAX_CANDIDATES} best candidates; group them into people with "
                            "keras_hourglass.codec.AssociativeEmbeddingCodec."),
        }

    def save(self, path: str) -> str:
        """Writes the SavedModel at `path` (replacing one there, atomically), as `save_estimator` writes a
        single-person one; returns `path`."""
        return save_estimator(self, path)
