"""TFLite / LiteRT: convert an exported SavedModel and run the result.

The conversion takes the `crops` signature of the SavedModel written by
`keras_hourglass.export.export_saved_model` (or of the `PoseEstimator` in
memory that writes it), frozen and converted as one concrete function: float32 crops `[1, height, width, 3]` in `[0, 1]` in, keypoints
(crop pixels), scores and heatmaps out, decoding included. That signature
has no image-warp op, so the model needs only TFLite's built-in ops; the app
crops the person (centre and scale, see `keras_hourglass.transforms`) and
maps keypoints back.

Quantization: `float32`, `float16` (weights), `dynamic` (int8 weights,
float activations) and `int8` (int8 weights and activations, calibrated on
`representative_images`; the decoding after the heatmaps is kept in float on
purpose, and optionally the ops on the widest activations too, see
`_selectively_quantized`; `int8_mac_share` says how much of the network
runs in int8). Every variant keeps float input and output, so
the app's code is the same for all four.

Every converted file carries its metadata (input size, normalisation,
keypoint names, codec): see `keras_hourglass.tflite_metadata`.
`TFLitePoseModel` runs a file; `keras_hourglass.pose_model.load_pose_model`
wraps it in the same `PoseModel` as the other formats, so evaluation and
prediction run a `.tflite` file through the one inference loop.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

import numpy as np
import tensorflow as tf

from keras_hourglass.export import crops_signature
from keras_hourglass.fileio import stderr_without, write_bytes
from keras_hourglass.tflite_metadata import (
    QUANTIZATIONS,
    RANGES,
    add_signature,
    as_text,
    embed_metadata,
    flatbuffer_utils_module,
    read_metadata,
    signature_subgraph,
)

SIGNATURE = "crops"


# What the converter prints on every conversion of these models, to no purpose for a user: an attribute of the
# Cast op that its op registry does not know (ignored), and the quantizer's settings line.
HARMLESS_CONVERTER_LINES = ("NodeDef mentions attribute Truncate", "fully_quantize: ")


def convert_saved_model(saved_model, output_path: str, quantization: str = "float32",
                        representative_images: Iterable | None = None, keep_float_above: float | None = None,
                        ranges: str = "percentile") -> str:
    """Converts the `crops` signature of an exported SavedModel; writes `output_path` atomically.

    The signature's graph is frozen (variables become constants) and
    converted as one concrete function, with the signature written into the
    file afterwards (`add_signature`). TensorFlow's SavedModel route
    (`TFLiteConverter.from_saved_model`) reads the whole SavedModel into
    Python twice and once more into MLIR: for a full-size 8-stack model that
    was 22 s of the 47 s conversion on 2 cores of an AVX-512 Xeon.

    Args:
        saved_model: a SavedModel directory written by
            `keras_hourglass.export.export_saved_model`, or the
            `keras_hourglass.export.PoseEstimator` in memory that wrote (or
            would write) it: its graph is converted without reading a file.
        output_path: the `.tflite` file.
        quantization: one of `QUANTIZATIONS`.
        representative_images: int8 only: float32 crops `[height, width, 3]`
            in `[0, 1]` from the training data, to calibrate activation ranges.
        keep_float_above: int8 only: keep in float the ops that produce or
            consume an activation whose calibrated range (max - min) exceeds
            this; `None` quantizes every op that has an int8 kernel. See
            `_selectively_quantized`.
        ranges: int8 only: how each activation's range comes from the
            calibration crops, one of `RANGES` (see `refined_ranges`).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}.")
    if ranges not in RANGES:
        raise ValueError(f"ranges must be one of {', '.join(RANGES)}, got {ranges!r}.")
    function, info, owner = crops_signature(saved_model)
    with stderr_without(*HARMLESS_CONVERTER_LINES):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], owner)
    converter.experimental_lower_to_saved_model = False  # that route writes and reads a SavedModel again
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_images is None:
            raise ValueError("int8 quantization needs representative_images (crops drawn from the training data).")
        images = [np.asarray(image, np.float32) for image in representative_images]
        images = [image[None] if image.ndim == 3 else image for image in images]
        if not images:
            raise ValueError("representative_images is empty.")
        height, width = info["input_size"]
        for index, image in enumerate(images):
            if image.shape != (1, height, width, 3):
                raise ValueError(f"representative_images[{index}] has shape {image.shape[1:]}; expected crops "
                                 f"({height}, {width}, 3) in [0, 1], the model's input.")
        converter.representative_dataset = lambda: ([image] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        with stderr_without(*HARMLESS_CONVERTER_LINES):
            converted = _selectively_quantized(converter, function, images, keep_float_above, ranges)
    else:
        with stderr_without(*HARMLESS_CONVERTER_LINES):
            converted = converter.convert()
    info = {**info, "quantization": quantization}
    if quantization == "int8" and keep_float_above is not None:
        info["int8_keep_float_above"] = float(keep_float_above)
    if quantization == "int8":
        info["int8_ranges"] = ranges
    flatbuffer = embed_metadata(converted, info, SIGNATURE, function)
    return write_bytes(output_path, flatbuffer)


def _graph(flatbuffer: bytes, signature: str):
    """`(subgraph, tensor names, operators as (inputs, outputs) index lists, output index by name)` of a signature."""
    model = flatbuffer_utils_module().convert_bytearray_to_object(bytearray(flatbuffer))
    signature_def, subgraph = signature_subgraph(model, signature)
    names = [as_text(t.name) for t in subgraph.tensors]
    operators = [(list(op.inputs), list(op.outputs)) for op in subgraph.operators]
    outputs = {as_text(t.name): t.tensorIndex for t in signature_def.outputs}
    return subgraph, names, operators, outputs


def _selectively_quantized(converter, function, images, keep_float_above: float | None, ranges: str) -> bytes:
    """Full-integer quantization that keeps the codec, and optionally the widest activations, in float.

    The decoding after the heatmaps (argmax, Taylor step, logs and
    divisions) must stay float: quantized, it moves keypoints by pixels.
    Every op downstream of the `heatmaps` output is therefore denylisted.

    A trained hourglass's residual streams span wide ranges (the small
    synthetic model's last stack reaches +-460 with a median magnitude of 5),
    so one int8 scale per tensor loses the small values. `keep_float_above`
    keeps in float every op that produces or consumes a tensor whose
    calibrated range is wider; the ops left in float are what
    `tf.lite.experimental.QuantizationDebugger`'s selective quantization is
    for. Calibration runs once; the ranges are read from the calibrated model
    (and refined there, `refined_ranges`, unless `ranges` is `minmax`).
    """
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: iter([images[:1]]))
    debugger.calibrated_model = add_signature(debugger.calibrated_model, SIGNATURE, function)
    if ranges != "minmax":
        debugger.calibrated_model = refined_ranges(debugger.calibrated_model, images, ranges)
    subgraph, names, operators, outputs = _graph(debugger.calibrated_model, SIGNATURE)
    consumers: dict[int, list] = {}
    for inputs, results in operators:
        for index in inputs:
            consumers.setdefault(index, []).append(results)
    float_tensors, frontier = set(), [outputs["heatmaps"]]
    while frontier:  # everything computed from the heatmaps
        for results in consumers.get(frontier.pop(), []):
            for index in results:
                if index not in float_tensors:
                    float_tensors.add(index)
                    frontier.append(index)
    if keep_float_above is not None:
        for index, tensor in enumerate(subgraph.tensors):
            quantization = tensor.quantization
            if quantization is None or quantization.min is None or quantization.max is None:
                continue
            if float(np.max(quantization.max) - np.min(quantization.min)) > keep_float_above:
                float_tensors.add(index)
                for results in consumers.get(index, []):
                    float_tensors.update(results)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=sorted(names[index] for index in float_tensors))
    return debugger.get_nondebug_quantized_model()


PERCENTILE = 99.99  # `percentile` ranges: from the 0.01th to the 99.99th percentile of each tensor's values
HISTOGRAM_BINS = 2048
HISTOGRAM_SAMPLES = 65536  # values per tensor and crop, about: all of the demo model's, 1 in 17 of a 256x256 model's widest


def refined_ranges(calibrated: bytes, images, method: str) -> bytes:
    """A calibrated model whose activation ranges are narrowed from each tensor's distribution on `images`.

    The converter calibrates every tensor to its minimum and maximum over
    the calibration crops (`minmax`). One rare extreme value then sets the
    int8 step of the whole tensor. Here each tensor's values over the same
    crops (an evenly strided sample of about `HISTOGRAM_SAMPLES` per crop,
    so that a 256x256 model's wide tensors cost no more than a small one's)
    go into a histogram of `HISTOGRAM_BINS` bins over that range, and the
    range becomes:

    * `percentile`: the `100 - PERCENTILE` to `PERCENTILE` percentiles;
    * `mse`: the range, shrunk towards 0 by a factor in `[0.2, 1]`, that
      minimises the expected squared error of rounding (`step^2 / 12`
      inside) plus clipping (outside), as TensorRT's and OpenVINO's
      calibrators do.

    Both always include 0. The quantizer then takes the new ranges as the
    converter's own (`QuantizationDebugger.calibrated_model`).
    """
    module = flatbuffer_utils_module()
    model = module.convert_bytearray_to_object(bytearray(calibrated))
    _, subgraph = signature_subgraph(model, SIGNATURE)
    interpreter = tf.lite.Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner(SIGNATURE)
    live = {detail["index"] for detail in interpreter.get_tensor_details()}
    bounds = {}
    for index, tensor in enumerate(subgraph.tensors):
        q = tensor.quantization
        if index in live and q is not None and q.min is not None and q.max is not None and len(q.min) == 1:
            if float(q.max[0]) > float(q.min[0]):
                bounds[index] = (float(q.min[0]), float(q.max[0]))
    counts = {index: np.zeros(HISTOGRAM_BINS) for index in bounds}
    for image in images:
        runner(images=np.asarray(image, np.float32).reshape(1, *np.shape(image)[-3:]))
        for index, (low, high) in bounds.items():
            values = interpreter.get_tensor(index).ravel()
            # An odd stride: channels come in powers of two, so every channel is sampled.
            values = values[::max(1, values.size // HISTOGRAM_SAMPLES) | 1]
            counts[index] += np.histogram(values, HISTOGRAM_BINS, (low, high))[0]
    for index, (low, high) in bounds.items():
        centres = low + (np.arange(HISTOGRAM_BINS) + 0.5) * (high - low) / HISTOGRAM_BINS
        if method == "percentile":
            cumulative = np.cumsum(counts[index]) / counts[index].sum()
            new_low = centres[np.searchsorted(cumulative, 1 - PERCENTILE / 100)]
            new_high = centres[min(np.searchsorted(cumulative, PERCENTILE / 100), HISTOGRAM_BINS - 1)]
        else:
            best = None
            for factor in np.linspace(0.2, 1.0, 81):
                a, b = min(low * factor, 0.0), max(high * factor, 0.0)
                clipped = np.clip(centres, a, b)
                error = np.sum(counts[index] * ((centres - clipped) ** 2 + ((b - a) / 255) ** 2 / 12))
                if best is None or error < best[0]:
                    best = (error, a, b)
            new_low, new_high = best[1:]
        quantization = subgraph.tensors[index].quantization
        quantization.min, quantization.max = (np.array([min(new_low, 0.0)], np.float32),
                                              np.array([max(new_high, 0.0)], np.float32))
    return bytes(module.convert_object_to_bytearray(model))


def int8_mac_share(model_path: str) -> float:
    """Share of the network's multiply-adds that a converted file computes in int8, e.g. 0.0 for a float model.

    The network is every op that the `heatmaps` output depends on (the
    decoding after it is not counted). A convolution counts its kernel's
    multiply-adds per output value, `height * width * in_channels` (depthwise:
    `height * width`); a fully connected layer, its input width; an
    element-wise `MUL`, `ADD` or `SUB`, one per output value. An op counts as
    int8 when its output is int8. Shape arithmetic, pooling and copies have
    no multiply-adds.
    """
    with open(model_path, "rb") as f:
        flatbuffer = f.read()
    module = flatbuffer_utils_module()
    model = module.convert_bytearray_to_object(bytearray(flatbuffer))
    subgraph, _, operators, outputs = _graph(flatbuffer, SIGNATURE)
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    kinds = module.schema_fb.BuiltinOperator
    producer = {index: op for op, (_, results) in zip(subgraph.operators, operators) for index in results}
    network, frontier = set(), [outputs["heatmaps"]]
    while frontier:  # the ops the heatmaps depend on
        op = producer.get(frontier.pop())
        if op is not None and id(op) not in network:
            network.add(id(op))
            frontier.extend(index for index in op.inputs if index >= 0)
    total = int8 = 0.0
    for op in subgraph.operators:
        if id(op) not in network or not len(op.outputs):
            continue
        output = subgraph.tensors[op.outputs[0]]
        code, values = codes[op.opcodeIndex], float(np.prod(output.shape))
        if code == kinds.CONV_2D:
            macs = values * float(np.prod(subgraph.tensors[op.inputs[1]].shape[1:]))
        elif code == kinds.DEPTHWISE_CONV_2D:
            macs = values * float(np.prod(subgraph.tensors[op.inputs[1]].shape[1:3]))
        elif code == kinds.FULLY_CONNECTED:
            macs = values * float(subgraph.tensors[op.inputs[1]].shape[-1])
        elif code in (kinds.MUL, kinds.ADD, kinds.SUB):
            macs = values
        else:
            continue
        total += macs
        int8 += macs if output.type == module.schema_fb.TensorType.INT8 else 0.0
    return int8 / total if total else 0.0


def make_interpreter(model_path: str, num_threads: int = 2):
    """A LiteRT interpreter (`ai_edge_litert`), or `tf.lite.Interpreter` where LiteRT is not installed.

    The interpreter uses XNNPACK, as on a phone. XNNPACK refuses some int8
    files whose scales lie outside what its kernels take (seen with an
    barely trained model whose ranges collapse); such a file runs with
    TFLite's built-in kernels instead, with a warning on stderr that says
    so (it is slower, and the speed measured is not XNNPACK's).
    """
    if not os.path.isfile(model_path):
        raise ValueError(f"{model_path}: no such .tflite file.")
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    try:
        interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    except ValueError as error:
        raise ValueError(f"{model_path}: not a TFLite model ({str(error).splitlines()[0]}).") from None
    try:
        interpreter.allocate_tensors()  # where XNNPACK takes the graph
    except RuntimeError as error:
        if "XNNPACK" not in str(error):
            raise
        print(f"warning: {model_path}: XNNPACK cannot run this file ({str(error).splitlines()[0]}); using "
              "TFLite's built-in kernels, which are slower.", file=sys.stderr, flush=True)
        interpreter = Interpreter(model_path=model_path, num_threads=num_threads,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return interpreter


class TFLitePoseModel:
    """Runs a converted model: `predict(crops)` returns `{"keypoints", "scores", "heatmaps"}` as arrays.

    `metadata` is the export metadata embedded at conversion.
    """

    def __init__(self, model_path: str, num_threads: int = 2):
        self.path = model_path
        self.interpreter = make_interpreter(model_path, num_threads)
        self.metadata = read_metadata(model_path)
        try:
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except ValueError:
            raise ValueError(f"{model_path}: no {SIGNATURE!r} signature; convert the model with "
                             "keras_hourglass.tflite.convert_saved_model.") from None

    def predict(self, crops) -> dict:
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be [N, height, width, 3] float32 in [0, 1], got shape {crops.shape}.")
        outputs = [self.runner(images=crop[None]) for crop in crops]  # the converted graph has batch 1
        return {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}

    def milliseconds_per_image(self, steps: int = 20) -> float:
        """Median time of one crop through the file on this machine (after 2 unmeasured calls)."""
        from keras_hourglass.interchange import median_milliseconds

        return median_milliseconds(lambda crop: self.runner(images=crop), self.metadata["input_size"], steps)
