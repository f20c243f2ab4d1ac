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
import io
import json
import os

import numpy as np

from keras_hourglass.data.coco import PERSON_CATEGORY

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
        found = truth.loadRes(results)
        evaluation = COCOeval(truth, found, "keypoints")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    table = "\n".join(line for line in printed.getvalue().splitlines() if "Average" in line)
    return {**{name: float(value) for name, value in zip(STAT_NAMES, evaluation.stats)}, "table": table}


def read_keypoint_images(annotations: str, image_dir: str) -> list[tuple]:
    """`[(image id, image path)]` of a COCO keypoint file's images that have person annotations, in id order."""
    try:
        with open(annotations, "rb") as f:
            data = json.load(f)
        images = {image["id"]: image["file_name"] for image in data["images"]}
        annotated = {a["image_id"] for a in data["annotations"] if a.get("category_id") == PERSON_CATEGORY}
    except (OSError, ValueError, RecursionError) as error:
        raise ValueError(f"{annotations}: cannot read it as COCO keypoint JSON ({str(error)[:200]}).") from None
    except (KeyError, TypeError) as error:
        raise ValueError(f"{annotations}: not a COCO keypoint file (images, annotations): missing {error}.") from None
    missing = sorted(annotated - set(images))
    if missing:
        raise ValueError(f"{annotations}: annotations name image ids {missing[:5]} that are not in images.")
    return [(image_id, os.path.join(image_dir, images[image_id])) for image_id in sorted(annotated)]
