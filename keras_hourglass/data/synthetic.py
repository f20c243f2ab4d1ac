"""Synthetic people: procedurally drawn images with MPII's 16 joints.

The embedded default data set: the main job and the end-to-end tests run on
it on a machine with nothing downloaded. Each image shows one articulated
person (limbs of varied widths, lengths and colours, a head, a torso) facing
the camera, so that left and right follow from the body's geometry as in
MPII, over a textured background with distractor strokes, sometimes behind
an occluder, at a random pose, rotation, size and position.

Images go to disk as JPEG files and the annotations to `train.h5` and
`valid.h5` in MPII's HDF5 layout (MATLAB pixels, adjusted centre and scale,
`normalize` = 0.6 x head-box diagonal, occluded joints `visible = 0`), so
the default path runs through the real loader `keras_hourglass.data.mpii.load_mpii_h5`.
Generation is deterministic for a seed: image `i` of a split depends only on
`(seed, split, i)`.
"""

from __future__ import annotations

import os

import cv2
import h5py
import numpy as np

from keras_hourglass.data.records import MATLAB_OFFSET
from keras_hourglass.fileio import atomic_path
from keras_hourglass.joints import MPII
from keras_hourglass.metrics import HEAD_SIZE_FACTOR
from keras_hourglass.transforms import box_to_center_scale

JPEG_QUALITY = 90
SPLIT_SEEDS = {"train": 0, "valid": 1}
J = {name: k for k, name in enumerate(MPII.names)}


def _direction(angle_degrees):
    radians = np.deg2rad(angle_degrees)
    return np.array([np.sin(radians), -np.cos(radians)])  # 0 degrees points up (y down)


def sample_pose(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A random upright pose `[16, 2]` around the origin, body height about 1, and its head length."""
    joints = np.zeros((16, 2))
    lean = rng.normal(0, 10)
    torso = rng.uniform(0.28, 0.34)
    joints[J["pelvis"]] = 0.0
    joints[J["thorax"]] = torso * _direction(lean)
    neck = rng.uniform(0.04, 0.06)
    head = rng.uniform(0.10, 0.14)
    head_tilt = lean + rng.normal(0, 12)
    joints[J["upper_neck"]] = joints[J["thorax"]] + neck * _direction(head_tilt)
    joints[J["head_top"]] = joints[J["upper_neck"]] + head * _direction(head_tilt)
    across = _direction(lean + 90)  # toward image right
    shoulder, hip = rng.uniform(0.09, 0.13), rng.uniform(0.06, 0.09)
    # Facing the camera: the person's left side is on the image's right.
    joints[J["l_shoulder"]] = joints[J["thorax"]] + shoulder * across
    joints[J["r_shoulder"]] = joints[J["thorax"]] - shoulder * across
    joints[J["l_hip"]] = hip * across
    joints[J["r_hip"]] = -hip * across
    upper_arm, forearm = rng.uniform(0.15, 0.19), rng.uniform(0.13, 0.17)
    thigh, shin = rng.uniform(0.22, 0.27), rng.uniform(0.21, 0.26)
    for side, sign in (("l", 1.0), ("r", -1.0)):
        # Angles in degrees from "up", mirrored for the right side.
        arm = 180 - sign * rng.uniform(-40, 170)
        elbow = arm - sign * rng.uniform(-20, 140)
        joints[J[f"{side}_elbow"]] = joints[J[f"{side}_shoulder"]] + upper_arm * _direction(arm)
        joints[J[f"{side}_wrist"]] = joints[J[f"{side}_elbow"]] + forearm * _direction(elbow)
        leg = 180 - sign * rng.uniform(-15, 50)
        knee = leg + sign * rng.uniform(-10, 90) * rng.choice([0.3, 1.0])
        joints[J[f"{side}_knee"]] = joints[J[f"{side}_hip"]] + thigh * _direction(leg)
        joints[J[f"{side}_ankle"]] = joints[J[f"{side}_knee"]] + shin * _direction(knee)
    return joints, head + neck


def _background(rng, height, width):
    small = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = cv2.resize(rng.normal(0, 1, (height // 4 + 1, width // 4 + 1, 3)).astype(np.float32), (width, height))
    image = image + noise * rng.uniform(5, 30)
    for _ in range(rng.integers(3, 12)):  # clutter: strokes like limbs, blobs
        color = rng.uniform(0, 255, 3).tolist()
        p, q = rng.uniform(0, [width, height]), rng.uniform(0, [width, height])
        if rng.uniform() < 0.6:
            cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q), color,
                     int(rng.integers(2, max(3, width // 25))), cv2.LINE_AA)
        else:
            axes = tuple(int(v) for v in rng.uniform(3, max(4, width / 10), 2))
            cv2.ellipse(image, tuple(int(v) for v in p), axes, rng.uniform(0, 180), 0, 360, color, -1, cv2.LINE_AA)
    return image


def draw_person(rng, image_size):
    """Draws one image; returns `(image uint8 BGR, joints [16, 2], visible [16], head_box [2, 2])` in 0-based pixels."""
    height, width = image_size
    image = _background(rng, height, width)
    pose, head_length = sample_pose(rng)
    body = rng.uniform(0.45, 0.85) * min(height, width)
    angle = np.deg2rad(rng.normal(0, 20))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    joints = pose @ rotation.T * body
    low, high = joints.min(0), joints.max(0)
    margin = 0.05 * body
    shift = rng.uniform(-low + margin, np.maximum(-low + margin, [width, height] - high - margin))
    joints = joints + shift
    thickness = body * rng.uniform(0.035, 0.06)
    skin = rng.uniform(60, 240, 3)
    shirt, trousers = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pt = lambda name: tuple(int(round(v * 16)) for v in joints[J[name]])  # noqa: E731 (4 fractional bits)
    line = lambda a, b, color, scale=1.0: cv2.line(  # noqa: E731
        image, pt(a), pt(b), color.tolist(), max(2, int(thickness * scale)), cv2.LINE_AA, 4)
    torso = np.array([pt("l_shoulder"), pt("r_shoulder"), pt("r_hip"), pt("l_hip")], np.int32)
    cv2.fillConvexPoly(image, torso, shirt.tolist(), cv2.LINE_AA, 4)
    for side in ("l", "r"):
        line(f"{side}_hip", f"{side}_knee", trousers, 1.3)
        line(f"{side}_knee", f"{side}_ankle", trousers * 0.85, 1.1)
        line(f"{side}_shoulder", f"{side}_elbow", shirt * 0.9, 1.0)
        line(f"{side}_elbow", f"{side}_wrist", skin, 0.8)
        cv2.circle(image, pt(f"{side}_wrist"), int(thickness * 8), skin.tolist(), -1, cv2.LINE_AA, 4)
        cv2.circle(image, pt(f"{side}_ankle"), int(thickness * 9), (trousers * 0.5).tolist(), -1, cv2.LINE_AA, 4)
    line("thorax", "upper_neck", skin, 0.8)
    head_centre = (joints[J["upper_neck"]] + joints[J["head_top"]]) / 2
    head_radius = 0.5 * np.linalg.norm(joints[J["head_top"]] - joints[J["upper_neck"]])
    cv2.circle(image, tuple(int(v * 16) for v in head_centre), int(head_radius * 16), skin.tolist(), -1, cv2.LINE_AA, 4)
    visible = np.ones(16, bool)
    if rng.uniform() < 0.3:  # an occluder in front of part of the person
        corner = joints[rng.integers(16)] + rng.normal(0, 0.1 * body, 2)
        size = rng.uniform(0.15, 0.35, 2) * body
        top_left, bottom_right = corner - size / 2, corner + size / 2
        cv2.rectangle(image, tuple(int(v) for v in top_left), tuple(int(v) for v in bottom_right),
                      rng.uniform(0, 255, 3).tolist(), -1)
        visible &= ~np.all((joints >= top_left) & (joints <= bottom_right), axis=1)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    half = head_length * body / 2
    head_box = np.array([head_centre - half, head_centre + half])
    return image, joints, visible, head_box


def generate_split(output_dir, split: str, num_images: int, seed: int = 0, image_size=(192, 192)) -> str:
    """Writes `num_images` JPEGs under `output_dir/images/` and `output_dir/<split>.h5`; returns the `.h5` path."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}.")
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}.")
    image_dir = os.path.join(output_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    names, parts, visibles, centers, scales, normalizers = [], [], [], [], [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, SPLIT_SEEDS[split], i])
        image, joints, visible, head_box = draw_person(rng, image_size)
        name = f"{split}_{i:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"could not encode {name}")
        encoded.tofile(os.path.join(image_dir, name))
        low, high = joints.min(0), joints.max(0)
        names.append(name)
        parts.append(joints + MATLAB_OFFSET)
        visibles.append(visible)
        center, scale = box_to_center_scale(low, high)
        centers.append(center + MATLAB_OFFSET)
        scales.append(scale)
        normalizers.append(HEAD_SIZE_FACTOR * np.linalg.norm(head_box[1] - head_box[0]))
    path = os.path.join(output_dir, f"{split}.h5")
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as f:
        f["imgname"] = np.asarray(names, dtype="S")
        f["part"] = np.asarray(parts)
        f["visible"] = np.asarray(visibles, np.float64)
        f["center"] = np.asarray(centers)
        f["scale"] = np.asarray(scales)
        f["normalize"] = np.asarray(normalizers)
        f["index"] = np.arange(num_images, dtype=np.float64)
        f["person"] = np.zeros(num_images)
    return path


def generate(output_dir, num_train: int = 2000, num_valid: int = 200, seed: int = 0, image_size=(192, 192)) -> dict:
    """Writes both splits; returns `{"train": path, "valid": path}` of the annotation files."""
    return {
        "train": generate_split(output_dir, "train", num_train, seed, image_size),
        "valid": generate_split(output_dir, "valid", num_valid, seed, image_size),
    }
