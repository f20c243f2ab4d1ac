"""Per-channel range equalisation: the same function, with activations that quantize better.

int8 quantization gives each activation tensor one scale. In a trained
hourglass a few channels of the residual streams are far wider than the
rest (the small synthetic model: the widest channel reaches 460, the median
channel 125), so the one scale is set by them and the others lose their
resolution. Multiplying channel `c` of a tensor by `s_c > 0` and dividing it
back where the tensor is read changes nothing in float arithmetic:

* producers scale their output channels: a `Conv2D`'s kernel and bias, a
  `BatchNormalization`'s gamma and beta;
* readers undo it on their input channels: a `Conv2D`'s kernel rows, a
  `BatchNormalization`'s moving mean (times `s`) and moving variance (so that
  `sqrt(var + eps)` is times `s`);
* `Add`, `ReLU`, max pooling, upsampling and zero padding commute with a
  positive per-channel scale, so the tensors they join form one group that
  shares the scales (the whole residual stream of a stack is one group).

A group is left alone if it touches anything else: the model's inputs or
outputs, or a layer of another kind. The scales set every channel's
calibrated maximum to the group's median channel maximum. This is the
residual-network form of cross-layer equalisation (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019),
with ranges measured on calibration crops instead of read from weights.
"""

from __future__ import annotations

import keras
import numpy as np

SCALE_COMMUTING = (keras.layers.Add, keras.layers.ReLU, keras.layers.MaxPooling2D, keras.layers.UpSampling2D,
                   keras.layers.ZeroPadding2D)


def _single_node(layer):
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(f"layer {layer.name!r} is called {len(nodes)} times; equalisation needs a model "
                         "whose layers are each called once.")
    return nodes[0]


def _groups(model: keras.Model):
    """`(tensors by id, group id by tensor id, group ids that may be scaled, (layer, input id, output id) list)`."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    parent: dict[int, int] = {}

    def find(key):
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    tensors, wiring = {}, []
    for layer in layers:
        node = _single_node(layer)
        inputs, (output,) = list(node.input_tensors), list(node.output_tensors)
        for tensor in (*inputs, output):
            tensors[id(tensor)] = tensor
            find(id(tensor))
        if isinstance(layer, SCALE_COMMUTING):
            for tensor in inputs:
                parent[find(id(tensor))] = find(id(output))
        wiring.append((layer, [id(t) for t in inputs], id(output)))
    fixed = {find(id(t)) for t in (*model.inputs, *model.outputs)}
    for layer, inputs, output in wiring:
        scalable = isinstance(layer, SCALE_COMMUTING) or (
            isinstance(layer, keras.layers.BatchNormalization) and layer.axis in (-1, [-1], 3, [3])) or (
            isinstance(layer, keras.layers.Conv2D) and layer.groups == 1 and layer.data_format == "channels_last")
        if not scalable:
            fixed.update(find(key) for key in (*inputs, output))
        elif isinstance(layer, keras.layers.BatchNormalization) and not layer.scale:
            fixed.add(find(output))  # no gamma to carry an output scale
    group_of = {key: find(key) for key in tensors}
    return tensors, group_of, set(group_of.values()) - fixed, wiring


def equalize_channel_ranges(model: keras.Model, crops, batch_size: int = 16) -> int:
    """Rescales `model`'s weights in place so that its activations quantize better; returns the groups scaled.

    The outputs do not change (up to float rounding; tested). `crops` are
    calibration inputs `[N, height, width, 3]` as the model sees them, e.g.
    drawn from the training data.
    """
    crops = np.asarray(crops, np.float32)
    if crops.ndim != 4 or len(crops) == 0:
        raise ValueError(f"crops must be a non-empty batch [N, height, width, 3], got shape {crops.shape}.")
    tensors, group_of, scalable, wiring = _groups(model)
    keys = [key for key in tensors if group_of[key] in scalable]
    if not keys:
        return 0
    probe = keras.Model(model.inputs, [tensors[key] for key in keys])
    values = probe.predict(crops, batch_size=batch_size, verbose=0)
    values = values if isinstance(values, (list, tuple)) else [values]
    channel_max: dict[int, np.ndarray] = {}
    for key, value in zip(keys, values):
        peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
        group = group_of[key]
        channel_max[group] = peak if group not in channel_max else np.maximum(channel_max[group], peak)
    scales = {}
    for group, peak in channel_max.items():
        peak = np.maximum(peak, 1e-6 * max(float(peak.max()), 1e-12))  # dead channels: keep them finite
        scales[group] = (np.median(peak) / peak).astype(np.float32)
    for layer, inputs, output in wiring:
        scale_in = scales.get(group_of[inputs[0]]) if inputs else None
        scale_out = scales.get(group_of[output])
        if isinstance(layer, keras.layers.Conv2D):
            weights = layer.get_weights()
            if scale_in is not None:
                weights[0] = weights[0] / scale_in[None, None, :, None]
            if scale_out is not None:
                weights[0] = weights[0] * scale_out
                if layer.use_bias:
                    weights[1] = weights[1] * scale_out
            layer.set_weights(weights)
        elif isinstance(layer, keras.layers.BatchNormalization):
            _scale_batch_norm(layer, scale_in, scale_out)
    return len(scales)


def _scale_batch_norm(layer, scale_in, scale_out) -> None:
    by_name = {w.path.split("/")[-1]: w for w in layer.weights}
    if scale_in is not None:
        mean, variance = by_name["moving_mean"], by_name["moving_variance"]
        mean.assign(mean.numpy() * scale_in)
        variance.assign(scale_in**2 * (variance.numpy() + layer.epsilon) - layer.epsilon)
    if scale_out is not None:
        for name in ("gamma", "beta"):
            if name in by_name:
                by_name[name].assign(by_name[name].numpy() * scale_out)
