"""The heatmap codec: every keypoint <-> heatmap transform in one object.

The data pipeline encodes targets with it and inference decodes with it, so
both agree by construction. It is written in TensorFlow ops: it runs eagerly
on NumPy arrays, inside `tf.data.Dataset.map`, and inside an exported model.

Pixel-centre convention (used everywhere in this project): in an image the
centre of pixel `(i, j)` (column `i`, row `j`) is the point `(x, y) = (i, j)`,
and the pixel covers `[i - 0.5, i + 0.5)`. An input image of width `W` and a
heatmap of width `w` cover the same area, so with `stride = W / w`

    u = (x + 0.5) / stride - 0.5        (image -> heatmap)
    x = (u + 0.5) * stride - 0.5        (heatmap -> image)

and likewise for `y`. This alignment makes a horizontal flip of the image
(`x -> W - 1 - x`) exactly a flip of the heatmap (`u -> w - 1 - u`), so the
flip test needs no one-pixel shift (HRNet, which maps `u = x / stride`, has
to shift flipped heatmaps to compensate).

Encoding: a joint becomes an unnormalised Gaussian `exp(-d^2 / (2 sigma^2))`
(peak 1 when the joint sits on a heatmap pixel centre, `sigma` in heatmap
pixels) centred at the joint's sub-pixel position; the reference Torch code
rounds the centre to the nearest pixel instead, which costs up to half a
heatmap pixel (two input pixels) of label noise. A joint gets weight 1 when
it is annotated and lies inside the heatmap's area; otherwise its heatmap is
all zeros and its weight 0.

Decoding: arg-max of each channel, then a sub-pixel refinement chosen by
`refine`:

* `"quarter"` (default, the reference code: `getPreds` plus the
  `0.25 * sign(diff)` step): a quarter-pixel shift toward the higher
  neighbour along x and y, applied only when the peak is not on the border.
  Its error is up to a quarter of a heatmap pixel even for a perfect
  Gaussian, which matters at coarse heatmaps (16x16 for a 64x64 input).
* `"taylor"` (DARK, Zhang et al., CVPR 2020): take the log of the heatmap
  and step to the maximum of its second-order Taylor expansion at the
  arg-max, `-H^-1 grad`, with central differences. Exact for a Gaussian
  target (tested to 1e-5 px); the step is used only where the Hessian is
  negative definite, is clipped to one pixel, and the peak must be off the
  border. DARK first smooths the heatmap with the target's Gaussian; at
  16x16 heatmaps with sigma 2 that smoothing (zero padding at the border)
  skewed blobs near the edge and lowered PCKh on the synthetic split
  (70.7 against 75.3 without it, 73.9 with `"quarter"`), so it is left out.

The score is the peak value of the unsmoothed heatmap either way.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_hourglass.model import STEM_STRIDE

DEFAULT_SIGMA = 1.0
SUBPIXEL_SHIFT = 0.25
REFINEMENTS = ("quarter", "taylor")


def _check_size(value, argument: str) -> tuple[int, int]:
    try:
        size = tuple(value)
    except TypeError:
        raise ValueError(f"{argument} must be (height, width), got {value!r}.") from None
    if len(size) != 2 or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(f"{argument} must be (height, width) of positive integers, got {value!r}.")
    return int(size[0]), int(size[1])


def _neighbours(flat, u, v, height, width):
    """`at(du, dv)`: values of `flat` `[B, K, H * W]` at `(u + du, v + dv)` `[B, K]`, clipped to the map."""

    def at(du, dv):
        uu = tf.clip_by_value(u + du, 0, width - 1)
        vv = tf.clip_by_value(v + dv, 0, height - 1)
        return tf.gather(flat, vv * width + uu, batch_dims=2)

    return at


class HeatmapCodec:
    """Encodes keypoints as Gaussian heatmaps and decodes heatmaps to keypoints.

    Args:
        image_size: `(height, width)` of the network input, in pixels.
        heatmap_size: `(height, width)` of the heatmaps; defaults to a
            quarter of `image_size` (the Stacked Hourglass output).
        sigma: Gaussian standard deviation in heatmap pixels (1 at 64x64 in
            the paper).
        flip_index: optional permutation of joints under a horizontal flip
            (`JointSpec.flip_index`); needed only by the flip helpers.
        refine: sub-pixel refinement of decoding, `"quarter"` (the
            reference) or `"taylor"` (DARK); see the module docstring.
    """

    def __init__(
        self,
        image_size: Sequence[int] = (256, 256),
        heatmap_size: Sequence[int] | None = None,
        sigma: float = DEFAULT_SIGMA,
        flip_index: Sequence[int] | None = None,
        refine: str = "quarter",
    ):
        self.image_size = _check_size(image_size, "image_size")
        if heatmap_size is None:
            if any(s % STEM_STRIDE for s in self.image_size):
                raise ValueError(
                    f"image_size {self.image_size} is not divisible by {STEM_STRIDE}; pass heatmap_size explicitly."
                )
            heatmap_size = tuple(s // STEM_STRIDE for s in self.image_size)
        self.heatmap_size = _check_size(heatmap_size, "heatmap_size")
        if any(h > i for h, i in zip(self.heatmap_size, self.image_size)):
            raise ValueError(
                f"heatmap_size {self.heatmap_size} must not exceed image_size {self.image_size}."
            )
        if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool) or not sigma > 0:
            raise ValueError(f"sigma must be a positive number of heatmap pixels, got {sigma!r}.")
        self.sigma = float(sigma)
        if flip_index is not None:
            flip_index = [int(i) for i in flip_index]
            if sorted(flip_index) != list(range(len(flip_index))):
                raise ValueError(f"flip_index must be a permutation of 0..K-1, got {flip_index}.")
        self.flip_index = flip_index
        if refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}.")
        self.refine = refine
        # (x, y) strides: input pixels per heatmap pixel.
        self._stride_xy = (
            self.image_size[1] / self.heatmap_size[1],
            self.image_size[0] / self.heatmap_size[0],
        )

    def get_config(self) -> dict:
        return {
            "image_size": list(self.image_size),
            "heatmap_size": list(self.heatmap_size),
            "sigma": self.sigma,
            "flip_index": None if self.flip_index is None else list(self.flip_index),
            "refine": self.refine,
        }

    @classmethod
    def from_config(cls, config: dict) -> "HeatmapCodec":
        return cls(**config)

    def __repr__(self):
        return f"HeatmapCodec({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    # Coordinates ----------------------------------------------------------

    def image_to_heatmap(self, keypoints):
        """Maps `[..., 2]` input-image `(x, y)` pixels to heatmap pixels."""
        keypoints = tf.convert_to_tensor(keypoints, tf.float32)
        return (keypoints + 0.5) / tf.constant(self._stride_xy, tf.float32) - 0.5

    def heatmap_to_image(self, coords):
        """Maps `[..., 2]` heatmap `(u, v)` pixels to input-image pixels."""
        coords = tf.convert_to_tensor(coords, tf.float32)
        return (coords + 0.5) * tf.constant(self._stride_xy, tf.float32) - 0.5

    # Encoding -------------------------------------------------------------

    def encode(self, keypoints, annotated):
        """Encodes keypoints as Gaussian heatmaps.

        Args:
            keypoints: `[..., num_keypoints, 2]` `(x, y)` in input-image
                pixels. Entries of unannotated joints are ignored (they may
                be NaN).
            annotated: `[..., num_keypoints]`, truthy where the joint has a
                ground-truth position.

        Returns:
            heatmaps: `[..., heatmap_height, heatmap_width, num_keypoints]`
                float32.
            weights: `[..., num_keypoints]` float32, 1 for joints that are
                annotated and inside the heatmap, else 0 (their heatmap is
                all zeros).
        """
        keypoints = tf.convert_to_tensor(keypoints, tf.float32)
        annotated = tf.convert_to_tensor(annotated)
        if keypoints.shape.rank is not None and (keypoints.shape.rank < 2 or keypoints.shape[-1] != 2):
            raise ValueError(f"keypoints must have shape [..., num_keypoints, 2], got {keypoints.shape}.")
        if annotated.shape.rank is not None and keypoints.shape.rank is not None:
            if not annotated.shape.is_compatible_with(keypoints.shape[:-1]):
                raise ValueError(
                    f"annotated must have shape {keypoints.shape[:-1]} (keypoints without the last axis), "
                    f"got {annotated.shape}."
                )
        if annotated.dtype != tf.bool:
            annotated = tf.not_equal(annotated, tf.zeros([], annotated.dtype))
        height, width = self.heatmap_size
        uv = self.image_to_heatmap(keypoints)  # [..., K, 2]
        u, v = uv[..., 0], uv[..., 1]
        inside = (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
        valid = annotated & inside  # NaN coordinates compare False: never valid.
        u = tf.where(valid, u, 0.0)
        v = tf.where(valid, v, 0.0)
        scale = -0.5 / self.sigma**2
        gx = tf.exp(scale * tf.square(tf.range(width, dtype=tf.float32) - u[..., None]))  # [..., K, W]
        gy = tf.exp(scale * tf.square(tf.range(height, dtype=tf.float32) - v[..., None]))  # [..., K, H]
        weights = tf.cast(valid, tf.float32)
        gy = gy * weights[..., None]
        heatmaps = tf.einsum("...kh,...kw->...hwk", gy, gx)
        return heatmaps, weights

    # Decoding -------------------------------------------------------------

    def decode(self, heatmaps):
        """Decodes heatmaps to keypoints: arg-max plus a quarter-pixel shift.

        Args:
            heatmaps: `[..., heatmap_height, heatmap_width, num_keypoints]`.

        Returns:
            keypoints: `[..., num_keypoints, 2]` `(x, y)` in input-image pixels.
            scores: `[..., num_keypoints]`, the peak values.
        """
        heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
        if heatmaps.shape.rank is not None:
            if heatmaps.shape.rank < 3:
                raise ValueError(
                    f"heatmaps must have shape [..., height, width, num_keypoints], got {heatmaps.shape}."
                )
            if tuple(heatmaps.shape[-3:-1]) != tuple(self.heatmap_size) and None not in heatmaps.shape[-3:-1]:
                raise ValueError(
                    f"heatmaps have spatial size {tuple(heatmaps.shape[-3:-1])}, but this codec expects "
                    f"heatmap_size {self.heatmap_size}."
                )
        shape = tf.shape(heatmaps)
        height, width, num_keypoints = shape[-3], shape[-2], shape[-1]
        leading = shape[:-3]
        # [batch, K, H * W]
        flat = tf.reshape(heatmaps, tf.concat([[-1], shape[-3:]], 0))
        flat = tf.reshape(tf.transpose(flat, [0, 3, 1, 2]), [tf.shape(flat)[0], num_keypoints, height * width])
        index = tf.argmax(flat, axis=-1, output_type=tf.int32)  # [batch, K]
        scores = tf.reduce_max(flat, axis=-1)
        u = index % width
        v = index // width

        value_at = _neighbours(flat, u, v, height, width)
        interior = (u > 0) & (u < width - 1) & (v > 0) & (v < height - 1)
        if self.refine == "taylor":
            shift_u, shift_v = self._taylor_step(heatmaps, shape, u, v, interior)
        else:
            shift_u = SUBPIXEL_SHIFT * tf.sign(value_at(1, 0) - value_at(-1, 0))
            shift_v = SUBPIXEL_SHIFT * tf.sign(value_at(0, 1) - value_at(0, -1))
        zero = tf.zeros_like(shift_u)
        coords = tf.stack(
            [
                tf.cast(u, tf.float32) + tf.where(interior, shift_u, zero),
                tf.cast(v, tf.float32) + tf.where(interior, shift_v, zero),
            ],
            axis=-1,
        )  # [batch, K, 2]
        keypoints = self.heatmap_to_image(coords)
        keypoints = tf.reshape(keypoints, tf.concat([leading, [num_keypoints, 2]], 0))
        scores = tf.reshape(scores, tf.concat([leading, [num_keypoints]], 0))
        return keypoints, scores

    def _taylor_step(self, heatmaps, shape, u, v, interior):
        """DARK's step `-H^-1 grad` of the log heatmap at `(u, v)`."""
        height, width, num_keypoints = shape[-3], shape[-2], shape[-1]
        maps = tf.reshape(heatmaps, tf.concat([[-1], shape[-3:]], 0))  # [B, H, W, K]
        log = tf.math.log(tf.maximum(maps, 1e-10))
        flat = tf.reshape(tf.transpose(log, [0, 3, 1, 2]), [tf.shape(maps)[0], num_keypoints, height * width])
        at = _neighbours(flat, u, v, height, width)
        centre = at(0, 0)
        dx = 0.5 * (at(1, 0) - at(-1, 0))
        dy = 0.5 * (at(0, 1) - at(0, -1))
        dxx = at(1, 0) - 2 * centre + at(-1, 0)
        dyy = at(0, 1) - 2 * centre + at(0, -1)
        dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        determinant = dxx * dyy - dxy * dxy
        concave = (dxx < 0) & (determinant > 1e-12) & interior
        safe = tf.where(concave, determinant, tf.ones_like(determinant))
        step_u = -(dyy * dx - dxy * dy) / safe
        step_v = -(dxx * dy - dxy * dx) / safe
        zero = tf.zeros_like(step_u)
        return (tf.where(concave, tf.clip_by_value(step_u, -1.0, 1.0), zero),
                tf.where(concave, tf.clip_by_value(step_v, -1.0, 1.0), zero))

    # Flip test ------------------------------------------------------------

    def _require_flip_index(self, num_keypoints):
        if self.flip_index is None:
            raise ValueError("This codec has no flip_index; build it with flip_index=JointSpec.flip_index.")
        if num_keypoints is not None and num_keypoints != len(self.flip_index):
            raise ValueError(
                f"heatmaps have {num_keypoints} channels but flip_index has {len(self.flip_index)} joints."
            )
        return tf.constant(self.flip_index, tf.int32)

    def flip_heatmaps(self, heatmaps):
        """Mirrors heatmaps `[..., H, W, K]` left-right and swaps left/right channels.

        Applied to the heatmaps of a mirrored image, it gives heatmaps of the
        original image; applying it twice is the identity.
        """
        heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
        flip_index = self._require_flip_index(heatmaps.shape[-1])
        return tf.gather(tf.reverse(heatmaps, axis=[-2]), flip_index, axis=-1)

    def flip_test(self, predict_fn: Callable, images):
        """Averages the heatmaps of images and of their mirror images.

        `predict_fn` is called once, on the images followed by their mirror
        images: an exported graph then holds one call of the network, not
        two, which made a full-size 8-stack SavedModel's export 3 s and its
        TFLite conversion 6 s quicker (2 cores of an AVX-512 Xeon).

        Args:
            predict_fn: maps images `[2 * batch, height, width, 3]` to heatmaps
                `[2 * batch, H, W, K]` (e.g. the last output of the model).
            images: `[batch, height, width, 3]`.

        Returns:
            `[batch, H, W, K]` averaged heatmaps, aligned with `images`.
        """
        images = tf.convert_to_tensor(images)
        count = tf.shape(images)[0]
        both = tf.convert_to_tensor(predict_fn(tf.concat([images, tf.reverse(images, axis=[-2])], 0)), tf.float32)
        return 0.5 * (both[:count] + self.flip_heatmaps(both[count:]))


def flip_keypoints(keypoints, width: int, flip_index: Sequence[int]):
    """Mirrors keypoints `[..., K, 2]` in an image `width` pixels wide and swaps left/right.

    With pixel centres at integers (see the module docstring), `x -> width - 1 - x`.
    """
    keypoints = tf.convert_to_tensor(keypoints, tf.float32)
    mirrored = tf.stack([width - 1.0 - keypoints[..., 0], keypoints[..., 1]], axis=-1)
    return tf.gather(mirrored, np.asarray(flip_index, np.int32), axis=-2)


# pose-ae-train's joint order for matching (its `Params.partOrder`): head and arms first, then the hips, then the
# elbows down and the legs (COCO indices).
AE_JOINT_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


DETECTION_THRESHOLD = 0.1  # pose-ae-train test.py's `HeatmapParser(detection_val=0.1)`


class AssociativeEmbeddingCodec:
    """Decodes one image's joint heatmaps and tags into people, as pose-ae-train's `test.py` does.

    Associative Embedding (Newell, Huang and Deng, NIPS 2017) predicts, for
    each joint, a detection heatmap and a tag map; the joints of one person
    have similar tags. The decoding, equal to the reference's
    `utils/group.py` (`HeatmapParser(detection_val=0.1)`) followed by its
    `test.py` `refine` (checked against fixtures written by that code):

    1. non-maximum suppression: a value survives where it equals the maximum
       of its 3x3 neighbourhood;
    2. the `max_people` highest values of each joint are its candidates,
       those above `detection_threshold` kept;
    3. joints are taken in `joint_order`. The first joint's candidates each
       start a person; each next joint's candidates are matched to the people
       so far by the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`)
       on the cost `round(d) * 100 - value`, where `d` is the root mean square
       difference between the candidate's tag and the person's mean tag. A
       candidate matched with `d < tag_threshold` joins the person; any other
       starts a new one. Once there are `max_people` people, further joints
       are skipped (the reference's `ignore_too_much`);
    4. each joint moves a quarter pixel towards its higher neighbour along x
       and along y (towards the lower one on a tie; neighbours clamped at
       the border);
    5. with `fill_missing` (the reference's second pass), each person's
       missing joints are taken where `heatmap - round(|tag - mean tag|)`
       is highest, with the quarter-pixel step, if the heatmap is positive
       there. Here the tag distance is the Euclidean norm over the tag
       dimensions, as in the reference's `refine` (step 3 uses the mean),
       and the quarter-pixel step clamps its neighbours as `refine` does: the
       column at `H - 1`, the row at `J - 1` (a slip of the reference, kept:
       the joints found are the reference's), never past the map's edge.

    Conventions: inputs are one image's `heatmaps [H, W, J]` and `tags
    [H, W, J]` or `[H, W, J, D]` (D tag values per joint, e.g. 2 with the
    flip test: the tags of the image and of its mirror image), float, in
    heatmap pixels. Outputs are in heatmap pixels in this project's
    pixel-centre convention (see the module docstring); the reference's
    coordinates are half a pixel larger (pixel corners). Scores are each
    joint's heatmap value at its candidate (0 for a joint the person lacks);
    a joint found by the second pass scores the heatmap value where it was
    found (the reference marks it 1, a flag, and scores people on the first
    pass only: `person_scores`). People come in the order the reference
    makes them.
    """

    def __init__(self, detection_threshold: float = DETECTION_THRESHOLD, tag_threshold: float = 1.0,
                 max_people: int = 30,
                 joint_order: Sequence[int] = AE_JOINT_ORDER, fill_missing: bool = True):
        if sorted(joint_order) != list(range(len(joint_order))):
            raise ValueError(f"joint_order must list each joint index once, got {list(joint_order)}.")
        if not (isinstance(max_people, numbers.Integral) and max_people > 0):
            raise ValueError(f"max_people must be a positive integer, got {max_people!r}.")
        self.detection_threshold, self.tag_threshold = float(detection_threshold), float(tag_threshold)
        self.max_people, self.joint_order, self.fill_missing = int(max_people), tuple(joint_order), fill_missing

    def _inputs(self, heatmaps, tags) -> tuple[np.ndarray, np.ndarray]:
        heatmaps, tags = np.asarray(heatmaps, np.float32), np.asarray(tags, np.float32)
        if tags.ndim == 3:
            tags = tags[..., None]
        if heatmaps.ndim != 3 or tags.ndim != 4 or tags.shape[:3] != heatmaps.shape:
            raise ValueError(f"expected heatmaps [H, W, J] and tags [H, W, J] or [H, W, J, D] of the same H, W, J; "
                             f"got heatmaps {heatmaps.shape} and tags {tags.shape}.")
        if min(heatmaps.shape[:2]) < 1:
            raise ValueError(f"heatmaps must be at least 1x1; got {heatmaps.shape}.")
        if heatmaps.shape[-1] != len(self.joint_order):
            raise ValueError(f"the heatmaps have {heatmaps.shape[-1]} joints; joint_order has "
                             f"{len(self.joint_order)}.")
        if not (np.isfinite(heatmaps).all() and np.isfinite(tags).all()):
            raise ValueError("heatmaps and tags must be finite numbers.")
        return heatmaps.transpose(2, 0, 1), tags.transpose(2, 0, 1, 3)  # joint-major, as the reference

    def candidates(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(values [J, K], flat indices [J, K])`: each joint's `K = max_people` highest maxima, highest first."""
        from scipy.ndimage import maximum_filter

        peaks = maximum_filter(heatmaps, size=(1, 3, 3), mode="constant", cval=-np.inf)
        suppressed = np.where(peaks == heatmaps, heatmaps, 0).reshape(len(heatmaps), -1)
        count = min(self.max_people, suppressed.shape[1])
        order = np.argsort(-suppressed, axis=1, kind="stable")[:, :count]
        return np.take_along_axis(suppressed, order, axis=1), order

    def group(self, heatmaps: np.ndarray, tags: np.ndarray) -> np.ndarray:
        """People `[P, J, 3 + D]` (column, row, value, tags) from joint-major maps, before any sub-pixel step."""
        from scipy.optimize import linear_sum_assignment

        joints, height, width = heatmaps.shape
        values, indices = self.candidates(heatmaps)
        flat_tags = tags.reshape(joints, height * width, -1)
        people: dict = {}  # keyed by the first tag value of the joint that started the person, as the reference
        person_tags: dict = {}
        for step, joint in enumerate(self.joint_order):
            keep = values[joint] > self.detection_threshold
            index = indices[joint][keep]
            found = np.concatenate([np.stack([index % width, index // width, values[joint][keep]], 1),
                                    flat_tags[joint][index]], 1)
            if step == 0 or not people:
                for row in found:
                    self._start(people, person_tags, row, joint, joints)
                continue
            keys = list(people)[:self.max_people]
            if len(keys) == self.max_people or not len(found):
                continue
            means = np.array([np.mean(person_tags[key], axis=0) for key in keys])
            distance = np.sqrt(((found[:, None, 3:] - means[None]) ** 2).mean(axis=2))
            cost = np.round(distance) * 100 - found[:, 2:3]
            if cost.shape[0] > cost.shape[1]:  # more candidates than people: the rest start new people
                cost = np.concatenate([cost, np.full((cost.shape[0], cost.shape[0] - cost.shape[1]), 1e10)], 1)
            for row, column in zip(*linear_sum_assignment(cost)):
                if column < len(keys) and distance[row, column] < self.tag_threshold:
                    people[keys[column]][joint] = found[row]
                    person_tags[keys[column]].append(found[row, 3:].astype(np.float32))
                else:
                    self._start(people, person_tags, found[row], joint, joints)
        dims = tags.shape[-1]
        return np.array(list(people.values()), np.float32).reshape(-1, joints, 3 + dims)

    @staticmethod
    def _start(people: dict, person_tags: dict, row: np.ndarray, joint: int, joints: int) -> None:
        key = float(row[3])
        people.setdefault(key, np.zeros((joints, len(row))))[joint] = row
        person_tags[key] = [row[3:].astype(np.float32)]  # the reference's mean tags are float32

    @staticmethod
    def _quarter_step(heatmap: np.ndarray, column: int, row: int, last_column: int | None = None,
                      last_row: int | None = None) -> tuple[float, float]:
        """The reference's step: a quarter pixel towards the higher neighbour (the lower on a tie), the
        neighbour's index clamped to `[0, last]` (by default the map's last column and row)."""
        height, width = heatmap.shape
        last_column = width - 1 if last_column is None else last_column
        last_row = height - 1 if last_row is None else last_row
        dx = 0.25 if heatmap[row, min(column + 1, last_column)] > heatmap[row, max(column - 1, 0)] else -0.25
        dy = 0.25 if heatmap[min(row + 1, last_row), column] > heatmap[max(row - 1, 0), column] else -0.25
        return column + dx, row + dy

    def decode_people(self, heatmaps, tags) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(keypoints [P, J, 2], scores [P, J], person_scores [P])`; `decode` without the person scores.

        `person_scores` are the mean of each person's first-pass joint values (0 for the joints it lacks),
        the reference's score of a person for COCO evaluation.
        """
        heatmaps, tags = self._inputs(heatmaps, tags)
        people = self.group(heatmaps, tags)
        joints = heatmaps.shape[0]
        keypoints = np.zeros((len(people), joints, 2), np.float32)
        scores = people[:, :, 2].copy()
        for person, found in enumerate(people):
            for joint in np.flatnonzero(found[:, 2] > 0):
                keypoints[person, joint] = self._quarter_step(heatmaps[joint], int(found[joint, 0]), int(found[joint, 1]))
            if self.fill_missing and (found[:, 2] > 0).any():
                self._fill(heatmaps, tags, found, keypoints[person], scores[person])
        return keypoints, scores, people[:, :, 2].mean(axis=1) if len(people) else np.zeros(0, np.float32)

    def decode(self, heatmaps, tags) -> tuple[np.ndarray, np.ndarray]:
        """`(keypoints [P, J, 2] (x, y), scores [P, J])` of every person found in one image; see the class."""
        keypoints, scores, _ = self.decode_people(heatmaps, tags)
        return keypoints, scores

    def _fill(self, heatmaps, tags, found, keypoints, scores) -> None:
        """The reference's second pass (`test.py` `refine`) for one person, in place."""
        present = np.flatnonzero(found[:, 2] > 0)
        # The reference reads each found joint's tag at its adjusted position (a pixel corner plus or minus a
        # quarter), truncated: the same pixel.
        mean = np.mean([tags[j, int(found[j, 1]), int(found[j, 0])] for j in present], axis=0)
        for joint in np.flatnonzero(found[:, 2] <= 0):
            distance = np.sqrt(((tags[joint] - mean) ** 2).sum(axis=-1))
            row, column = np.unravel_index(np.argmax(heatmaps[joint] - np.round(distance)), distance.shape)
            value = heatmaps[joint, row, column]
            if value > 0:
                # The reference's `refine` clamps the next column at H - 1 and the next row at J - 1 (the
                # shape of its [J, H, W] array): kept, so that the joints it finds are the reference's, but
                # inside the map (where the reference would index past a map smaller than that).
                joints, height, width = heatmaps.shape
                keypoints[joint] = self._quarter_step(heatmaps[joint], column, row,
                                                      last_column=min(height, width) - 1,
                                                      last_row=min(joints, height) - 1)
                scores[joint] = value
