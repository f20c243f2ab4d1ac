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

import dataclasses
import os
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_hourglass.codec import AssociativeEmbeddingCodec
from keras_hourglass.export import (
    MULTI_PERSON_FORMAT,
    NORMALIZATION,
    LayerWeights,
    last_output_shape,
    save_estimator,
)
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
        self.weights = LayerWeights(model)
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
        self.converter_crops = tf.function(self._crops_reading_the_model, input_signature=[crops], autograph=False)

    def _crops(self, images):
        with self.weights.scope():
            outputs = stack_outputs(self.model(images, training=False))[-1]
        heatmaps, tags = split_outputs(tf.cast(outputs, tf.float32))
        values, indices = candidates(heatmaps)
        return {"heatmaps": heatmaps, "tags": tags, "candidate_values": values, "candidate_indices": indices}

    def _crops_reading_the_model(self, images):
        """`crops` as the converters take it (`keras_hourglass.export.LayerWeights.plain`)."""
        with self.weights.plain():
            return self._crops(images)

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


MAX_HEATMAP_VALUE = 10.0  # the reference's `test.py` skips a scale whose merged heatmaps go above this


@dataclasses.dataclass
class MultiPersonModel:
    """A multi-person SavedModel, loaded: its `crops` signature and what its metadata says.

    Attributes:
        crops: float32 crops `[N, height, width, 3]` in `[0, 1]` -> NumPy `heatmaps` and `tags` `[N, h, w, 17]`.
        keypoint_names, limbs: the joints and the skeleton.
        flip_index: each joint's mirror partner's index.
        input_size, heatmap_size: `(height, width)` of a crop and of its heatmaps.
        source: the folder it came from.
    """

    crops: Callable
    keypoint_names: list
    flip_index: list
    limbs: tuple
    input_size: tuple
    heatmap_size: tuple
    source: str
    owner: object = None  # keeps the loaded SavedModel (and its variables) alive


def is_multi_person(path: str) -> bool:
    """Whether `path` is a SavedModel folder written by `MultiPersonEstimator` (its metadata says so)."""
    from keras_hourglass.export import read_saved_model_metadata

    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        return False
    return read_saved_model_metadata(path).get("format") == MULTI_PERSON_FORMAT


def load_multi_person_model(path: str) -> MultiPersonModel:
    """Loads a multi-person SavedModel (`MultiPersonEstimator.save`); one clear error for anything else.

    The sizes come from the graph (its `crops` signature's input and
    heatmaps), not from the metadata file, whose joint names and flip
    partners are checked against it.
    """
    from keras_hourglass.export import read_saved_model_metadata
    from keras_hourglass.joints import JointSpec

    metadata = read_saved_model_metadata(path)
    if metadata.get("format") != MULTI_PERSON_FORMAT:
        raise ValueError(f"{path}: not a multi-person (Associative Embedding) SavedModel; its metadata format is "
                         f"{str(metadata.get('format'))[:80]!r}.")
    try:
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures[SIGNATURE]
    except (OSError, KeyError, ValueError, tf.errors.OpError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: the SavedModel cannot be loaded ({first}).") from None
    images = signature.structured_input_signature[1]["images"].shape
    heatmaps = signature.structured_outputs["heatmaps"].shape
    input_size, heatmap_size, joints = tuple(images[1:3]), tuple(heatmaps[1:3]), heatmaps[-1]
    if None in input_size or None in heatmap_size or None in (joints,):
        raise ValueError(f"{path}: its crops signature has no fixed input and heatmap size ({images}, {heatmaps}).")
    names = metadata.get("keypoint_names")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) == joints):
        raise ValueError(f"{path}: keypoint_names in its metadata must be {joints} names, one per heatmap; got "
                         f"{str(names)[:200]}.")
    partners, limbs = metadata.get("flip_partners", []), metadata.get("limbs", [])
    if not (isinstance(partners, list) and isinstance(limbs, list)
            and all(isinstance(p, list) and len(p) == 2 for p in partners + limbs)):
        raise ValueError(f"{path}: flip_partners and limbs in its metadata must be lists of joint-name pairs.")
    spec = JointSpec("multi-person", tuple(names), flip_partners=tuple(map(tuple, partners)),
                     limbs=tuple(map(tuple, limbs)))

    def crops(batch):
        outputs = signature(images=tf.convert_to_tensor(batch, tf.float32))
        return {"heatmaps": outputs["heatmaps"].numpy(), "tags": outputs["tags"].numpy()}

    return MultiPersonModel(crops, list(names), [int(i) for i in spec.flip_index], spec.limbs, input_size,
                            heatmap_size, path, loaded)


def merged_outputs(heatmaps, tags, flip_index=None):
    """One image's heatmaps `[h, w, J]` and tags `[h, w, J, D]` from the network's outputs, as the reference's
    `test.py` merges them (one scale).

    Args:
        heatmaps, tags: `[N, h, w, J]` for the crop and, with `flip_index`, its mirror image second (N = 2).
        flip_index: the flip test: the mirror's maps are mirrored back and their joints swapped with their
            partners; the heatmaps are averaged, the tags kept side by side (D = 2). Without it, D = 1.

    Returns:
        `(heatmaps, tags)`, the heatmaps capped at 1 as the reference does, or `None` where the heatmaps go
        above `MAX_HEATMAP_VALUE` (the reference then finds nobody at that scale).
    """
    heatmaps, tags = np.asarray(heatmaps, np.float32), np.asarray(tags, np.float32)
    if flip_index is None:
        merged, merged_tags, count = heatmaps[0], tags[0][..., None], 1
    else:
        merged = heatmaps[0] + heatmaps[1][:, ::-1][..., flip_index]
        merged_tags = np.stack([tags[0], tags[1][:, ::-1][..., flip_index]], axis=-1)
        count = 2
    if merged.max() > MAX_HEATMAP_VALUE:  # the reference tests the sum, before averaging it
        return None
    return np.minimum(merged / count, 1), merged_tags


def predict_people(model: MultiPersonModel, image, codec: AssociativeEmbeddingCodec | None = None,
                   flip_test: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every person in one image, bottom-up: `(keypoints [P, J, 2] image pixels, scores [P, J], person scores [P])`.

    The reference's `test.py` `multiperson` at one scale: the whole image,
    padded to a square, is resized to the model's input (its longer side
    fills the crop, no margin); the network runs on it and, with
    `flip_test`, on its mirror image (`merged_outputs`); `codec` (default
    `AssociativeEmbeddingCodec()`, the reference's settings) groups the
    joints; keypoints go back from heatmap to image pixels. Conventions:
    pixel centres at integer coordinates throughout, the crop centred on the
    image's middle `((width - 1) / 2, (height - 1) / 2)`; the reference
    centres it on `(width / 2, height / 2)` in OpenCV's pixel-centre
    coordinates, half a pixel off, which moves its crop by half a pixel x
    input size / longer side. A joint a person lacks scores 0.
    """
    from keras_hourglass.inference import whole_image_crop

    codec = codec or AssociativeEmbeddingCodec()
    crop, transform = whole_image_crop(image, model.input_size)
    batch = np.concatenate([crop, crop[:, :, ::-1]]) if flip_test else crop
    outputs = model.crops(batch)
    merged = merged_outputs(outputs["heatmaps"], outputs["tags"], model.flip_index if flip_test else None)
    joints = len(model.keypoint_names)
    if merged is None:
        return np.zeros((0, joints, 2), np.float32), np.zeros((0, joints), np.float32), np.zeros(0, np.float32)
    keypoints, scores, person_scores = codec.decode_people(*merged)
    stride = np.array(model.input_size[::-1], np.float32) / np.array(model.heatmap_size[::-1], np.float32)
    in_crop = (keypoints + 0.5) * stride - 0.5  # heatmap pixel centres -> crop pixel centres
    transform = np.asarray(transform[0], np.float32)
    in_image = in_crop @ transform[:, :2].T + transform[:, 2]
    return in_image.astype(np.float32), scores, person_scores


def multi_person_model_from_keras(network: keras.Model, spec=None) -> MultiPersonModel:
    """A `MultiPersonModel` that runs a Keras network in memory (a model being trained), as its SavedModel would.

    `spec` names the joints (default `keras_hourglass.joints.COCO_PERSON`).
    """
    spec = spec or COCO_PERSON
    output_shape = last_output_shape(network)

    @tf.function(reduce_retracing=True)
    def run(images):
        return split_outputs(tf.cast(stack_outputs(network(images, training=False))[-1], tf.float32))

    def crops(batch):
        heatmaps, tags = run(tf.convert_to_tensor(batch, tf.float32))
        return {"heatmaps": heatmaps.numpy(), "tags": tags.numpy()}

    return MultiPersonModel(crops, list(spec.names), [int(i) for i in spec.flip_index], spec.limbs,
                            tuple(network.input_shape[1:3]), tuple(output_shape[1:3]), network.name, network)
