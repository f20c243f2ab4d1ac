"""Running a `PoseModel`: crops in, keypoints in the original image's pixels out.

`crop_predictor` is the one step from crops to keypoints (flip test,
decoding, mapping back); `predict_dataset` runs it over evaluation batches
(dicts with `image`, crops `[B, height, width, 3]` in `[0, 1]`; `transform`,
`[B, 2, 3]` crop pixels -> original image pixels; `index`, the row of each
person in the annotation table, as `keras_hourglass.data.pipeline.build_eval_dataset`
yields them), and `predict_image` on one whole image.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_hourglass.pose_model import PoseModel
from keras_hourglass.transforms import (
    SCALE_UNIT,
    apply_affine,
    box_to_center_scale,
    crop_matrix,
    invert_affine,
    warp_image,
)


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
        pose_model: the model (`keras_hourglass.pose_model.PoseModel`).
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


def whole_image_crop(image, image_size):
    """The crop of a person taken to fill `image` (the image padded to a square), as `serving_default` does.

    Args:
        image: `[height, width, 3]` uint8 RGB.
        image_size: the model's input `(height, width)`.

    Returns:
        `(crop [1, *image_size, 3] float32 in [0, 1], transform [1, 2, 3] crop -> image pixels)`.
    """
    height, width = image.shape[:2]
    matrix = crop_matrix([(width - 1) / 2, (height - 1) / 2], max(height, width) / SCALE_UNIT, image_size)
    crop = (warp_image(image, matrix, image_size) / 255.0).numpy()[None].astype(np.float32)
    return crop, invert_affine(matrix)[None]


def box_crops(image, boxes, image_size):
    """The crops of person boxes in `image`, by the rule of the `boxes` signature (`box_to_center_scale`).

    Args:
        image: `[height, width, 3]` uint8 RGB.
        boxes: `[P, 4]` `(x1, y1, x2, y2)` tight person boxes, pixel-centre coordinates.
        image_size: the model's input `(height, width)`.

    Returns:
        `(crops [P, *image_size, 3] float32 in [0, 1], transforms [P, 2, 3] crop -> image pixels)`.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    center, scale = box_to_center_scale(boxes[:, :2], boxes[:, 2:])
    matrix = crop_matrix(center, scale, image_size)
    crops = [(warp_image(image, one, image_size) / 255.0).numpy() for one in matrix]  # not the image P times
    return np.stack(crops).astype(np.float32).reshape(-1, *image_size, 3), invert_affine(matrix).numpy()


def predict_image(predict, image_size, image) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints `[K, 2]` in image pixels and scores `[K]` for one person filling `image`.

    `predict` is a `crop_predictor`.
    """
    crop, transform = whole_image_crop(image, image_size)
    keypoints, scores = predict(crop, transform)
    return np.asarray(keypoints[0]), np.asarray(scores[0])
