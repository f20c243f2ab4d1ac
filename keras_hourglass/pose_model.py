"""One loader for every saved model format, and the one interface inference runs on.

`load_pose_model` takes a SavedModel folder written by
`keras_hourglass.export`, a `.keras` file, or a `.tflite`, `.onnx` or
OpenVINO `.xml` file converted from one (`keras_hourglass.tflite`,
`keras_hourglass.interchange`), and returns a `PoseModel`: a function from crops to
the last stack's heatmaps, with the codec that decodes them and the keypoint
names. The evaluation chain (`keras_hourglass.evaluation`), prediction and
the PCK callback run every format through it.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Callable, Sequence

import keras
import tensorflow as tf

from keras_hourglass.codec import HeatmapCodec
from keras_hourglass.export import check_single_person, last_output_shape, read_saved_model_metadata
from keras_hourglass.fileio import complete_directory
from keras_hourglass.joints import COCO_PERSON
from keras_hourglass.model import stack_outputs
from keras_hourglass.tflite import TFLitePoseModel


@dataclasses.dataclass
class PoseModel:
    """What inference needs from a trained model, however it was stored.

    Attributes:
        heatmaps: maps float32 crops `[N, height, width, 3]` in `[0, 1]` to
            the last stack's heatmaps `[N, h, w, K]`.
        codec: decodes those heatmaps (its `flip_index` enables the flip test).
        keypoint_names: one per channel.
        source: the file or directory it came from.
        flip_tested: `heatmaps` already averages with the mirror image (a
            SavedModel exported with the flip test); a flip test on top
            would give the same heatmaps at twice the cost.
        limbs: the skeleton, pairs of keypoint names, where the file keeps one.
    """

    heatmaps: Callable
    codec: HeatmapCodec
    keypoint_names: list
    source: str
    flip_tested: bool = False
    owner: object = None  # keeps a loaded SavedModel (and so its variables) alive
    limbs: tuple = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)


def pose_model_from_keras(model: keras.Model, keypoint_names: Sequence[str], flip_index=None,
                          codec: HeatmapCodec | None = None, source: str = "<keras model>") -> PoseModel:
    """A `PoseModel` around an in-memory Keras model; `codec` defaults to the model's sizes."""
    image_size = tuple(model.input_shape[1:3])
    heatmap_shape = last_output_shape(model)
    if codec is None:
        codec = HeatmapCodec(image_size, heatmap_shape[1:3], flip_index=flip_index)
    elif tuple(codec.image_size) != image_size or tuple(codec.heatmap_size) != tuple(heatmap_shape[1:3]):
        raise ValueError(f"{source}: codec sizes {codec.image_size}/{codec.heatmap_size} differ from the model's "
                         f"{image_size}/{tuple(heatmap_shape[1:3])}.")
    if len(keypoint_names) != heatmap_shape[-1]:
        hint = ""
        if heatmap_shape[-1] == 4 * COCO_PERSON.num_keypoints:  # pose-ae-train: 17 heatmaps, 17 tags and 34 more
            hint = (" With 68 channels it may be a multi-person (pose-ae-train) network: give its import's "
                    "saved_model/ folder instead.")
        raise ValueError(f"{source}: the model predicts {heatmap_shape[-1]} keypoints but "
                         f"{len(keypoint_names)} keypoint names were given.{hint}")

    @tf.function(input_signature=[tf.TensorSpec([None, *image_size, 3], tf.float32)])
    def heatmaps(images):
        return tf.cast(stack_outputs(model(images, training=False))[-1], tf.float32)

    return PoseModel(heatmaps, codec, list(keypoint_names), source, owner=model)


def load_keras_model(path: str) -> keras.Model:
    """A `.keras` file's model (uncompiled); a missing, damaged or foreign file is a `ValueError` naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such .keras file.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras file (a .keras file is a zip archive).")
    with zipfile.ZipFile(path) as archive:
        missing = sorted({"config.json", "model.weights.h5"} - set(archive.namelist()))
    if missing:
        raise ValueError(f"{path}: not a complete .keras file (no {', '.join(missing)} in the archive).")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: the .keras file cannot be loaded ({reason}).") from None


def load_pose_model(path: str, keypoint_names: Sequence[str] | None = None, flip_index=None) -> PoseModel:
    """Loads a SavedModel written by `export_saved_model`, a `.tflite`, `.onnx` or OpenVINO `.xml` file converted
    from one, or a `.keras` file.

    A `.keras` file carries no joint metadata: `keypoint_names` (and
    `flip_index` for the flip test) must then be given, e.g. from the data
    set's `JointSpec`. For a SavedModel or a `.tflite` file they come from
    its metadata.
    """
    if not os.path.exists(path) and complete_directory(path) is None:
        raise ValueError(f"{path}: no such model file or folder.")
    if str(path).endswith(".tflite"):
        return load_tflite_pose_model(path)
    if str(path).lower().endswith((".onnx", ".xml")):
        return load_runtime_pose_model(path)
    if str(path).endswith(".keras"):
        model = load_keras_model(path)
        if keypoint_names is None:
            raise ValueError(f"{path}: a .keras file has no keypoint names; pass keypoint_names.")
        return pose_model_from_keras(model, keypoint_names, flip_index, source=path)
    directory = complete_directory(path)
    if directory is None or not os.path.isfile(os.path.join(directory, "saved_model.pb")):
        raise ValueError(f"{path}: not a SavedModel directory (no saved_model.pb) or a .keras file.")
    metadata = check_single_person(read_saved_model_metadata(directory, path), path)
    loaded = tf.saved_model.load(directory)
    return PoseModel(loaded.heatmaps, HeatmapCodec.from_config(metadata["codec"]),
                     list(metadata["keypoint_names"]), path, flip_tested=bool(metadata["flip_test"]), owner=loaded,
                     limbs=tuple(map(tuple, metadata.get("limbs", ()))))


def load_tflite_pose_model(model_path: str, num_threads: int = 2) -> PoseModel:
    """A `PoseModel` whose `heatmaps` runs the `.tflite` file; codec and names from its metadata.

    Keypoints are then decoded by the codec in TensorFlow, from the TFLite
    heatmaps; the converted graph's own `keypoints` output is the same
    decoding (tested per quantization), so scores measured this way are what
    an app gets.
    """
    return _file_pose_model(TFLitePoseModel(model_path, num_threads), model_path)


def load_runtime_pose_model(model_path: str, num_threads: int = 2) -> PoseModel:
    """A `PoseModel` whose `heatmaps` runs an ONNX file in ONNX Runtime or an OpenVINO `.xml` in OpenVINO
    (`keras_hourglass.interchange.RuntimePoseModel`), as `load_tflite_pose_model` runs a `.tflite` file."""
    from keras_hourglass.interchange import RuntimePoseModel

    return _file_pose_model(RuntimePoseModel(model_path, num_threads), model_path)


MAX_KEYPOINTS = 1000


def check_file_metadata(metadata, path: str) -> HeatmapCodec:
    """The codec of a converted file's embedded metadata, checked field by field: one error naming the file and
    the field for a file that was not written by the converters (or was altered)."""
    def fail(field, expected):
        raise ValueError(f"{path}: its keras_hourglass metadata has a bad {field}: expected {expected}.")

    if not isinstance(metadata, dict):
        fail("top level", "a JSON object")
    check_single_person(metadata, path)
    from keras_hourglass.interchange import is_input_size

    size = metadata.get("input_size")
    if not is_input_size(size):
        fail("input_size", "[height, width], integers from 1 to 4096")
    names = metadata.get("keypoint_names")
    if not (isinstance(names, list) and 0 < len(names) <= MAX_KEYPOINTS
            and all(isinstance(n, str) and 0 < len(n) <= 100 for n in names)):
        fail("keypoint_names", f"a list of 1 to {MAX_KEYPOINTS} names")
    if not isinstance(metadata.get("flip_test"), bool):
        fail("flip_test", "true or false")
    limbs = metadata.get("limbs", [])
    if not (isinstance(limbs, list) and all(isinstance(limb, list) and len(limb) == 2 and set(limb) <= set(names)
                                            for limb in limbs)):
        fail("limbs", "pairs of its keypoint names")
    try:
        codec = HeatmapCodec.from_config(metadata.get("codec"))
    except (TypeError, ValueError, KeyError, AttributeError):
        fail("codec", "the codec settings the converter writes (image_size, heatmap_size, ...)")
    if list(codec.image_size) != size:
        fail("codec", f"an image_size equal to input_size {size}")
    return codec


def _file_pose_model(runner, model_path: str) -> PoseModel:
    """A converted file's `PoseModel`: `runner.predict(crops)["heatmaps"]` in the graph, its metadata's codec."""
    codec = check_file_metadata(runner.metadata, model_path)
    names = list(runner.metadata["keypoint_names"])
    heatmap_shape = [None, *codec.heatmap_size, len(names)]

    def heatmaps(images):
        outputs = tf.numpy_function(lambda crops: runner.predict(crops)["heatmaps"], [images], tf.float32,
                                    stateful=True)
        return tf.ensure_shape(outputs, heatmap_shape)

    return PoseModel(heatmaps, codec, names, model_path, flip_tested=bool(runner.metadata["flip_test"]), owner=runner,
                     limbs=tuple(map(tuple, runner.metadata.get("limbs", ()))))
