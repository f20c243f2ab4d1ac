"""The one affine warp: crop a person by centre and scale, with augmentation.

Used by the data pipeline (training and evaluation crops) and by inference
(mapping predictions back to the original image), in TensorFlow ops.

Coordinates follow the project's pixel-centre convention (pixel `(i, j)` is
centred at `(x, y) = (i, j)`, see `keras_hourglass.codec`). A person is a
centre `(x, y)` and a scale in units of 200 pixels (the MPII convention, with
the usual x1.25 margin already applied by the loaders): the crop is the
square box of side `200 * scale` around the centre, and its edges map to the
output image's pixel edges, so box `[cx - 100 s, cx + 100 s]` becomes
`[-0.5, width - 0.5]`. For a non-square output the box keeps the output's
aspect ratio and its height is `200 * scale`.

Matrices are `[..., 2, 3]` affine maps of column vectors `(x, y, 1)`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

SCALE_UNIT = 200.0  # pixels per unit of scale (MPII convention)
# The usual margin around a person's tight box (pose-hg-train, HRNet): scale = 1.25 x size / 200.
SCALE_MARGIN = 1.25


def box_to_center_scale(top_left, bottom_right, margin: float = SCALE_MARGIN):
    """The crop of a person box: centre `[..., 2]` and scale `[...]` in units of `SCALE_UNIT` pixels.

    The one place where a box becomes a crop, for the loaders (NumPy) and the
    serving signatures (TensorFlow; the result has the type of the input).

    Args:
        top_left: `[..., 2]` `(x, y)` of the box's first corner, pixel-centre
            coordinates (a box from pixel edges, like COCO's, is shifted by
            -0.5 first).
        bottom_right: `[..., 2]` the opposite corner.
        margin: the box's longer side is multiplied by this (the usual 1.25).

    Returns:
        `(center, scale)`: the box's midpoint and `margin x longer side / 200`.
    """
    maximum = tf.maximum if tf.is_tensor(top_left) or tf.is_tensor(bottom_right) else np.maximum
    extent = bottom_right - top_left
    return 0.5 * (top_left + bottom_right), maximum(extent[..., 0], extent[..., 1]) * margin / SCALE_UNIT


def crop_matrix(center, scale, output_size, rotation=0.0, flip=False):
    """Affine map from original-image pixels to crop pixels.

    The crop is rotated by `rotation` degrees (counter-clockwise on screen)
    about the centre, then optionally mirrored left-right.

    Args:
        center: `[..., 2]` person centre `(x, y)` in image pixels.
        scale: `[...]` box height in units of 200 pixels.
        output_size: `(height, width)` of the crop.
        rotation: `[...]` degrees.
        flip: `[...]` bool, mirror the crop.

    Returns:
        `[..., 2, 3]` float32.
    """
    height, width = output_size
    center = tf.convert_to_tensor(center, tf.float32)
    scale = tf.convert_to_tensor(scale, tf.float32)
    angle = tf.convert_to_tensor(rotation, tf.float32) * (math.pi / 180.0)
    mirror = 1.0 - 2.0 * tf.cast(tf.convert_to_tensor(flip), tf.float32)  # -1 where flipped
    shape = tf.broadcast_dynamic_shape(tf.shape(scale), tf.shape(center)[:-1])
    shape = tf.broadcast_dynamic_shape(shape, tf.shape(angle))
    shape = tf.broadcast_dynamic_shape(shape, tf.shape(mirror))
    zoom = tf.broadcast_to(height / (SCALE_UNIT * scale), shape)
    cos = tf.broadcast_to(tf.cos(angle), shape) * zoom
    sin = tf.broadcast_to(tf.sin(angle), shape) * zoom
    mirror = tf.broadcast_to(mirror, shape)
    center = tf.broadcast_to(center, tf.concat([shape, [2]], 0))
    cx, cy = center[..., 0], center[..., 1]
    # p' = zoom * R (p - c) + (w / 2 - 0.5, h / 2 - 0.5); then x' -> w - 1 - x' if flipped.
    a, b = mirror * cos, mirror * sin
    c, d = -sin, cos
    tx = mirror * (-(cos * cx + sin * cy) + width / 2 - 0.5) + (1.0 - mirror) * (width - 1) / 2
    ty = sin * cx - cos * cy + height / 2 - 0.5
    return tf.stack([tf.stack([a, b, tx], -1), tf.stack([c, d, ty], -1)], -2)


def invert_affine(matrix):
    """Inverse of `[..., 2, 3]` affine maps."""
    matrix = tf.convert_to_tensor(matrix, tf.float32)
    linear, translation = matrix[..., :2], matrix[..., 2:]
    inverse = tf.linalg.inv(linear)
    return tf.concat([inverse, -tf.matmul(inverse, translation)], -1)


def apply_affine(matrix, points):
    """Applies `[..., 2, 3]` maps to points `[..., num_points, 2]`."""
    matrix = tf.convert_to_tensor(matrix, tf.float32)
    points = tf.convert_to_tensor(points, tf.float32)
    return tf.linalg.matvec(matrix[..., None, :, :2], points) + matrix[..., None, :, 2]


def warp_image(image, matrix, output_size, offset=(0.0, 0.0)):
    """Samples a crop of `image` through the affine `matrix` (bilinear, zeros outside).

    Args:
        image: `[height, width, channels]`, or a batch `[batch, height,
            width, channels]`, any numeric dtype.
        matrix: `[2, 3]` map from original-image pixels to crop pixels, or
            `[batch, 2, 3]` (one per image of a batch).
        output_size: `(height, width)` of the crop.
        offset: `(x, y)` of `image`'s top-left pixel in the original image,
            where `image` is a window decoded from a larger image.

    Returns:
        `[output_height, output_width, channels]` float32 (with a leading
        batch dimension for a batch).
    """
    image = tf.convert_to_tensor(image)
    single = image.shape.rank == 3
    images = tf.cast(image, tf.float32)
    inverse = invert_affine(matrix)
    if single:
        images, inverse = images[None], inverse[None]
    offset = tf.convert_to_tensor(offset, tf.float32)
    inverse = tf.broadcast_to(inverse, tf.stack([tf.shape(images)[0], 2, 3]))
    # ImageProjectiveTransformV3 maps output pixels to input pixels, both with
    # centres at integer coordinates, as in this project.
    transforms = tf.concat(
        [inverse[:, 0], inverse[:, 1], tf.zeros_like(inverse[:, 0, :2])], -1
    ) - tf.stack([0.0, 0.0, offset[0], 0.0, 0.0, offset[1], 0.0, 0.0])
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant(output_size, tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return warped[0] if single else warped


def source_window(matrix, output_size, image_shape, margin=2):
    """The part of the original image that a crop reads: `(y, x, height, width)` int32.

    Decoding only this window of a large JPEG is what makes the pipeline fast.
    The window is clipped to the image and is at least one pixel.
    """
    height, width = output_size
    corners = tf.constant([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    source = apply_affine(invert_affine(matrix), corners)
    image_height = tf.cast(image_shape[0], tf.int32)
    image_width = tf.cast(image_shape[1], tf.int32)
    x0 = tf.clip_by_value(tf.cast(tf.floor(tf.reduce_min(source[:, 0])), tf.int32) - margin, 0, image_width - 1)
    y0 = tf.clip_by_value(tf.cast(tf.floor(tf.reduce_min(source[:, 1])), tf.int32) - margin, 0, image_height - 1)
    x1 = tf.clip_by_value(tf.cast(tf.math.ceil(tf.reduce_max(source[:, 0])), tf.int32) + margin, x0 + 1, image_width)
    y1 = tf.clip_by_value(tf.cast(tf.math.ceil(tf.reduce_max(source[:, 1])), tf.int32) + margin, y0 + 1, image_height)
    return tf.stack([y0, x0, y1 - y0, x1 - x0])
