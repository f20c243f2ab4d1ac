"""Metadata inside a `.tflite` file, so an app needs nothing else to run the model.

A converted model carries three things:

* `TFLITE_METADATA`: the standard TFLite metadata flatbuffer (schema
  `metadata_schema.fbs`, file identifier `M001`), which the TFLite Support
  `MetadataExtractor` on Android and MediaPipe's metadata tools read. It
  describes the input image (RGB, the model's size, normalisation
  `(pixel - 0) / 255`, range `[0, 1]`) and the outputs `keypoints`, `scores`
  and `heatmaps`, each with the keypoint-name file as its axis labels.
* `keras_hourglass`: the export metadata as JSON (keypoint names, flip
  partners, input size, normalisation, codec settings, flip test, crop
  convention), also a model metadata entry.
* the associated files `keypoint_names.txt` (one name per line, in channel
  order) and `keras_hourglass.json`, in a zip archive appended to the
  flatbuffer, where the TFLite Support convention puts them; the
  interpreter ignores the trailing bytes.

`read_metadata` returns the JSON. No package that writes TFLite metadata
installs beside TensorFlow 2.21 (`tflite-support` needs protobuf < 4;
MediaPipe's writer pulls a second, GUI OpenCV), so the flatbuffer is built
here with the `flatbuffers` builder TensorFlow already depends on. Field
slots follow the schema's declaration order; a union takes two slots (its
type, then its value).
"""

from __future__ import annotations

import io
import json
import zipfile

import flatbuffers
import numpy as np

# The variants `keras_hourglass.tflite.convert_saved_model` writes; the metadata records which.
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
RANGES = ("minmax", "percentile", "mse")  # how int8 activation ranges come from calibration (tflite.refined_ranges)

STANDARD_NAME = "TFLITE_METADATA"
JSON_NAME = "keras_hourglass"
LABELS_FILE = "keypoint_names.txt"
JSON_FILE = "keras_hourglass.json"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # only fields of the first schema version are written

# Enum values of metadata_schema.fbs.
_DESCRIPTIONS, _TENSOR_AXIS_LABELS = 1, 2  # AssociatedFileType
_RGB = 1  # ColorSpaceType
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union

OUTPUT_DESCRIPTIONS = {
    "keypoints": "Keypoints [1, K, 2] as (x, y) in input-crop pixels, pixel centres at integer coordinates; "
                 "map them back to the image with the inverse of the crop transform.",
    "scores": "Heatmap peak per keypoint [1, K]; low values mean the joint is not visible.",
    "heatmaps": "Last stack's heatmaps [1, h, w, K], one channel per keypoint.",
}


class _Writer:
    """Builds metadata tables bottom-up: every child exists before its parent starts."""

    def __init__(self):
        self.builder = flatbuffers.Builder(1024)

    def string(self, text: str | None):
        return None if text is None else self.builder.CreateString(text)

    def floats(self, values):
        return self.builder.CreateNumpyVector(np.asarray(values, np.float32))

    def tables(self, offsets):
        builder = self.builder
        builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        return builder.EndVector()

    def table(self, num_slots: int, offsets: dict, bytes_: dict | None = None, uints: dict | None = None):
        """A table with `{slot: offset}` children, `{slot: value}` byte fields and uint32 fields."""
        builder = self.builder
        builder.StartObject(num_slots)
        for slot, offset in offsets.items():
            if offset is not None:
                builder.PrependUOffsetTRelativeSlot(slot, offset, 0)
        for slot, value in (uints or {}).items():
            builder.PrependUint32Slot(slot, value, 0)
        for slot, value in (bytes_ or {}).items():
            builder.PrependUint8Slot(slot, value, 0)
        return builder.EndObject()

    def associated_file(self, name: str, description: str, file_type: int):
        # AssociatedFile: name, description, type, locale, version
        return self.table(5, {0: self.string(name), 1: self.string(description)}, bytes_={2: file_type})

    def content(self, kind: int, properties):
        # Content: content_properties_type, content_properties, range
        return self.table(3, {1: properties}, bytes_={0: kind})

    def tensor(self, name: str, description: str, content, process_units=None, stats=None, files=None):
        # TensorMetadata: name, description, dimension_names, content, process_units, stats, associated_files
        return self.table(7, {0: self.string(name), 1: self.string(description), 3: content,
                              4: process_units, 5: stats, 6: files})


def build_standard_metadata(info: dict, output_names: list[str], description: str) -> bytes:
    """The `TFLITE_METADATA` flatbuffer for a converted `crops` signature.

    `info` is the export metadata (`input_size`, `keypoint_names`, ...);
    `output_names` the subgraph's outputs in tensor order.
    """
    w = _Writer()
    height, width = info["input_size"]
    labels = [w.associated_file(LABELS_FILE, "Keypoint names, one per line, in channel order.", _TENSOR_AXIS_LABELS)
              for _ in output_names]
    outputs = []
    for name, label in zip(output_names, labels):
        feature = w.table(0, {})  # FeatureProperties has no fields
        outputs.append(w.tensor(name, OUTPUT_DESCRIPTIONS.get(name, name), w.content(_FEATURE_PROPERTIES, feature),
                                files=w.tables([label])))
    size = w.table(2, {}, uints={0: width, 1: height})  # ImageSize: width, height
    image = w.table(2, {1: size}, bytes_={0: _RGB})  # ImageProperties: color_space, default_size
    normalization = w.table(2, {0: w.floats([0.0]), 1: w.floats([255.0])})  # NormalizationOptions: mean, std
    unit = w.table(2, {1: normalization}, bytes_={0: _NORMALIZATION_OPTIONS})  # ProcessUnit: options_type, options
    stats = w.table(2, {0: w.floats([1.0]), 1: w.floats([0.0])})  # Stats: max, min
    image_tensor = w.tensor("images", f"Person crop, RGB, {width}x{height}, float32 = pixel / 255 in [0, 1].",
                            w.content(_IMAGE_PROPERTIES, image), w.tables([unit]), stats)
    # SubGraphMetadata: name, description, input_tensor_metadata, output_tensor_metadata, ...
    subgraph = w.table(10, {0: w.string("crops"), 2: w.tables([image_tensor]), 3: w.tables(outputs)})
    model_files = w.tables([
        w.associated_file(LABELS_FILE, "Keypoint names, one per line, in channel order.", _TENSOR_AXIS_LABELS),
        w.associated_file(JSON_FILE, "keras-hourglass export metadata: keypoint names, flip partners, input size, "
                                     "normalisation, codec settings, crop convention.", _DESCRIPTIONS),
    ])
    # ModelMetadata: name, description, version, subgraph_metadata, author, license, associated_files,
    # min_parser_version
    root = w.table(8, {0: w.string("keras-hourglass pose estimator"), 1: w.string(description),
                       2: w.string(info.get("format", "")), 3: w.tables([subgraph]),
                       4: w.string("keras-hourglass"), 6: model_files, 7: w.string(MIN_PARSER_VERSION)})
    w.builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(w.builder.Output())


def flatbuffer_utils_module():
    try:
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils


def signature_subgraph(model, signature: str):
    """`(signature def, subgraph)` of `signature` in a model object from `flatbuffer_utils`."""
    signature_defs = [s for s in model.signatureDefs or [] if as_text(s.signatureKey) == signature]
    if len(signature_defs) != 1:
        raise ValueError(f"the converted model has no signature {signature!r}.")
    return signature_defs[0], model.subgraphs[signature_defs[0].subgraphIndex]


def new_signature_def(model, key: str, function):
    """A signature `key` for a model object (`flatbuffer_utils`) converted from the concrete function `function`.

    A converted concrete function has no signature; the file's inputs and
    outputs are the function's flat inputs and outputs in order, which the
    signature names as the function's keyword inputs and output keys do, so
    that a runner is called with the same names as the SavedModel's signature.
    """
    utils = flatbuffer_utils_module()
    subgraph = model.subgraphs[0]
    if not isinstance(function.structured_outputs, dict):
        raise ValueError(f"the function converted for {key!r} must return a dict of named outputs.")
    positional, keywords = function.structured_input_signature  # a loaded SavedModel signature takes keywords
    inputs = [spec.name for spec in positional] + sorted(keywords)
    outputs = sorted(function.structured_outputs)  # tf.nest flattens a dict in the order of its sorted keys
    if len(inputs) != len(subgraph.inputs) or len(outputs) != len(subgraph.outputs):
        raise ValueError(f"the converted {key!r} has {len(subgraph.inputs)} inputs and {len(subgraph.outputs)} "
                         f"outputs; its function has {inputs} and {outputs}.")
    signature = utils.schema_fb.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = key, 0
    signature.inputs, signature.outputs = [], []
    for names, indices, into in ((inputs, subgraph.inputs, signature.inputs),
                                 (outputs, subgraph.outputs, signature.outputs)):
        for name, index in zip(names, indices):
            entry = utils.schema_fb.TensorMapT()
            entry.name, entry.tensorIndex = name, int(index)
            into.append(entry)
    return signature


def add_signature(flatbuffer: bytes, key: str, function) -> bytes:
    """`flatbuffer`, converted from `function`, with its signature `key` written in (see `new_signature_def`)."""
    utils = flatbuffer_utils_module()
    model = utils.convert_bytearray_to_object(bytearray(flatbuffer))
    if model.signatureDefs:
        return flatbuffer
    model.signatureDefs = [new_signature_def(model, key, function)]
    return bytes(utils.convert_object_to_bytearray(model))


def embed_metadata(flatbuffer: bytes, info: dict, signature: str, function=None) -> bytes:
    """Returns `flatbuffer` with the metadata entries and the associated-file archive added.

    Args:
        flatbuffer: a converted model with one signature, `signature`.
        info: the export metadata (`keras_hourglass.export.PoseEstimator.metadata()`).
        signature: the converted signature's key.
        function: the concrete function `flatbuffer` was converted from,
            when it has no signature yet: it is written in as `signature`
            (`new_signature_def`), in the same pass as the metadata.
    """
    utils = flatbuffer_utils_module()
    model = utils.convert_bytearray_to_object(bytearray(flatbuffer))
    if function is not None and not model.signatureDefs:
        model.signatureDefs = [new_signature_def(model, signature, function)]
    signature_def, subgraph = signature_subgraph(model, signature)
    by_tensor = {t.tensorIndex: as_text(t.name) for t in signature_def.outputs}
    output_names = [by_tensor[index] for index in subgraph.outputs]
    height, width = info["input_size"]
    description = info.get("description") or (f"Stacked hourglass pose estimator: {len(info['keypoint_names'])} keypoints from a "
                   f"{width}x{height} RGB person crop (float32 pixel / 255). Crop the person centred, "
                   f"{info.get('scale_unit', 200)} px x scale per side, resize to {width}x{height}; "
                   f"keypoints come back in crop pixels.")
    entries = {STANDARD_NAME: build_standard_metadata(info, output_names, description),
               JSON_NAME: json.dumps(info).encode()}
    model.metadata = [m for m in model.metadata or [] if as_text(m.name) not in entries]
    for name, data in entries.items():
        buffer = utils.schema_fb.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buffer)
        entry = utils.schema_fb.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    stream = io.BytesIO(bytes(utils.convert_object_to_bytearray(model)))
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a") as archive:
        archive.writestr(LABELS_FILE, "\n".join(info["keypoint_names"]) + "\n")
        archive.writestr(JSON_FILE, json.dumps(info, indent=2))
    return stream.getvalue()


def as_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_metadata(path: str) -> dict:
    """The export metadata embedded in a `.tflite` file by `embed_metadata`."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(JSON_FILE))
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path}: no keras_hourglass metadata in this .tflite file (was it converted by "
                         f"keras_hourglass.tflite.convert_saved_model?): {error}") from None
