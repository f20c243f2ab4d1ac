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
images evaluated and returns its ten standard figures, `STAT_NAMES`;
`evaluate_people` runs a model over a file's images and scores them (what
`evaluate.py` and the training's `KeypointAPCallback` do).
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from keras_hourglass.data.coco import PERSON_CATEGORY

STAT_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")


def format_stats(stats: dict) -> str:
    """The ten figures on one line: `AP 0.123  AP .5 0.544  ...`."""
    return "  ".join(f"{name} {stats[name]:.3f}" for name in STAT_NAMES)


def ap_report(stats: dict, images: int, people_found: int, flip_test: bool, **extra) -> dict:
    """What `metrics.json` holds for a multi-person model (`evaluate.py` and a training run write the same)."""
    return {"metric": "COCO keypoint AP", "images": images, "people_found": people_found,
            "flip_test": bool(flip_test), **extra, **{name: stats[name] for name in STAT_NAMES}}


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


def person_ground_truth(annotations: str) -> dict:
    """What pycocotools reads of a COCO keypoint file that `keras_hourglass.data.people.load_people` has checked:
    its images, its person annotations (with `num_keypoints` counted where the file leaves it out) and its person
    category; the rest of the file, which nothing checked, is left out."""
    from keras_hourglass.data.people import read_coco_json

    data = read_coco_json(annotations)
    people = []
    for person in data["annotations"]:
        if isinstance(person, dict) and person.get("category_id") == PERSON_CATEGORY:
            person = dict(person)
            person.setdefault("num_keypoints", sum(1 for v in person["keypoints"][2::3] if v > 0))
            people.append(person)
    return {"images": [image for image in data["images"] if isinstance(image, dict)], "annotations": people,
            "categories": [c for c in data["categories"] if isinstance(c, dict) and c.get("id") == PERSON_CATEGORY]}


def keypoint_ap(annotations: str, results: list[dict], image_ids) -> dict:
    """The ten COCO keypoint figures (`STAT_NAMES`) of `results` on `image_ids` of the COCO keypoint file
    `annotations`; pycocotools' own printout is kept under `"table"`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools prints as it goes
        truth = COCO()
        truth.dataset = person_ground_truth(annotations)
        truth.createIndex()
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


def evaluate_people(model, people, codec=None, flip_test: bool = True, progress=None) -> tuple[dict, list[dict]]:
    """`(keypoint_ap's figures, the results)` of a multi-person model on `people` (`load_people(...,
    with_keypoints=False)`): `keras_hourglass.multiperson.predict_people` on each image, then pycocotools.

    `model` is a `MultiPersonModel` (a SavedModel, or `multi_person_model_from_keras` while training);
    `progress(done, total, people found)` is called after each image.
    """
    from keras_hourglass.data.records import decode_photo, read_image_file
    from keras_hourglass.multiperson import predict_people

    results = []
    for count, (image_id, path) in enumerate(zip(people.image_ids, people.image_paths), 1):
        data, problem = read_image_file(path)
        image, problem = (None, problem) if problem else decode_photo(data, path)
        if problem:
            raise ValueError(f"{people.source}: {problem}.")
        results += keypoint_results(int(image_id), *predict_people(model, image, codec, flip_test))
        if progress:
            progress(count, len(people), len(results))
    return keypoint_ap(people.source, results, [int(i) for i in people.image_ids]), results
