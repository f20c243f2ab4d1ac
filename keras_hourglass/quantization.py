"""Quantization-aware fine-tuning: a Keras model whose forward pass computes what TFLite's int8 kernels compute.

`quantization_aware_model(model)` wraps a trained float model (the
functional graph of `keras_hourglass.model`) in a model of the same inputs
and outputs that shares its weights and rounds every tensor exactly where
the TFLite converter's full-integer quantization does
(`keras_hourglass.tflite.convert_saved_model(..., "int8")`):

* the input crop, once (`QUANTIZE`);
* every `Conv2D`, with the `BatchNormalization` and `ReLU` that follow it
  folded in as the converter folds them (kernel times `gamma / sqrt(var +
  eps)`, bias `(bias - mean) * gamma / sqrt(var + eps) + beta`): the folded
  kernel per output channel, symmetric in `[-127, 127]`; the output per
  tensor (`CONV_2D` with a fused ReLU);
* every other `BatchNormalization` (the pre-activation one that reads a
  residual stream) is `MUL` by `gamma / sqrt(var + eps)` then `ADD` of
  `beta - mean * that` with the ReLU fused: both constant vectors are one
  per-tensor int8 tensor each, with the range of their values, and both
  results are rounded;
* every `Add` of `k` inputs is `k - 1` two-input `ADD` ops, each result
  rounded;
* zero padding, max pooling and nearest upsampling keep their input's
  scale, so they round nothing.

Activations are asymmetric int8 (`[-128, 127]` with a zero point). Their
ranges are not guessed here: `calibrate(qat_model, model, crops, folder)`
converts the float model exactly as `convert.py` will (the same
calibration crops, the same range method) and copies every tensor's scale
and zero point from that file (`ranges_from_tflite`), including the
converter's own choices (some convolutions that feed an `ADD` get the sum's
scale). Fine-tuning keeps the ranges fixed during an epoch and calibrates
again before training and at the end of every epoch (`RecalibrateRanges`),
so the ranges the network learns to live with are the ones the final
conversion gives, and the validation metric after an epoch estimates the
int8 file its weights convert to. Rounding passes gradients straight
through inside the range and none outside it (the straight-through
estimator).

Batch-norm statistics stay frozen during fine-tuning (the folded kernel
uses the moving mean and variance; gamma and beta still learn), as usual
for a short quantization-aware phase. Because the wrapper shares the float
model's variables, fine-tuning changes the float model in place: save it
and convert it with `convert.py --quantization int8` as any trained model.

`tests/test_quantization.py` checks, op by op, that each wrapper layer
given the int8 file's own input gives its output to within one step (and
exactly for over 99% of values). Whole networks differ by more: one step of
difference in a residual stream is multiplied by the next batch
normalisation, as between any two int8 implementations.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
from keras import ops

INT8_MIN, INT8_MAX = -128, 127
INPUT = "input"  # the point of the model input's QUANTIZE op
WEIGHT_MAX = 127  # TFLite's int8 weights are symmetric: [-127, 127]


def _round_half_away(x):
    """TFLite rounds float to int half away from zero (`std::round`); `ops.round` rounds half to even."""
    return ops.sign(x) * ops.floor(ops.abs(x) + 0.5)


def _straight_through(x, rounded):
    return x + ops.stop_gradient(rounded - x)


def quantize_activation(x, low, high):
    """`x` rounded to the asymmetric int8 grid of the range `[low, high]`, as TFLite computes it.

    The range is widened to include 0; the scale is `(high - low) / 255`
    and the zero point is rounded so that 0 is exact, which moves the range
    by less than one step. Values outside it clip.
    """
    low, high = ops.minimum(low, 0.0), ops.maximum(high, 0.0)
    scale = ops.maximum((high - low) / (INT8_MAX - INT8_MIN), 1e-12)
    zero_point = ops.clip(_round_half_away(INT8_MIN - low / scale), INT8_MIN, INT8_MAX)
    clipped = ops.clip(x, (INT8_MIN - zero_point) * scale, (INT8_MAX - zero_point) * scale)
    return _straight_through(clipped, _round_half_away(clipped / scale) * scale)


def quantize_constant(values):
    """A constant vector as one per-tensor asymmetric int8 tensor over its own range (MUL and ADD operands)."""
    return quantize_activation(values, ops.min(values), ops.max(values))


def quantize_kernel(kernel):
    """A conv kernel `[h, w, in, out]` rounded per output channel to symmetric int8 (`[-127, 127]`)."""
    scale = ops.maximum(ops.max(ops.abs(kernel), axis=(0, 1, 2)) / WEIGHT_MAX, 1e-12)
    return _straight_through(kernel, ops.clip(_round_half_away(kernel / scale), -WEIGHT_MAX, WEIGHT_MAX) * scale)


def _batch_norm_affine(bn):
    """`(multiplier, offset)` of an inference-mode `BatchNormalization`: `y = x * multiplier + offset`."""
    multiplier = ops.rsqrt(bn.moving_variance + bn.epsilon)
    if bn.scale:
        multiplier = multiplier * bn.gamma
    offset = -bn.moving_mean * multiplier
    if bn.center:
        offset = offset + bn.beta
    return multiplier, offset


class _Quantized(keras.layers.Layer):
    """A layer with `points` rounded activations; their ranges are non-trainable `(low, high)` rows.

    `points` names, for each rounded tensor in order, the float layer whose
    TFLite op computes it (see `ranges_from_tflite`).
    """

    def __init__(self, points, **kwargs):
        super().__init__(**kwargs)
        self.points = list(points)
        self.ranges = self.add_weight(shape=(len(self.points), 2), initializer="zeros", trainable=False,
                                      name="ranges")

    def _round(self, x, point: int):
        return quantize_activation(x, self.ranges[point, 0], self.ranges[point, 1])

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape, list) else input_shape


class QuantizedInput(_Quantized):
    """The float crop quantized on entry (TFLite's `QUANTIZE`)."""

    def call(self, x):
        return self._round(x, 0)


class QuantizedConv(_Quantized):
    """`Conv2D` [-> `BatchNormalization`] [-> `ReLU`] as one int8 `CONV_2D`, sharing the float layers' weights."""

    def __init__(self, conv, bn=None, relu=None, **kwargs):
        super().__init__([(relu or bn or conv).name], **kwargs)
        self.conv, self.bn, self.relu = conv, bn, relu

    def call(self, x):
        kernel = self.conv.kernel
        bias = self.conv.bias if self.conv.use_bias else ops.zeros((kernel.shape[-1],))
        if self.bn is not None:
            multiplier, offset = _batch_norm_affine(self.bn)
            kernel, bias = kernel * multiplier, bias * multiplier + offset
        y = ops.conv(x, quantize_kernel(kernel), strides=self.conv.strides, padding=self.conv.padding,
                     dilation_rate=self.conv.dilation_rate) + bias
        if self.relu is not None:
            y = self.relu(y)
        return self._round(y, 0)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


class QuantizedBatchNorm(_Quantized):
    """A `BatchNormalization` that follows no convolution, [-> `ReLU`]: int8 `MUL` then `ADD` (the ReLU fused)."""

    def __init__(self, bn, relu=None, **kwargs):
        super().__init__([bn.name, (relu or bn).name], **kwargs)
        self.bn, self.relu = bn, relu

    def call(self, x):
        multiplier, offset = _batch_norm_affine(self.bn)
        y = self._round(x * quantize_constant(multiplier), 0) + quantize_constant(offset)
        if self.relu is not None:
            y = self.relu(y)
        return self._round(y, 1)


class QuantizedAdd(_Quantized):
    """An `Add` of `count` tensors as `count - 1` int8 `ADD` ops, left to right, each result rounded."""

    def __init__(self, add, count: int, **kwargs):
        super().__init__([add.name] * (count - 1), **kwargs)

    def call(self, inputs):
        total = inputs[0]
        for point, x in enumerate(inputs[1:]):
            total = self._round(total + x, point)
        return total


SAME_SCALE = (keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D, keras.layers.UpSampling2D)


def _wiring(model: keras.Model):
    """`(layer, input tensors, output tensor)` in graph order, and the consumers of each tensor (by id)."""
    from keras_hourglass.equalization import _single_node

    wiring, consumers = [], {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        node = _single_node(layer)
        inputs, outputs = list(node.input_tensors), list(node.output_tensors)
        if len(outputs) != 1:
            raise ValueError(f"layer {layer.name!r} has {len(outputs)} outputs; quantization-aware training "
                             "supports layers with one.")
        wiring.append((layer, inputs, outputs[0]))
        for tensor in inputs:
            consumers.setdefault(id(tensor), []).append(layer)
    return wiring, consumers


def _only_consumer(consumers, tensor, kind, model_outputs):
    """The one layer reading `tensor` if it is a `kind` and `tensor` is not a model output, else None."""
    readers = consumers.get(id(tensor), [])
    if len(readers) == 1 and isinstance(readers[0], kind) and id(tensor) not in model_outputs:
        return readers[0]
    return None


def quantization_aware_model(model: keras.Model) -> keras.Model:
    """A model with `model`'s inputs, outputs and (shared) weights whose forward pass rounds as TFLite int8 does.

    Each of its layers is named after the last float layer it computes, so
    the outputs keep their names (`heatmaps_stack0`, ...).

    Call `calibrate` on it before use: its ranges start at zero.

    Raises:
        ValueError: for a layer kind this module does not know how TFLite
            quantizes (named), a layer called twice, or a `Conv2D` with
            groups, channels-first data or a non-ReLU activation.
    """
    wiring, consumers = _wiring(model)
    model_outputs = {id(t) for t in model.outputs}
    fused, built = set(), {}
    inputs = [keras.Input(shape=t.shape[1:], name=t.name, dtype=t.dtype) for t in model.inputs]
    for source, tensor in zip(model.inputs, inputs):
        built[id(source)] = QuantizedInput([INPUT], name=f"{tensor.name}_quantize")(tensor)
    for layer, sources, output in wiring:
        if layer.name in fused:
            continue
        x = [built[id(t)] for t in sources]
        if isinstance(layer, keras.layers.Conv2D):
            if layer.groups != 1 or layer.data_format != "channels_last" or layer.activation not in (
                    keras.activations.linear, None):
                raise ValueError(f"layer {layer.name!r}: quantization-aware training supports channels-last Conv2D "
                                 "without groups or a built-in activation.")
            bn = _only_consumer(consumers, output, keras.layers.BatchNormalization, model_outputs)
            after = bn.output if bn is not None else output
            relu = _only_consumer(consumers, after, keras.layers.ReLU, model_outputs)
            fused.update(item.name for item in (bn, relu) if item is not None)
            last = relu or bn or layer
            built[id(last.output)] = QuantizedConv(layer, bn, _fresh(relu), name=last.name)(x[0])
        elif isinstance(layer, keras.layers.BatchNormalization):
            relu = _only_consumer(consumers, output, keras.layers.ReLU, model_outputs)
            if relu is not None:
                fused.add(relu.name)
            last = relu or layer
            built[id(last.output)] = QuantizedBatchNorm(layer, _fresh(relu), name=last.name)(x[0])
        elif isinstance(layer, keras.layers.Add):
            built[id(output)] = QuantizedAdd(layer, len(x), name=layer.name)(x)
        elif isinstance(layer, SAME_SCALE):
            built[id(output)] = _fresh(layer)(x[0])
        else:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): quantization-aware training does "
                             "not know how TFLite quantizes this kind of layer.")
    outputs = [built[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_quantization_aware")


def _fresh(layer):
    """A weightless layer's copy, so that the float model's layers are each still called once."""
    return None if layer is None else type(layer).from_config(layer.get_config())


def _quantized_layers(qat_model: keras.Model) -> list:
    return [layer for layer in qat_model.layers if isinstance(layer, _Quantized)]


def calibration_crops(records, image_size, count: int, batch_size: int) -> list:
    """`count` crops of people drawn at random (seed 0) from `records`, as the model sees them."""
    from keras_hourglass.data.pipeline import build_eval_dataset

    if count < 1:
        raise ValueError(f"the number of calibration crops must be positive, got {count}.")
    rows = np.sort(np.random.default_rng(0).permutation(len(records))[:count])
    crops = [batch["image"].numpy() for batch in build_eval_dataset(records.select(rows), image_size, batch_size)]
    return list(np.concatenate(crops))


def _layer_of(tensor_name: str, known: set) -> str | None:
    """The Keras layer whose TensorFlow scope computed a TFLite tensor: `model_1/stem_res1_relu2_1/Relu;...`."""
    parts = tensor_name.split(";")[0].split("/")
    if len(parts) < 3:
        return None
    name = parts[1]
    if name not in known:
        name = re.sub(r"_\d+$", "", name)
    return name if name in known else None


def tflite_ops(qat_model: keras.Model, tflite_path: str) -> dict:
    """`{layer name: [(op inputs, output tensor) per point]}`: the ops of a converted file each point rounds as.

    Each rounded tensor is found by the Keras layer named in its TFLite
    name, in graph order (a `BatchNormalization` without a ReLU computes two,
    `MUL` then `ADD`; an `Add` of `k` inputs, `k - 1`); the input crop's is
    the `QUANTIZE` of the graph input. Tensor indices are the `crops`
    signature's.

    Raises:
        ValueError: if the file does not have one int8 op for every rounded
            point (another model's file, or one the converter simplified,
            e.g. a batch normalisation that does nothing), naming the first
            layer without one.
    """
    from keras_hourglass.tflite import SIGNATURE, _graph

    with open(tflite_path, "rb") as f:
        subgraph, names, operators, _ = _graph(f.read(), SIGNATURE)
    graph_inputs = set(subgraph.inputs)
    layers = _quantized_layers(qat_model)
    known = {name for layer in layers for name in layer.points}
    found: dict[str, list] = {}
    for inputs, outputs in operators:
        quantization = subgraph.tensors[outputs[0]].quantization
        if quantization is None or quantization.scale is None or len(quantization.scale) != 1:
            continue  # a float op
        if inputs and inputs[0] in graph_inputs:
            found.setdefault(INPUT, []).append((inputs, outputs[0]))
            continue
        # A signature output is named after the signature; its convolution's kernel still names the layer.
        layer = next(filter(None, (_layer_of(names[index], known) for index in (outputs[0], *inputs[1:2]))), None)
        if layer is not None:
            found.setdefault(layer, []).append((inputs, outputs[0]))
    ops_by_layer = {}
    for layer in layers:
        ops_by_layer[layer.name] = []
        for point, name in enumerate(layer.points):
            candidates = found.get(name, [])
            if len(candidates) != layer.points.count(name):
                raise ValueError(f"{tflite_path}: {len(candidates)} int8 ops computed by layer {name!r}, expected "
                                 f"{layer.points.count(name)}; convert the same model with "
                                 "keras_hourglass.tflite.convert_saved_model(..., 'int8').")
            ops_by_layer[layer.name].append(candidates[layer.points[:point].count(name)])
    return ops_by_layer


def ranges_from_tflite(qat_model: keras.Model, tflite_path: str) -> None:
    """Copies every activation's int8 scale and zero point from a converted file into `qat_model`'s ranges.

    The file is the float model converted with full-integer quantization
    (`keras_hourglass.tflite.convert_saved_model(..., "int8")`). Its ranges
    are the ones TFLite computes with, including the converter's own
    choices (it gives some convolutions that feed an `ADD` the sum's scale
    instead of their calibrated one), so the wrapper rounds on the same
    grids. The tensors are found by `tflite_ops`.
    """
    from keras_hourglass.tflite import SIGNATURE, _graph

    with open(tflite_path, "rb") as f:
        tensors = _graph(f.read(), SIGNATURE)[0].tensors
    ops_by_layer = tflite_ops(qat_model, tflite_path)
    for layer in _quantized_layers(qat_model):
        rows = []
        for _, output in ops_by_layer[layer.name]:
            quantization = tensors[output].quantization
            scale, zero_point = float(quantization.scale[0]), int(quantization.zeroPoint[0])
            rows.append(((INT8_MIN - zero_point) * scale, (INT8_MAX - zero_point) * scale))
        layer.ranges.assign(np.asarray(rows, np.float32))


def calibrate(qat_model: keras.Model, model: keras.Model, crops, folder: str) -> str:
    """Sets `qat_model`'s ranges to those of `model` converted to int8 on `crops`; returns the int8 file.

    `model` is the float model `qat_model` wraps; `crops` are `[N, height,
    width, 3]` float32 model inputs from the training data, the same crops
    `convert.py` calibrates the final file on. The SavedModel and the file
    are written under `folder` (replaced on every call).
    """
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.export import export_saved_model, last_output_shape
    from keras_hourglass.tflite import convert_saved_model

    crops = np.asarray(crops, np.float32)
    if crops.ndim != 4 or not len(crops):
        raise ValueError(f"calibration crops must be a non-empty batch [N, height, width, 3], got {crops.shape}.")
    size, heatmap_shape = tuple(model.input_shape[1:3]), last_output_shape(model)
    codec = HeatmapCodec(size, tuple(heatmap_shape[1:3]))
    names = [f"joint{index}" for index in range(heatmap_shape[-1])]  # the decoding is float and not looked at
    saved_model = export_saved_model(model, os.path.join(folder, "saved_model"), codec, names)
    path = convert_saved_model(saved_model, os.path.join(folder, "calibration-int8.tflite"), "int8", list(crops))
    ranges_from_tflite(qat_model, path)
    return path


class RecalibrateRanges(keras.callbacks.Callback):
    """Calibrates the activation ranges on the same crops (a conversion) before training and after every epoch.

    Put it first among the callbacks: the epoch-end calibration must come
    before the validation metric, which then estimates what the int8 file
    of the epoch's weights would score; the same ranges serve the next epoch.
    """

    def __init__(self, model: keras.Model, crops, folder: str):
        super().__init__()
        self.float_model, self.crops, self.folder = model, crops, folder

    def on_train_begin(self, logs=None):
        calibrate(self.model, self.float_model, self.crops, self.folder)

    def on_epoch_end(self, epoch, logs=None):
        calibrate(self.model, self.float_model, self.crops, self.folder)
