"""COCO keypoint JSON: the format labelling tools export, for custom data.

One person per annotation: `keypoints` is `[x1, y1, v1, x2, y2, v2, ...]`
with `v = 0` not labelled, 1 labelled but hidden, 2 labelled and visible;
`bbox` is `[x, y, width, height]`. Joint names and the skeleton come from the
file's `categories` (or are given); left/right partners are the name pairs
`left_*`/`right_*` (or `l_*`/`r_*`), or given. COCO coordinates are 0-based
pixels, used as they are.

Person box: centre of the bbox, scale `max(width, height) / 200 * 1.25`
(the MPII margin). Normaliser: by default the bbox size `max(width,
height)` (mmpose's `bbox` normalisation), or the distance between two named
joints (`normalizer_joints=("right_shoulder", "left_hip")`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Sequence

import numpy as np

from keras_hourglass.data.records import PoseRecords, join_image_dir
from keras_hourglass.joints import JointSpec, infer_flip_partners
from keras_hourglass.transforms import box_to_center_scale

def spec_from_category(category: dict, name: str = "coco", flip_partners=None) -> JointSpec:
    """A `JointSpec` from a COCO category (`keypoints` names, 1-based `skeleton`)."""
    names = tuple(category["keypoints"])
    limbs = tuple((names[a - 1], names[b - 1]) for a, b in category.get("skeleton", []))
    partners = infer_flip_partners(names) if flip_partners is None else tuple(map(tuple, flip_partners))
    return JointSpec(name=name, names=names, flip_partners=partners, limbs=limbs, mean_joints=names)


def load_coco(
    path,
    image_dir=None,
    category_id=None,
    spec: JointSpec | None = None,
    normalizer_joints: Sequence[str] | None = None,
) -> PoseRecords:
    """Loads people with at least one labelled keypoint from a COCO keypoint file.

    Args:
        path: the JSON file.
        image_dir: folder that `images[].file_name` is relative to.
        category_id: which category to read; default: the only one with
            keypoints.
        spec: joint metadata to use instead of the file's category.
        normalizer_joints: two joint names whose distance is the metric's
            normaliser; default: the bbox size.

    Returns:
        `PoseRecords`; ids are `"annotation <id>"`.
    """
    path = os.fspath(path)
    try:
        with open(path) as f:
            data = json.load(f)
        images = {image["id"]: image["file_name"] for image in data["images"]}
        annotations = data["annotations"]
        categories = [c for c in data["categories"] if c.get("keypoints")]
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a COCO keypoint file (images, annotations, categories): missing {error}.") from None
    if category_id is None:
        if len(categories) != 1:
            raise ValueError(f"{path}: {len(categories)} categories have keypoints; pass category_id.")
        category = categories[0]
    else:
        matches = [c for c in categories if c["id"] == category_id]
        if not matches:
            raise ValueError(f"{path}: no keypoint category with id {category_id}.")
        category = matches[0]
    spec = spec or spec_from_category(category, name=os.path.splitext(os.path.basename(path))[0])
    num_keypoints = spec.num_keypoints
    if normalizer_joints is not None:
        unknown = [j for j in normalizer_joints if j not in spec.names]
        if unknown or len(set(normalizer_joints)) != 2:
            raise ValueError(f"{path}: the normalizer joints must be two different joints of this file; got "
                             f"{list(normalizer_joints)}" + (f" ({unknown} unknown)" if unknown else "")
                             + f"; its joints are {', '.join(spec.names)}.")
    pair = None if normalizer_joints is None else spec.indices(normalizer_joints)
    columns = {k: [] for k in ("image", "keypoints", "annotated", "visible", "center", "scale", "normalizer", "id")}
    for annotation in annotations:
        if annotation.get("category_id") != category["id"]:
            continue
        where = f"{path}: annotation {annotation.get('id')}"
        values = np.asarray(annotation.get("keypoints", []), np.float64)
        if values.shape != (3 * num_keypoints,):
            raise ValueError(f"{where}: keypoints must have {3 * num_keypoints} values, got {values.size}.")
        values = values.reshape(num_keypoints, 3)
        labelled = values[:, 2] > 0
        if not labelled.any():
            continue  # a box with no labelled joint is not a pose example
        bbox = np.asarray(annotation.get("bbox", []), np.float64)
        if bbox.shape != (4,) or not (bbox[2] > 0 and bbox[3] > 0):
            raise ValueError(f"{where}: bbox must be [x, y, width, height] with positive size, got {bbox.tolist()}.")
        if annotation.get("image_id") not in images:
            raise ValueError(f"{where}: image_id {annotation.get('image_id')} is not in images.")
        corners = coco_box_corners(bbox)  # COCO boxes run from pixel edges; ours are pixel centres
        center, scale = box_to_center_scale(corners[:2], corners[2:])
        if pair is None:
            normalizer = max(bbox[2], bbox[3])
        elif labelled[pair].all():
            normalizer = np.linalg.norm(values[pair[0], :2] - values[pair[1], :2])
        else:
            normalizer = np.nan
        columns["image"].append(images[annotation["image_id"]])
        columns["keypoints"].append(np.where(labelled[:, None], values[:, :2], 0))
        columns["annotated"].append(labelled)
        columns["visible"].append(values[:, 2] > 1)
        columns["center"].append(center)
        columns["scale"].append(scale)
        columns["normalizer"].append(normalizer)
        columns["id"].append(f"annotation {annotation.get('id')}")
    names = columns.pop("image")
    return PoseRecords(
        spec=spec,
        image_path=join_image_dir(names, image_dir),
        keypoints=np.reshape(columns.pop("keypoints"), (-1, num_keypoints, 2)),
        annotated=np.reshape(columns.pop("annotated"), (-1, num_keypoints)),
        visible=np.reshape(columns.pop("visible"), (-1, num_keypoints)),
        center=np.reshape(columns.pop("center"), (-1, 2)),
        source=path,
        **columns,
    )


PERSON_CATEGORY = 1  # COCO's `person`
MAX_DETECTIONS_FILE = 512 * 2**20  # bytes: COCO val2017's person detections are about 10 MB
MAX_BOX_COORDINATE = 2**20  # pixels: a box beyond a million pixels from the origin is no photo's
MIN_BOX_SIDE = 1  # pixels: a person box narrower or lower has no crop


def finite_number(value) -> float | None:
    """A JSON number as a finite float, or `None` (not a number, a boolean, NaN, infinite, or too large a float)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return value if math.isfinite(value) else None


def coco_box_corners(bbox) -> np.ndarray:
    """COCO `[x, y, width, height]` (pixel edges) as `(x1, y1, x2, y2)` in this project's pixel-centre coordinates."""
    x, y, width, height = np.asarray(bbox, np.float64)
    return np.array([x - 0.5, y - 0.5, x + width - 0.5, y + height - 0.5])


def read_person_detections(path: str, min_score: float = 0.0) -> dict:
    """Person boxes from a COCO detection-results JSON, by image id.

    The file is the format of the COCO keypoint benchmark's person
    detections: a list of `{"image_id", "category_id", "bbox": [x, y, width,
    height], "score"}`. Only `category_id` 1 (person) is kept, and only
    boxes scoring at least `min_score`. Returns `{image_id: [(box, score),
    ...]}`, boxes as `(x1, y1, x2, y2)` pixel-centre coordinates
    (`coco_box_corners`), highest score first. A malformed entry is an
    error that names its index and field; nothing is skipped silently.
    """
    if not os.path.isfile(path):  # a folder, a device or a pipe is no detections file
        raise ValueError(f"{path}: no such file (a COCO detection-results JSON)." if not os.path.exists(path)
                         else f"{path}: not a regular file; expected a COCO detection-results JSON.")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DETECTIONS_FILE + 1)  # never more than the limit, whatever the size claims
    except OSError as error:
        raise ValueError(f"cannot read the detections file {path}: {error.strerror}.") from None
    if len(data) > MAX_DETECTIONS_FILE:
        raise ValueError(f"{path}: over {MAX_DETECTIONS_FILE:,} bytes; a detections file may have at most that.")
    try:
        entries = json.loads(data)
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, or nested too deep to parse
        raise ValueError(f"{path}: not valid JSON ({type(error).__name__}: {str(error)[:200]}).") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of detections (COCO results: image_id, category_id, bbox, score), "
                         f"got a JSON {type(entries).__name__}.")
    found: dict = {}
    for index, entry in enumerate(entries):
        where = f"{path}: detection {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with image_id, category_id, bbox, score.")
        missing = [k for k in ("image_id", "bbox", "score") if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}.")
        category = entry.get("category_id", PERSON_CATEGORY)
        if not isinstance(category, int) or isinstance(category, bool):
            raise ValueError(f"{where}: category_id must be an integer (1: person), got {category!r}.")
        if category != PERSON_CATEGORY:
            continue
        image_id, bbox, score = entry["image_id"], entry["bbox"], finite_number(entry["score"])
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise ValueError(f"{where}: image_id must be an integer or a string, got {str(image_id)[:80]}.")
        if score is None:
            raise ValueError(f"{where}: score must be a finite number, got {str(entry['score'])[:80]}.")
        values = [finite_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else [None]
        if (None in values or min(values[2:]) < MIN_BOX_SIDE
                or np.abs(coco_box_corners(values)).max() > MAX_BOX_COORDINATE):
            raise ValueError(f"{where}: bbox must be [x, y, width, height], at least {MIN_BOX_SIDE} pixel wide and "
                             f"high, its corners within {MAX_BOX_COORDINATE:,} pixels of the origin; got "
                             f"{str(bbox)[:200]}.")
        bbox = values
        if score >= min_score:
            found.setdefault(image_id, []).append((coco_box_corners(bbox), float(score)))
    for boxes in found.values():
        boxes.sort(key=lambda item: -item[1])
    return found
