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


TAG_LOSS_WEIGHT = 1e-3  # pose-ae-train's weight of its push loss and of its pull loss (the heatmap loss weighs 1)


def masked_heatmap_loss(predicted, target, mask):
    """Associative Embedding's heatmap loss: squared error where `mask` is 1, averaged over pixels and joints.

    pose-ae-train's `HeatmapLoss`: `mask` `[B, H, W]` is 0 on the crowd
    regions of COCO (people without keypoints) and 1 elsewhere. Returns `[B]`.
    """
    predicted = ops.convert_to_tensor(predicted)
    target, mask = ops.cast(target, predicted.dtype), ops.cast(mask, predicted.dtype)
    return ops.mean(ops.square(predicted - target) * mask[..., None], axis=(1, 2, 3))


def tag_losses(tags, keypoints):
    """Associative Embedding's grouping losses of each image: `(push [B], pull [B])`.

    As pose-ae-train defines them (its `extensions/AE` loss, whose arithmetic
    its `task/loss.py` `singleTagLoss` also spells out; equal to it on a fixture
    written by that code). For each person with at least one visible joint,
    its reference tag is the mean of its joints' tags; pull is the mean over
    its joints of the squared distance to that mean, divided by the tag
    dimension, averaged over the image's people; push is half the mean over
    pairs of people of `exp(-squared distance between their mean tags)` (0
    with fewer than two people).

    Args:
        tags: `[B, H, W, J]`, or `[B, H, W, J, D]` for D values per tag.
        keypoints: int `[B, P, K, 2]`: per person up to `K` visible joints,
            each `(index, 1)` with `index` its place in the flattened
            `[H, W, J]` tag map, `(row * W + column) * J + joint`; unused
            slots are `(0, 0)`.
    """
    tags = ops.convert_to_tensor(tags)
    if len(tags.shape) == 4:
        tags = tags[..., None]
    batch, dims = ops.shape(tags)[0], tags.shape[-1]
    flat = ops.reshape(tags, (batch, -1, dims))
    keypoints = ops.convert_to_tensor(keypoints, "int32")
    people, slots = keypoints.shape[1], keypoints.shape[2]
    index = ops.reshape(keypoints[..., 0], (batch, people * slots, 1))
    gathered = ops.reshape(ops.take_along_axis(flat, ops.repeat(index, dims, axis=2), axis=1),
                           (batch, people, slots, dims))
    visible = ops.cast(keypoints[..., 1] > 0, tags.dtype)  # [B, P, K]
    count = ops.sum(visible, axis=2)  # [B, P]
    present = ops.cast(count > 0, tags.dtype)
    mean = ops.sum(gathered * visible[..., None], axis=2) / ops.maximum(count, 1.0)[..., None]  # [B, P, D]
    spread = ops.sum(ops.square(gathered - mean[:, :, None]), axis=3) / dims  # [B, P, K]
    person_pull = ops.sum(spread * visible, axis=2) / ops.maximum(count, 1.0)
    found = ops.sum(present, axis=1)  # people with a visible joint, [B]
    pull = ops.sum(person_pull * present, axis=1) / ops.maximum(found, 1.0)
    distance = ops.sum(ops.square(mean[:, :, None] - mean[:, None]), axis=3)  # [B, P, P]
    upper = ops.triu(ops.ones((people, people), tags.dtype), k=1)
    pairs = present[:, :, None] * present[:, None] * upper
    push = 0.5 * ops.sum(ops.exp(-distance) * pairs, axis=(1, 2)) / ops.maximum(found * (found - 1) / 2, 1.0)
    return push, pull
