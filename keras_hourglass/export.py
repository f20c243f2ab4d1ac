"""A trained model as a servable SavedModel that returns keypoints, and loading it back.

`PoseEstimator` wraps a Keras model and its `HeatmapCodec` in a `tf.Module`
whose functions do everything between an image and keypoints inside the
graph: crop the person with the one warp of `keras_hourglass.transforms`,
scale pixels to `[0, 1]`, run the network (optionally with the flip test),
decode the last stack's heatmaps and map the keypoints back to the input
image's pixels. `export_saved_model` writes it with these signatures:

* `serving_default(images)`: `images` uint8 `[N, H, W, 3]` of any size; the
  person is taken to fill the image (the crop is the image padded to a
  square).
* `boxes(images, boxes)`: `boxes` float32 `[N, 4]` tight person boxes
  `(x1, y1, x2, y2)` in pixels; the crop is the box's longer side times
  `SCALE_MARGIN`, as the data loaders do.
* `center_scale(images, center, scale)`: `center` `[N, 2]` `(x, y)` pixels
  and `scale` `[N]` in units of 200 pixels with the margin included (MPII's
  convention, what the loaders produce).
* `crops(images)`: float32 `[N, height, width, 3]` in `[0, 1]`, already
  cropped to the model's input size; keypoints in crop pixels. It has no
  warp op, so it is the one to convert to TFLite.
* `heatmaps(images)`: the same crops to the last stack's heatmaps alone.

Each returns `keypoints` float32 `[N, K, 2]` `(x, y)` (pixel centres at
integers, see `keras_hourglass.codec`), `scores` `[N, K]` (heatmap peaks) and
`heatmaps` `[N, h, w, K]` (the last stack, flip-averaged when exported with
the flip test). The input specs make TensorFlow reject a wrong dtype, rank or
channel count when the signature is called, before anything runs.

The directory also holds `assets.extra/keras_hourglass.json` (keypoint
names, flip partners, input size, normalisation, codec settings), which
`read_saved_model_metadata` reads (for `keras_hourglass.pose_model` and the
TFLite converter) and TensorFlow Serving ignores. Saving writes a
temporary directory and renames it, so a reader never sees half a model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_hourglass.codec import HeatmapCodec
from keras_hourglass.fileio import partial_directory, replace_directory
from keras_hourglass.model import stack_outputs
from keras_hourglass.transforms import (
    SCALE_MARGIN,
    SCALE_UNIT,
    apply_affine,
    box_to_center_scale,
    crop_matrix,
    invert_affine,
    warp_image,
)

METADATA_FILE = os.path.join("assets.extra", "keras_hourglass.json")
NORMALIZATION = "RGB, float32 pixel / 255 (range [0, 1])"
MAX_METADATA_BYTES = 16 * 2**20  # a SavedModel's metadata file is a few kB; more is not one of ours
MULTI_PERSON_FORMAT = "keras_hourglass.associative_embedding/1"  # the metadata format of a multi-person SavedModel


def last_output_shape(model: keras.Model) -> tuple:
    """Shape of the last stack's heatmaps (`output_shape` is a tuple for one output, a list for several)."""
    shape = model.output_shape
    return tuple(shape[-1] if isinstance(shape[0], (tuple, list)) else shape)


def _checked_images(images, dtype_name: str):
    """Checks rank and channels when the graph runs, naming the problem before any op sees the tensor.

    The image signatures declare images of unknown rank on purpose: a loaded
    signature does not check shapes against its spec, and checks against a
    static rank would be folded away at tracing time.
    """
    shape = tf.shape(images)
    rank_ok = tf.debugging.Assert(tf.equal(tf.size(shape), 4),
                                  [f"images must be a batch [N, height, width, 3] of {dtype_name}; got shape", shape])
    with tf.control_dependencies([rank_ok]):
        channels_ok = tf.debugging.Assert(tf.equal(shape[-1], 3), [
            f"images must have 3 channels (RGB): [N, height, width, 3] {dtype_name}; got shape", shape])
    with tf.control_dependencies([channels_ok]):
        sizes_ok = tf.debugging.Assert(tf.reduce_all(shape[:3] > 0), [
            f"images must hold at least one image of at least 1x1 pixels: [N, height, width, 3] {dtype_name}; "
            "got shape", shape])
    with tf.control_dependencies([sizes_ok]):
        return tf.ensure_shape(tf.identity(images), [None, None, None, 3])


def _checked_rows(values, name: str, columns: int | None, images):
    """Checks `[N, columns]` (or `[N]`) of finite values, one row per image, when the graph runs."""
    shape = tf.shape(values)
    expected = f"[N, {columns}]" if columns else "[N]"
    rank = 2 if columns else 1
    checks = [tf.debugging.Assert(tf.equal(tf.size(shape), rank), [f"{name} must have shape {expected}; got shape",
                                                                    shape])]
    with tf.control_dependencies(checks):
        if columns:
            checks.append(tf.debugging.Assert(tf.equal(shape[-1], columns), [
                f"{name} must have shape {expected}; got shape", shape]))
        checks.append(tf.debugging.Assert(tf.equal(shape[0], tf.shape(images)[0]), [
            f"{name} must have one row per image; got {name} shape", shape, "and images shape", tf.shape(images)]))
        checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(values)), [
            f"{name} must be finite numbers; got", values]))
    with tf.control_dependencies(checks):
        return tf.identity(values)


class LayerWeights:
    """A model's float32 weights as one `tf.Variable` per layer, which the exported graph reads them from.

    A SavedModel's load time grows with its number of variables: each is
    recreated, restored and captured by every function that reaches it. A
    full-size 8-stack model has 2172 Keras variables (four per BatchNorm,
    two per convolution) in 732 layers; one variable per layer took
    `tf.saved_model.load` from 7.0 s to 3.5 s and its peak memory from 1.79
    to 1.45 GiB, with the same outputs to the bit, here and in TFLite (2 cores
    of an AVX-512 Xeon). Inside a traced function, `scope()` splits each
    layer's variable back into its weights (`keras.StatelessScope`), so the
    graph computes exactly what the Keras model computes.

    The variables hold a copy of the weights: `update()` copies the model's
    current ones in, and `save_estimator` calls it, so a model that trains on
    after its estimator was built is written as it is when written. The
    estimator's functions called in memory (`estimator.crops(...)`) read that
    copy too: after changing the model's weights, call
    `estimator.weights.update()` (or save) before calling them. Weights that
    are not float32 stay the model's own variables.

    The converters (TFLite, ONNX, OpenVINO) get the graph traced within
    `plain()`, which reads the model's own variables: TensorFlow's TFLite
    converter froze and folded the per-layer variables with 0.7 GiB more
    memory (8 stacks: peak 3.52 against 2.82 GiB, same machine).
    """

    def __init__(self, model: keras.Model):
        groups, seen = {}, set()
        for variable in model.weights:
            if id(variable) not in seen and variable.dtype == "float32":
                seen.add(id(variable))
                groups.setdefault(variable.path.rpartition("/")[0], []).append(variable)
        self.groups = [(variables, tf.Variable(tf.zeros([sum(math.prod(v.shape) for v in variables)]),
                                               trainable=False, name=f"{layer or 'model'}/weights"))
                       for layer, variables in groups.items()]
        self._plain = threading.local()  # per thread: another thread may trace the export's functions meanwhile
        self.update()

    def update(self) -> None:
        """Copies the model's current weights into the layers' variables."""
        for variables, packed in self.groups:
            packed.assign(np.concatenate([np.ravel(keras.ops.convert_to_numpy(v)) for v in variables]))

    def scope(self):
        """Within it (inside a traced function), the model reads its weights from the layers' variables."""
        if getattr(self._plain, "on", False):
            return contextlib.nullcontext()
        mapping = []
        for variables, packed in self.groups:
            parts = tf.split(packed.read_value(), [math.prod(v.shape) for v in variables])
            mapping += [(v, tf.reshape(part, v.shape)) for v, part in zip(variables, parts)]
        return keras.StatelessScope(state_mapping=mapping)

    @contextlib.contextmanager
    def plain(self):
        """Within it, `scope()` does nothing: what is traced reads the model's own variables."""
        self._plain.on = True
        try:
            yield
        finally:
            self._plain.on = False


class PoseEstimator:
    """Image-to-keypoints inference around a Keras model, as a `keras.export.ExportArchive`.

    The endpoints are the graph functions below; `archive` holds them with
    the model's variables (Keras's own export path: a hand-made `tf.Module`
    tracking Keras 3 variables saved and served fine but converted to TFLite
    with wrong weights, all-NaN outputs, under TF 2.21). Build one estimator
    and save it many times: its functions are traced once. They read the
    model's weights as they were when the estimator was built or last saved
    (`weights`, a `LayerWeights`).

    Args:
        model: a stacked hourglass (one or more heatmap outputs; the last is used).
        codec: the codec the model was trained with; its `image_size` must
            be the model's input size.
        keypoint_names: one name per heatmap channel.
        flip_test: average the heatmaps of the image and its mirror image
            (needs `codec.flip_index`).
        limbs: pairs of keypoint names joined when drawing the skeleton
            (the data set's `JointSpec.limbs`), kept in the metadata.
    """

    def __init__(self, model: keras.Model, codec: HeatmapCodec, keypoint_names: Sequence[str],
                 flip_test: bool = False, limbs: Sequence[tuple[str, str]] = ()):
        input_size = tuple(model.input_shape[1:3])
        if input_size != tuple(codec.image_size):
            raise ValueError(f"codec.image_size {codec.image_size} differs from the model's input size {input_size}.")
        num_keypoints = last_output_shape(model)[-1]
        if len(keypoint_names) != num_keypoints:
            raise ValueError(f"{len(keypoint_names)} keypoint names for a model with {num_keypoints} heatmap channels.")
        if flip_test and codec.flip_index is None:
            raise ValueError("flip_test needs a codec built with flip_index.")
        self.model = model
        self.weights = LayerWeights(model)
        self.codec = codec
        self.keypoint_names = [str(n) for n in keypoint_names]
        self.limbs = [[str(a), str(b)] for a, b in limbs]
        unknown = sorted({j for limb in self.limbs for j in limb} - set(self.keypoint_names))
        if unknown:
            raise ValueError(f"limbs name joints {unknown} that are not among the keypoint names.")
        self.flip_test = bool(flip_test)
        height, width = codec.image_size
        crops = tf.TensorSpec([None, height, width, 3], tf.float32, name="images")
        images = tf.TensorSpec(None, tf.uint8, name="images")  # any rank: checked in the graph
        self.archive = keras.export.ExportArchive()
        # not `archive.track(model)`: the endpoints track the variables they use, and tracking the model too
        # stores every weight twice (its Keras variable and the tf.Variable inside), doubling what is
        # written, loaded and restored
        # The network is one graph function that every endpoint calls (once, also with the flip test): traced once,
        # stored once in the SavedModel, and instantiated once when a server loads it.
        self._network = tf.function(self._last_heatmaps, input_signature=[crops], autograph=False)
        self._network_reading_the_model = tf.function(self._last_heatmaps_reading_the_model,
                                                      input_signature=[crops], autograph=False)
        self.converter_crops = tf.function(self._crops_reading_the_model, input_signature=[crops], autograph=False)
        endpoints = {
            "serving_default": (self._whole_images, [images]),
            "boxes": (self._boxes, [images, tf.TensorSpec([None, 4], tf.float32, name="boxes")]),
            "center_scale": (self._center_scale, [images, tf.TensorSpec([None, 2], tf.float32, name="center"),
                                                  tf.TensorSpec([None], tf.float32, name="scale")]),
            "crops": (self._crops, [crops]),
            "heatmaps": (self._heatmaps, [crops]),
        }
        for name, (function, signature) in endpoints.items():
            setattr(self, name, self.archive.add_endpoint(name, function, input_signature=signature))

    def _last_heatmaps(self, images):
        with self.weights.scope():
            return tf.cast(stack_outputs(self.model(images, training=False))[-1], tf.float32)

    def _heatmaps(self, images, network=None):
        network = network or self._network
        if self.flip_test:
            return self.codec.flip_test(network, images)
        return network(images)

    def _crops(self, images, network=None):
        heatmaps = self._heatmaps(images, network)
        keypoints, scores = self.codec.decode(heatmaps)
        return {"keypoints": keypoints, "scores": scores, "heatmaps": heatmaps}

    def _crops_reading_the_model(self, images):
        """`crops` as the converters take it (`LayerWeights.plain`)."""
        return self._crops(images, self._network_reading_the_model)

    def _last_heatmaps_reading_the_model(self, images):
        with self.weights.plain():
            return self._last_heatmaps(images)

    def _center_scale(self, images, center, scale):
        images = _checked_images(images, "uint8")
        center = _checked_rows(center, "center", 2, images)
        scale = _checked_rows(scale, "scale", None, images)
        tf.debugging.assert_positive(scale, message="scale must be positive")
        matrix = crop_matrix(center, scale, self.codec.image_size)
        crops = warp_image(images, matrix, self.codec.image_size) / 255.0
        outputs = self._crops(crops)
        outputs["keypoints"] = apply_affine(invert_affine(matrix), outputs["keypoints"])
        return outputs

    def _boxes(self, images, boxes):
        images = _checked_images(images, "uint8")
        boxes = _checked_rows(boxes, "boxes", 4, images)
        tf.debugging.assert_positive(tf.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]),
                                     message="boxes must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1")
        return self._center_scale(images, *box_to_center_scale(boxes[:, :2], boxes[:, 2:]))

    def _whole_images(self, images):
        images = _checked_images(images, "uint8")
        shape = tf.cast(tf.shape(images), tf.float32)
        count, height, width = tf.shape(images)[0], shape[1], shape[2]
        center = tf.tile([[(width - 1.0) / 2.0, (height - 1.0) / 2.0]], [count, 1])
        scale = tf.fill([count], tf.maximum(height, width) / SCALE_UNIT)
        return self._center_scale(images, center, scale)

    def metadata(self) -> dict:
        return {
            "format": "keras_hourglass.pose_estimator/1",
            "keypoint_names": self.keypoint_names,
            "limbs": self.limbs,
            "codec": self.codec.get_config(),
            "input_size": list(self.codec.image_size),
            "normalization": NORMALIZATION,
            "flip_test": self.flip_test,
            "scale_unit": SCALE_UNIT,
            "scale_margin": SCALE_MARGIN,
            "signatures": ["serving_default", "boxes", "center_scale", "crops", "heatmaps"],
        }


def export_saved_model(model: keras.Model, path: str, codec: HeatmapCodec, keypoint_names: Sequence[str],
                       flip_test: bool = False, limbs: Sequence[tuple[str, str]] = ()) -> str:
    """Writes `model` as a servable SavedModel at `path` (replacing one there); returns `path`."""
    return save_estimator(PoseEstimator(model, codec, keypoint_names, flip_test, limbs), path)


def save_estimator(estimator: PoseEstimator, path: str, extra_files: dict | None = None) -> str:
    """Saves a `PoseEstimator` (reuse one across saves: its traced functions are kept), or anything with its
    `archive`, `weights` (`LayerWeights`) and `metadata()` (`keras_hourglass.multiperson.MultiPersonEstimator`),
    with the model's weights as they are now; returns `path`.

    `extra_files` (`{name: JSON-able}`) go to `assets.extra/` beside the metadata.
    """
    path = os.path.abspath(path)
    estimator.weights.update()
    temporary = partial_directory(path)
    estimator.archive.write_out(temporary, verbose=False)
    extra = {os.path.basename(METADATA_FILE): estimator.metadata(), **(extra_files or {})}
    os.makedirs(os.path.join(temporary, os.path.dirname(METADATA_FILE)), exist_ok=True)
    for name, content in extra.items():
        with open(os.path.join(temporary, os.path.dirname(METADATA_FILE), name), "w") as f:
            json.dump(content, f, indent=2)
    replace_directory(temporary, path)
    return path


def check_single_person(metadata: dict, source: str) -> dict:
    """`metadata` of a single-person model; one clear error for a multi-person one (`keras_hourglass.multiperson`)."""
    if metadata.get("format") == MULTI_PERSON_FORMAT:
        raise ValueError(f"{source}: a multi-person model (Associative Embedding), which this command does not take "
                         "yet; its heatmaps and tags become people with keras_hourglass.codec."
                         "AssociativeEmbeddingCodec.")
    return metadata


def crops_signature(saved_model) -> tuple:
    """`(the crops signature's concrete function, the export metadata, the object that owns its variables)`.

    `saved_model` is a SavedModel folder written by `export_saved_model`, or
    the `PoseEstimator` (or `MultiPersonEstimator`) in memory that wrote (or
    would write) it: its `converter_crops`, the same computation reading the
    model's own variables, is used without reading a file. What the
    converters (TFLite, ONNX, OpenVINO) start from.
    """
    if isinstance(saved_model, (str, os.PathLike)):
        if not os.path.isfile(os.path.join(saved_model, "saved_model.pb")):
            raise ValueError(f"{saved_model}: not a SavedModel directory (no saved_model.pb).")
        info = read_saved_model_metadata(str(saved_model))
        owner = tf.saved_model.load(str(saved_model))
        return owner.signatures["crops"], info, owner
    return saved_model.converter_crops.get_concrete_function(), saved_model.metadata(), saved_model.model


def read_saved_model_metadata(directory: str, source: str | None = None) -> dict:
    """The `assets.extra/keras_hourglass.json` of an exported SavedModel; errors name `source` (default `directory`)."""
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{source or directory}: no {METADATA_FILE}; was it written by "
                         "keras_hourglass.export_saved_model?")
    try:
        with open(path, "rb") as f:
            metadata = json.loads(f.read(MAX_METADATA_BYTES + 1))
    except (OSError, ValueError, RecursionError) as error:  # unreadable, not JSON, not UTF-8, nested too deep
        raise ValueError(f"{source or directory}: cannot read {METADATA_FILE} "
                         f"({type(error).__name__}: {str(error)[:200]}).") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{source or directory}: {METADATA_FILE} must hold a JSON object, got a "
                         f"{type(metadata).__name__}.")
    return metadata
