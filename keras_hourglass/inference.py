"""Keypoints for a whole evaluation set: one loop shared by the PCK callback and `evaluate.py`.

The batches are dicts with `image` (crops `[B, height, width, 3]` in
`[0, 1]`), `transform` (`[B, 2, 3]`, crop pixels -> original image pixels)
and `index` (the row of each person in the annotation table), as
`datasets.pipeline.build_eval_dataset` yields them. Keypoints come back in
original image pixels, rows in annotation order.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_hourglass.export import PoseModel
from keras_hourglass.transforms import apply_affine


def crop_predictor(pose_model: PoseModel, flip_test: bool = False):
    """A `tf.function` mapping `(crops, transform)` to `(keypoints in original pixels, scores)`."""
    codec = pose_model.codec
    flip = flip_test and not pose_model.flip_tested
    if flip and codec.flip_index is None:
        raise ValueError(f"{pose_model.source}: the flip test needs the joints' flip partners (flip_index).")

    @tf.function
    def predict(images, transform):
        if flip:
            heatmaps = codec.flip_test(pose_model.heatmaps, images)
        else:
            heatmaps = pose_model.heatmaps(images)
        keypoints, scores = codec.decode(heatmaps)
        return apply_affine(transform, keypoints), scores

    return predict


def predict_dataset(pose_model: PoseModel, batches, num_examples: int, flip_test: bool = False,
                    progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Runs the model over evaluation batches.

    Args:
        pose_model: the model (`keras_hourglass.export.PoseModel`).
        batches: iterable of dicts with `image`, `transform`, `index`.
        num_examples: rows of the annotation table; every one must be predicted.
        flip_test: average with the mirrored crop's heatmaps.
        progress: optional `keras.utils.Progbar`-like object with `add(n)`.

    Returns:
        keypoints `[num_examples, K, 2]` float64 in original image pixels,
        scores `[num_examples, K]`.
    """
    predict = crop_predictor(pose_model, flip_test)
    keypoints = np.full((num_examples, pose_model.num_keypoints, 2), np.nan)
    scores = np.full((num_examples, pose_model.num_keypoints), np.nan)
    seen = np.zeros(num_examples, bool)
    for batch in batches:
        points, peak = predict(batch["image"], batch["transform"])
        index = np.asarray(batch["index"])
        keypoints[index], scores[index], seen[index] = points.numpy(), peak.numpy(), True
        if progress is not None:
            progress.add(len(index))
    if not seen.all():
        raise ValueError(f"{int((~seen).sum())} of {num_examples} examples got no prediction; "
                         "the batches do not cover the annotation table.")
    return keypoints, scores
