"""MPII Human Pose loaders: the official release `.mat`, the HDF5 layout and the JSON layout.

All three give the same `PoseRecords` (16 joints, `keras_hourglass.joints.MPII`):

* coordinates: MPII's are MATLAB pixels (first pixel centred at 1); 1 is
  subtracted from joints and centres on reading (`coordinate_offset = 1`), as
  HRNet does, and added back by `PoseRecords.to_source_pixels`;
* person box: the raw annotation's `objpos` and `scale` are adjusted exactly
  once, `center_y += 15 * scale` then `scale *= 1.25` (pose-hg-train, HRNet).
  The release `.mat` and the JSON layout hold raw values and are adjusted on
  reading; the HDF5 layout (`valid.h5`) holds adjusted values and is not;
* annotated: a joint with an `annopoints` entry (release), a non-(0, 0)
  position (HDF5), or `joints_vis == 1` (JSON). MPII's `is_visible` /
  `visible` is the occlusion flag and goes to `visible`;
* normaliser: the head size `0.6 * ||head-box diagonal||` (the release's
  `x1 y1 x2 y2`, the HDF5 `normalize`); the JSON layout has no head boxes,
  so its normaliser is NaN (unknown) unless the file has `head_size`.

The standard validation split is the 2958 people of `valid.h5` (Tompson et
al.); `split_by_reference` separates them from release records.
"""

from __future__ import annotations

import json
import os

import numpy as np
import scipy.io

from keras_hourglass.data.records import MATLAB_OFFSET, PoseRecords, join_image_dir, read_h5
from keras_hourglass.joints import MPII
from keras_hourglass.metrics import HEAD_SIZE_FACTOR
from keras_hourglass.transforms import SCALE_MARGIN, box_to_center_scale

CENTER_SHIFT = 15.0  # centre y moves down by 15 * raw scale


def adjust_person_box(center, scale):
    """Applies MPII's usual adjustment to raw `objpos` `[..., 2]` and `scale` `[...]`."""
    center = np.array(center, np.float64)
    scale = np.asarray(scale, np.float64)
    center[..., 1] += CENTER_SHIFT * scale
    return center, scale * SCALE_MARGIN


def load_mpii_h5(path, image_dir=None) -> PoseRecords:
    """Loads the HDF5 layout (`imgname`, `center`, `scale`, `part`, `visible`, `normalize`, ...)."""
    path = os.fspath(path)
    data = read_h5(path, ("imgname", "center", "scale", "part", "visible", "normalize"), "MPII")
    part = np.asarray(data["part"], np.float64)
    if part.ndim != 3 or part.shape[1:] != (MPII.num_keypoints, 2):
        raise ValueError(f"{path}: field 'part' must have shape [N, 16, 2], got {part.shape}.")
    annotated = ~np.all(part == 0, axis=-1)
    ids = [
        f"{os.path.basename(path)}:{row}" + (f" (annolist {int(i)}, person {int(p)})" if "index" in data else "")
        for row, (i, p) in enumerate(zip(data.get("index", np.zeros(len(part))), data.get("person", np.zeros(len(part)))))
    ]
    return PoseRecords(
        spec=MPII,
        image_path=join_image_dir(data["imgname"], image_dir),
        keypoints=np.where(annotated[..., None], part - MATLAB_OFFSET, 0),
        annotated=annotated,
        visible=np.asarray(data["visible"]) > 0,
        center=np.asarray(data["center"], np.float64) - MATLAB_OFFSET,
        scale=data["scale"],
        normalizer=data["normalize"],
        id=ids,
        source=path,
        coordinate_offset=MATLAB_OFFSET,
    )


def load_mpii_json(path, image_dir=None) -> PoseRecords:
    """Loads the JSON layout: a list of `{image, center, scale, joints, joints_vis}` (raw centre and scale)."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            entries = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of people, got {type(entries).__name__}.")
    rows = []
    for row, entry in enumerate(entries):
        try:
            joints = np.asarray(entry["joints"], np.float64)
            joints_vis = np.asarray(entry["joints_vis"], np.float64)
            rows.append((entry["image"], joints, joints_vis, entry["center"], entry["scale"], entry.get("head_size")))
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"{path}: person {row} lacks a field or has a malformed one ({error!r}); expected "
                "image, center, scale, joints [16, 2] and joints_vis [16]."
            ) from None
        if joints.shape != (MPII.num_keypoints, 2) or joints_vis.shape != (MPII.num_keypoints,):
            raise ValueError(
                f"{path}: person {row}: joints must be [16, 2] and joints_vis [16], got {joints.shape} and {joints_vis.shape}."
            )
    images, joints, joints_vis, centers, scales, head_sizes = zip(*rows) if rows else ((),) * 6
    center, scale = adjust_person_box(np.reshape(centers, (-1, 2)), np.asarray(scales, np.float64))
    annotated = np.asarray(joints_vis, np.float64).reshape(-1, MPII.num_keypoints) > 0
    keypoints = np.asarray(joints, np.float64).reshape(-1, MPII.num_keypoints, 2) - MATLAB_OFFSET
    return PoseRecords(
        spec=MPII,
        image_path=join_image_dir(images, image_dir),
        keypoints=np.where(annotated[..., None], keypoints, 0),
        annotated=annotated,
        visible=annotated,
        center=center - MATLAB_OFFSET,
        scale=scale,
        normalizer=[np.nan if h is None else h for h in head_sizes],
        id=[f"{os.path.basename(path)}:{row}" for row in range(len(rows))],
        source=path,
        coordinate_offset=MATLAB_OFFSET,
    )


def _as_list(value):
    """MATLAB struct arrays load as a struct, an array of structs or an empty array."""
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _number(value, default=np.nan):
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return default
        value = value.ravel()[0]
    if isinstance(value, str):
        value = value.strip()
        return float(value) if value else default
    return float(value)


def load_mpii_release(path, image_dir=None, split="train") -> PoseRecords:
    """Loads people from the official release `mpii_human_pose_v1_u12_1.mat`.

    Args:
        path: the release file (`RELEASE` with `annolist`, `img_train`, ...).
        image_dir: folder of the images, joined to the names in the file.
        split: `"train"` for people with joint annotations in training
            images (`img_train == 1`; the test images have none). The
            standard validation people are among them: separate them with
            `split_by_reference(records, load_mpii_h5("valid.h5"))`.

    Returns:
        `PoseRecords` whose ids are `"annolist I, person P"` (0-based).
    """
    path = os.fspath(path)
    if split != "train":
        raise ValueError(f"split must be 'train' (the release has no joints for test images), got {split!r}.")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        release = mat["RELEASE"]
        annolist = _as_list(release.annolist)
        img_train = np.asarray(release.img_train).ravel()
    except (KeyError, AttributeError, ValueError, OSError) as error:
        raise ValueError(f"{path}: not an MPII release file (RELEASE.annolist, RELEASE.img_train): {error}") from None
    if len(img_train) != len(annolist):
        raise ValueError(f"{path}: RELEASE.img_train has {len(img_train)} entries, annolist {len(annolist)}.")
    columns = {k: [] for k in ("image", "keypoints", "annotated", "visible", "center", "scale", "normalizer", "id")}
    for index, (annotation, is_train) in enumerate(zip(annolist, img_train)):
        if not is_train:
            continue
        name = annotation.image.name
        for person, rect in enumerate(_as_list(getattr(annotation, "annorect", np.empty(0)))):
            points = getattr(getattr(rect, "annopoints", None), "point", None)
            if points is None or not hasattr(rect, "scale") or not hasattr(rect, "objpos"):
                continue  # a person without joints (or without a box) is not a pose example
            where = f"{path}: annolist {index} ({name}), person {person}"
            keypoints = np.zeros((MPII.num_keypoints, 2))
            annotated = np.zeros(MPII.num_keypoints, bool)
            visible = np.zeros(MPII.num_keypoints, bool)
            for point in _as_list(points):
                joint = int(_number(point.id))
                if not 0 <= joint < MPII.num_keypoints:
                    raise ValueError(f"{where}: joint id {joint} is outside 0..15.")
                keypoints[joint] = _number(point.x), _number(point.y)
                annotated[joint] = True
                visible[joint] = _number(getattr(point, "is_visible", 1), default=0) > 0
            try:
                objpos = np.array([_number(rect.objpos.x), _number(rect.objpos.y)])
                head_box = np.array([[_number(rect.x1), _number(rect.y1)], [_number(rect.x2), _number(rect.y2)]])
            except AttributeError as error:
                raise ValueError(f"{where}: missing field ({error}).") from None
            center, scale = adjust_person_box(objpos, _number(rect.scale))
            columns["image"].append(name)
            columns["keypoints"].append(np.where(annotated[:, None], keypoints - MATLAB_OFFSET, 0))
            columns["annotated"].append(annotated)
            columns["visible"].append(visible)
            columns["center"].append(center - MATLAB_OFFSET)
            columns["scale"].append(scale)
            columns["normalizer"].append(HEAD_SIZE_FACTOR * np.linalg.norm(head_box[1] - head_box[0]))
            columns["id"].append(f"annolist {index}, person {person}")
    return PoseRecords(
        spec=MPII,
        image_path=join_image_dir(columns.pop("image"), image_dir),
        source=path,
        coordinate_offset=MATLAB_OFFSET,
        **columns,
    )


def split_by_reference(records: PoseRecords, reference: PoseRecords):
    """Splits release records into (others, the reference's people), matched by image and centre.

    Use with `reference = load_mpii_h5("valid.h5")` for the standard
    train/validation split. The returned validation records follow the
    reference's row order.
    """
    key = {}
    for row, (path, center) in enumerate(zip(records.image_path, records.center)):
        key.setdefault(os.path.basename(path), []).append((row, center))
    chosen = []
    for ref_row, (path, center) in enumerate(zip(reference.image_path, reference.center)):
        candidates = key.get(os.path.basename(path), [])
        if not candidates:
            raise ValueError(f"{reference.source}: row {ref_row} ({path}) has no person in {records.source}.")
        row, _ = min(candidates, key=lambda c: np.linalg.norm(c[1] - center))
        chosen.append(row)
    mask = np.ones(len(records), bool)
    mask[chosen] = False
    return records.select(np.flatnonzero(mask)), records.select(np.asarray(chosen))


def load_mpii_detections(path) -> PoseRecords:
    """Loads the ground truth of the evaluation file `detections_our_format.mat`.

    The file the MPII evaluation code reads (`pos_gt_src` `[16, 2, N]`,
    `jnt_missing` `[16, N]`, `headboxes_src` `[2, 2, N]`), in the row order of
    `valid.h5`, with unrounded coordinates: the reference for the published
    tables. It has no image names and no person boxes; the records' centre
    and scale are derived from the annotated joints (their box, with
    `SCALE_MARGIN`) so that they are valid, and the images are empty strings:
    these records are for scoring predictions, not for cropping images.
    """
    path = os.fspath(path)
    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable MATLAB file ({error}).") from None
    for field in ("pos_gt_src", "jnt_missing", "headboxes_src"):
        if field not in mat:
            raise ValueError(f"{path}: missing field {field!r} of detections_our_format.mat.")
    keypoints = np.asarray(mat["pos_gt_src"], np.float64).transpose(2, 0, 1)
    if keypoints.shape[1:] != (MPII.num_keypoints, 2):
        raise ValueError(f"{path}: field 'pos_gt_src' must have shape [16, 2, N], got {mat['pos_gt_src'].shape}.")
    annotated = np.asarray(mat["jnt_missing"]).T == 0
    head_boxes = np.asarray(mat["headboxes_src"], np.float64).transpose(2, 0, 1)
    normalizer = HEAD_SIZE_FACTOR * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=-1)
    keypoints = np.where(annotated[..., None], keypoints - MATLAB_OFFSET, 0.0)
    low = np.where(annotated[..., None], keypoints, np.inf).min(1)
    high = np.where(annotated[..., None], keypoints, -np.inf).max(1)
    some = annotated.any(1)
    low = np.where(some[:, None], low, -0.5)  # people without a joint get a valid 1-pixel box
    high = np.where(some[:, None], np.maximum(high, low + 1.0), 0.5)
    center, scale = box_to_center_scale(low, high)
    return PoseRecords(
        spec=MPII,
        image_path=[""] * len(keypoints),
        keypoints=keypoints,
        annotated=annotated,
        visible=annotated,
        center=center,
        scale=scale,
        normalizer=normalizer,
        id=[f"{os.path.basename(path)}:{row}" for row in range(len(keypoints))],
        source=path,
        coordinate_offset=MATLAB_OFFSET,
    )
