"""Heatmap loss for intermediate supervision.

`HeatmapMSE` is the paper's mean squared error between predicted and target
heatmaps, computed per joint (`[batch, num_keypoints]`) so that per-joint
weights can switch joints off: pass the codec's `weights` as the output's
`sample_weight` and joints with no annotation (or pushed out of the crop)
contribute nothing. With the default `reduction="mean_with_sample_weight"`
the loss is the mean over the joints that count; with no weights it is the
plain mean over batch, joints and pixels.

One instance serves every output of the multi-output model. Targets and
weights are given per stack, in stack order, as tuples (Keras 3 resolves
per-output sample weights by position when the outputs are a list):

    model.compile(optimizer, loss=HeatmapMSE())
    model.fit(dataset)  # yields (images, (heatmaps,) * num_stacks, (weights,) * num_stacks)
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_hourglass")
class HeatmapMSE(keras.losses.Loss):
    """Per-joint mean squared heatmap error.

    Args:
        reduction: Keras loss reduction; the default divides by the sum of
            the per-joint weights.
        name: loss name.

    Call arguments:
        y_true: `[batch, height, width, num_keypoints]` target heatmaps.
        y_pred: `[batch, height, width, num_keypoints]` predicted heatmaps.
        sample_weight: optional `[batch, num_keypoints]` per-joint weights.
    """

    def __init__(self, reduction="mean_with_sample_weight", name="heatmap_mse", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        return ops.mean(ops.square(y_pred - y_true), axis=(1, 2))  # [batch, K]

    def get_config(self):
        return {"reduction": self.reduction, "name": self.name}
