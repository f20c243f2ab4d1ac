"""COCO keypoint AP (object keypoint similarity) of a multi-person model, by `pycocotools`, the benchmark's own code.

`keypoint_results` writes one image's people as COCO results entries the
way pose-ae-train's `test.py` (`genDtByPred`) does: every joint with
visibility 1, a joint the person lacks placed at the mean of the joints it
has, and the person's score (the mean of its first-pass joint values,
`AssociativeEmbeddingCodec.decode_people`'s `person_scores`). Coordinates
are written as this project reads COCO keypoints (`keras_hourglass.data.coco`:
0-based pixels, pixel centres at integers); the reference's are half a pixel
larger, a shift OKS hardly sees (a quarter of a pixel on average against
tolerances of several pixels).

`keypoint_ap` runs `pycocotools.cocoeval.COCOeval(..., "keypoints")` on the
images evaluated and returns its ten standard figures, `STAT_NAMES`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os

import numpy as np

from keras_hourglass.data.coco import PERSON_CATEGORY

MAX_ANNOTATIONS_BYTES = 2**30  # COCO's train2017 keypoint file is 238 MB
STAT_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")


def keypoint_results(image_id, keypoints, scores, person_scores) -> list[dict]:
    """COCO keypoint results of one image's people: `keypoints [P, K, 2]`, `scores [P, K]` (0: lacking), `[P]`."""
    entries = []
    for points, joint_scores, score in zip(np.asarray(keypoints, np.float64), np.asarray(scores),
                                           np.asarray(person_scores)):
        found = joint_scores > 0
        if not found.any():
            continue
        placed = np.where(found[:, None], points, points[found].mean(axis=0))
        values = np.concatenate([placed, np.ones((len(placed), 1))], axis=1)
        entries.append({"image_id": image_id, "category_id": PERSON_CATEGORY,
                        "keypoints": [float(v) for v in values.ravel()], "score": float(score)})
    return entries


def keypoint_ap(annotations: str, results: list[dict], image_ids) -> dict:
    """The ten COCO keypoint figures (`STAT_NAMES`) of `results` on `image_ids` of the COCO keypoint file
    `annotations`; pycocotools' own printout is kept under `"table"`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools prints as it goes
        truth = COCO(annotations)
        if not results:  # loadRes refuses an empty list: nobody found anywhere scores 0 everywhere
            return {**{name: 0.0 for name in STAT_NAMES}, "table": "no person found in any image"}
        found = truth.loadRes(copy.deepcopy(results))  # loadRes adds id, area and bbox to the dicts it is given
        evaluation = COCOeval(truth, found, "keypoints")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    table = "\n".join(line for line in printed.getvalue().splitlines() if "Average" in line)
    return {**{name: float(value) for name, value in zip(STAT_NAMES, evaluation.stats)}, "table": table}


def read_keypoint_images(annotations: str, image_dir: str, num_joints: int) -> list[tuple]:
    """`[(image id, image path)]` of a COCO keypoint file's images with people (not crowds) annotated, in id order.

    The file is checked first as pycocotools will read it (image ids and file names, each person annotation's
    `id`, `image_id`, `keypoints` of `num_joints` finite (x, y, v), `bbox`, `area` and `iscrowd`, a person
    category with `num_joints` keypoint names): a malformed file is one error naming the field, before the model
    runs, and not pycocotools' traceback after it.
    """
    try:
        with open(annotations, "rb") as f:
            data = json.loads(f.read(MAX_ANNOTATIONS_BYTES + 1))
    except (OSError, ValueError, RecursionError) as error:
        raise ValueError(f"{annotations}: cannot read it as COCO keypoint JSON ({str(error)[:200]}).") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise ValueError(f"{annotations}: not a COCO keypoint file: expected an object with the lists images, "
                         "annotations and categories.")
    images = {}
    for index, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and _is_int(image.get("id")) and isinstance(image.get("file_name"), str)):
            raise ValueError(f"{annotations}: images[{index}] must have an integer id and a file_name.")
        images[image["id"]] = image["file_name"]
    persons = [c for c in data["categories"] if isinstance(c, dict) and c.get("id") == PERSON_CATEGORY]
    if len(persons) != 1 or not isinstance(persons[0].get("keypoints"), list) \
            or len(persons[0]["keypoints"]) != num_joints:
        raise ValueError(f"{annotations}: categories must hold one person category (id {PERSON_CATEGORY}) with "
                         f"{num_joints} keypoint names, the model's joints.")
    annotated = set()
    for index, person in enumerate(data["annotations"]):
        where = f"{annotations}: annotations[{index}]"
        if not isinstance(person, dict):
            raise ValueError(f"{where} must be an object.")
        if person.get("category_id") != PERSON_CATEGORY:
            continue
        if not (_is_int(person.get("id")) and _is_int(person.get("image_id")) and person.get("iscrowd") in (0, 1)):
            raise ValueError(f"{where}: needs an integer id and image_id, and iscrowd 0 or 1.")
        if person["image_id"] not in images:
            raise ValueError(f"{where}: image_id {person['image_id']} is not in images.")
        keypoints = person.get("keypoints")
        if not (isinstance(keypoints, list) and len(keypoints) == 3 * num_joints and _finite(keypoints)):
            raise ValueError(f"{where}: keypoints must be {3 * num_joints} finite numbers (x, y, v per joint).")
        bbox, area = person.get("bbox"), person.get("area")
        if not (isinstance(bbox, list) and len(bbox) == 4 and _finite(bbox) and _finite([area])):
            raise ValueError(f"{where}: needs a bbox of 4 finite numbers and a finite area.")
        if not person["iscrowd"]:
            annotated.add(person["image_id"])
    return [(image_id, os.path.join(image_dir, images[image_id])) for image_id in sorted(annotated)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
