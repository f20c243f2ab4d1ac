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
    joints = _place(rng, pose, body, (0, 0), (width, height))
    visible, head_centre = _paint_person(image, rng, joints, body)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    half = head_length * body / 2
    head_box = np.array([head_centre - half, head_centre + half])
    return image, joints, visible, head_box


def _place(rng, pose, body, low_corner, high_corner):
    """The pose scaled to `body` pixels, rotated a little, and shifted to lie within the given corners."""
    angle = np.deg2rad(rng.normal(0, 20))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    joints = pose @ rotation.T * body
    low, high = joints.min(0), joints.max(0)
    margin = 0.05 * body
    start = np.asarray(low_corner, float) - low + margin
    return joints + rng.uniform(start, np.maximum(start, np.asarray(high_corner, float) - high - margin))


def _paint_person(image, rng, joints, body, face=False, occluder_probability=0.3):
    """Paints the person of `joints` (MPII's 16, pixels) onto `image`; returns `(visible [16], head centre [2])`.

    With `face`, the head carries two dark eyes, a nose and two ears
    (`face_points`), so that COCO's face joints are drawn (the single-person
    set, MPII's joints, has a plain head).
    """
    thickness = body * rng.uniform(0.035, 0.06)
    skin = rng.uniform(60, 240, 3)
    shirt, trousers = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pt = lambda name: tuple(int(round(v * 16)) for v in joints[J[name]])  # noqa: E731 (4 fractional bits)
    fixed = lambda point: tuple(int(round(v * 16)) for v in point)  # noqa: E731
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
    points = face_points(joints) if face else {}
    for ear in ("left_ear", "right_ear") if face else ():
        cv2.circle(image, fixed(points[ear]), int(head_radius * 0.35 * 16), (skin * 0.75).tolist(), -1, cv2.LINE_AA, 4)
    cv2.circle(image, tuple(int(v * 16) for v in head_centre), int(head_radius * 16), skin.tolist(), -1, cv2.LINE_AA, 4)
    dot = max(16, int(head_radius * 0.16 * 16))
    for name, color in (("left_eye", (30, 30, 30)), ("right_eye", (30, 30, 30)), ("nose", skin * 0.55)) if face else ():
        cv2.circle(image, fixed(points[name]), dot, tuple(float(c) for c in color), -1, cv2.LINE_AA, 4)
    visible = np.ones(16, bool)
    if rng.uniform() < occluder_probability:  # an occluder in front of part of the person
        corner = joints[rng.integers(16)] + rng.normal(0, 0.1 * body, 2)
        size = rng.uniform(0.15, 0.35, 2) * body
        top_left, bottom_right = corner - size / 2, corner + size / 2
        cv2.rectangle(image, tuple(int(v) for v in top_left), tuple(int(v) for v in bottom_right),
                      rng.uniform(0, 255, 3).tolist(), -1)
        visible &= ~np.all((joints >= top_left) & (joints <= bottom_right), axis=1)
    return visible, head_centre


def face_points(joints) -> dict:
    """The face joints COCO names, placed on the drawn head of MPII `joints` `[16, 2]`: `{name: [2]}`.

    The head is the disc between the upper neck and the head top. Facing the
    camera, the person's left eye and ear are on the image's right (as the
    shoulders are in `sample_pose`): eyes a little above the centre, the nose
    below it, the ears at the sides.
    """
    neck, top = joints[J["upper_neck"]], joints[J["head_top"]]
    centre, radius = (neck + top) / 2, 0.5 * np.linalg.norm(top - neck)
    up = (top - neck) / max(2 * radius, 1e-9)
    right = np.array([-up[1], up[0]])  # image right for an upright head (y down)
    return {"nose": centre - 0.25 * radius * up,
            "left_eye": centre + 0.4 * radius * right + 0.2 * radius * up,
            "right_eye": centre - 0.4 * radius * right + 0.2 * radius * up,
            "left_ear": centre + radius * right, "right_ear": centre - radius * right}


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


# Scenes of several people, as COCO keypoint files --------------------------------------------------------

SCENE_SPLIT_SEEDS = {"train": 2, "valid": 3}
MAX_SCENE_PEOPLE = 4


def coco_keypoints(joints, visible) -> np.ndarray:
    """COCO's 17 person keypoints `[17, 3]` (x, y, v) of a drawn person: MPII `joints` `[16, 2]`, `visible` `[16]`.

    Limbs come from the MPII joints of the same name, the face from
    `face_points`; `v` is 2 where visible, 1 where an occluder hides it
    (labelled, as COCO labels hidden joints), and the face shares the head
    top's visibility.
    """
    from keras_hourglass.joints import COCO_PERSON

    face = face_points(joints)
    rows = []
    for name in COCO_PERSON.names:
        if name in face:
            point, seen = face[name], visible[J["head_top"]]
        else:
            mpii = name.replace("left_", "l_").replace("right_", "r_")
            point, seen = joints[J[mpii]], visible[J[mpii]]
        rows.append([point[0], point[1], 2.0 if seen else 1.0])
    return np.asarray(rows)


def draw_scene(rng, image_size, crowd_probability=0.2):
    """One image of one to `MAX_SCENE_PEOPLE` people, sometimes beside a small crowd.

    Returns `(image uint8 BGR, keypoints [P, 17, 3] COCO (x, y, v) in 0-based pixels, crowd box or None)`;
    the crowd box `[x0, y0, x1, y1]` holds several small people that carry no keypoints, as COCO's `iscrowd`
    regions do.
    """
    height, width = image_size
    image = _background(rng, height, width)
    side = min(height, width)
    crowd = None
    if rng.uniform() < crowd_probability:
        size = rng.uniform(0.3, 0.5, 2) * [width, height]
        corner = rng.uniform(0, [width, height] - size)
        crowd = np.concatenate([corner, corner + size])
        for _ in range(rng.integers(3, 7)):
            pose, _ = sample_pose(rng)
            body = rng.uniform(0.5, 0.8) * size[1]
            _paint_person(image, rng, _place(rng, pose, body, corner, corner + size), body, occluder_probability=0)
    people = []
    for _ in range(rng.integers(1, MAX_SCENE_PEOPLE + 1)):
        pose, _ = sample_pose(rng)
        body = rng.uniform(0.35, 0.7) * side
        joints = _place(rng, pose, body, (0, 0), (width, height))
        visible, _ = _paint_person(image, rng, joints, body, face=True, occluder_probability=0.15)
        people.append(coco_keypoints(joints, visible))
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return image, np.asarray(people), crowd


def generate_scenes(output_dir, split: str, num_images: int, seed: int = 0, image_size=(128, 128)) -> str:
    """Writes `num_images` scenes (`draw_scene`) under `output_dir/images/` and the COCO keypoint file
    `output_dir/people_<split>.json`; returns its path.

    Image `i` depends only on `(seed, split, i)`. Each person's `bbox` is its
    keypoints' extent widened by a tenth of its size on every side (clipped to
    the image) and its `area`, which OKS reads as the person's size, is half
    the box's; a crowd region is one `iscrowd` annotation whose segmentation
    is its box as a polygon.
    """
    from keras_hourglass.data.coco import PERSON_CATEGORY
    from keras_hourglass.fileio import write_json
    from keras_hourglass.joints import COCO_PERSON

    if split not in SCENE_SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SCENE_SPLIT_SEEDS)}, got {split!r}.")
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}.")
    height, width = image_size
    image_dir = os.path.join(output_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image, people, crowd = draw_scene(np.random.default_rng([seed, SCENE_SPLIT_SEEDS[split], i]), image_size)
        name = f"people_{split}_{i:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"could not encode {name}")
        encoded.tofile(os.path.join(image_dir, name))
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        for keypoints in people:
            low, high = keypoints[:, :2].min(0), keypoints[:, :2].max(0)
            pad = 0.1 * (high - low)
            low, high = np.maximum(low - pad, 0), np.minimum(high + pad, [width - 1, height - 1])
            box = [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": PERSON_CATEGORY,
                                "keypoints": [round(float(v), 2) for v in keypoints.ravel()],
                                "num_keypoints": int((keypoints[:, 2] > 0).sum()), "bbox": box,
                                "area": 0.5 * box[2] * box[3], "iscrowd": 0})
        if crowd is not None:
            x0, y0, x1, y1 = (float(v) for v in crowd)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": PERSON_CATEGORY,
                                "keypoints": [0] * 3 * COCO_PERSON.num_keypoints, "num_keypoints": 0,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 1,
                                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    category = {"id": PERSON_CATEGORY, "name": "person", "supercategory": "person",
                "keypoints": list(COCO_PERSON.names),
                "skeleton": [[COCO_PERSON.names.index(a) + 1, COCO_PERSON.names.index(b) + 1]
                             for a, b in COCO_PERSON.limbs]}
    path = os.path.join(output_dir, f"people_{split}.json")
    return write_json(path, {"images": images, "annotations": annotations, "categories": [category]}, indent=None)
