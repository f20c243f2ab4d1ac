"""COCO keypoint AP of a multi-person model, by pycocotools: the results format, the figures, `evaluate.py`."""

import json

import numpy as np
import pytest

from keras_hourglass.coco_ap import STAT_NAMES, keypoint_ap, keypoint_results
from keras_hourglass.joints import COCO_PERSON
from tests.conftest import ROOT

TWO_PEOPLE = "052475643.jpg"  # two men seated side by side, 854x480


def two_men():
    """Hand-placed COCO keypoints of the two men (plausible, not a benchmark's labels): `[2, 17, 2]`."""
    rng = np.random.default_rng(0)
    people = []
    for left in (260.0, 450.0):
        x = left + rng.uniform(20, 150, 17)
        y = np.linspace(130, 440, 17) + rng.uniform(-10, 10, 17)
        people.append(np.stack([x, y], axis=1))
    return np.array(people)


def write_annotations(path, people):
    annotations = []
    for index, points in enumerate(people):
        x1, y1 = points.min(0)
        x2, y2 = points.max(0)
        annotations.append({"id": index + 1, "image_id": 52475643, "category_id": 1, "iscrowd": 0,
                            "keypoints": [float(v) for v in np.concatenate([points, np.full((17, 1), 2)], 1).ravel()],
                            "num_keypoints": 17, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_PERSON.names),
                "skeleton": []}
    path.write_text(json.dumps({"images": [{"id": 52475643, "file_name": TWO_PEOPLE, "width": 854, "height": 480}],
                                "annotations": annotations, "categories": [category]}))
    return str(path)


def test_results_fill_a_missing_joint_as_the_reference_does():
    keypoints = np.zeros((2, 17, 2))
    keypoints[0, :, 0], keypoints[0, :, 1] = np.arange(17), 2 * np.arange(17)
    scores = np.ones((2, 17))
    scores[0, 3] = 0  # lacked: placed at the mean of the joints it has, visibility 1 as every joint
    scores[1] = 0  # nobody: no entry
    (entry,) = keypoint_results(7, keypoints, scores, [0.4, 0.1])
    values = np.reshape(entry["keypoints"], (17, 3))
    has = np.arange(17) != 3
    np.testing.assert_allclose(values[3, :2], keypoints[0][has].mean(0))
    np.testing.assert_allclose(values[has, :2], keypoints[0][has])
    assert (values[:, 2] == 1).all() and entry["score"] == 0.4 and entry["image_id"] == 7
    assert entry["category_id"] == 1


def test_the_truth_scores_one_and_a_shift_scores_less(tmp_path):
    people = two_men()
    annotations = write_annotations(tmp_path / "truth.json", people)
    scores = np.ones((2, 17))
    perfect = keypoint_ap(annotations, keypoint_results(52475643, people, scores, [0.9, 0.8]), [52475643])
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AR"] == pytest.approx(1.0)
    assert "Average Precision" in perfect["table"] and set(STAT_NAMES) <= set(perfect)
    shifted = keypoint_ap(annotations, keypoint_results(52475643, people + 12, scores, [0.9, 0.8]), [52475643])
    assert 0 <= shifted["AP"] < 0.9
    assert keypoint_ap(annotations, [], [52475643])["AP"] == 0.0


@pytest.fixture(scope="module")
def multi_person_model(tmp_path_factory):
    """The pose-ae-train fixture network imported at 64x64 (untrained weights): its SavedModel."""
    from keras_hourglass.cli import import_weights

    folder = tmp_path_factory.mktemp("coco_ap") / "ae"
    checkpoint = ROOT / "tests" / "data" / "associative_embedding" / "ae_s2_w8_legacy.pt"
    assert import_weights.main([str(checkpoint), "--output", str(folder), "--image-size", "64", "--no-tflite"]) == 0
    return str(folder / "saved_model")


def test_evaluate_prints_the_coco_table_of_a_multi_person_model(multi_person_model, shared_data, tmp_path, capsys):
    from keras_hourglass.cli import evaluate

    annotations = write_annotations(tmp_path / "truth.json", two_men())
    assert evaluate.main(["--model", multi_person_model, "--annotations", annotations,
                          "--image-dir", str(shared_data / "mpii" / "images"), "--detection-threshold", "0.05",
                          "--output", str(tmp_path / "eval"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "COCO keypoint AP, pycocotools" in out and "AP .5" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    results = json.loads((tmp_path / "eval" / "keypoints_results.json").read_text())
    assert metrics["people_found"] == len(results) > 0 and 0 <= metrics["AP"] <= 1  # untrained: near 0
    assert all(r["image_id"] == 52475643 and len(r["keypoints"]) == 51 for r in results)
    assert all(sorted(r) == ["category_id", "image_id", "keypoints", "score"] for r in results)  # as written


def test_bad_coco_inputs_are_one_line(multi_person_model, tmp_path, capsys):
    from keras_hourglass.cli import evaluate
    from tests.conftest import one_line_error

    model = multi_person_model
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    for argv, message in ((["--annotations", str(bad)], "--image-dir is needed"),
                          (["--annotations", str(bad), "--image-dir", str(tmp_path)], "not a COCO keypoint file"),
                          (["--annotations", "[", "--image-dir", str(tmp_path)], "cannot read it as COCO keypoint JSON")):
        assert message in one_line_error(evaluate.main, ["--model", model, *argv], capsys)
    line = one_line_error(evaluate.main, ["--model", str(ROOT / "tests" / "data" / "synthetic_small.keras"),
                                          "--annotations", str(bad), "--detection-threshold", "0.2"], capsys)
    assert "--detection-threshold is for multi-person SavedModels" in line


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("categories"), "expected an object with the lists images, annotations and categories"),
    (lambda d: d["annotations"][0].pop("bbox"), "annotations[0]: needs a bbox of 4 finite numbers"),
    (lambda d: d["annotations"][0].update(keypoints="x"), "annotations[0]: keypoints must be 51 finite numbers"),
    (lambda d: d["annotations"][1].update(keypoints=[float("nan")] * 51), "annotations[1]: keypoints must be 51"),
    (lambda d: d["annotations"][0].pop("iscrowd"), "iscrowd 0 or 1"),
    (lambda d: d["images"][0].update(file_name=5), "images[0] must have an integer id (0 to 2^63 - 1) and a file_name"),
    (lambda d: d["categories"][0].update(keypoints=d["categories"][0]["keypoints"][:16]), "17 keypoint names"),
    (lambda d: d.update(annotations=[1, 2]), "annotations[0] must be an object"),
    (lambda d: [a.update(iscrowd=1) for a in d["annotations"]], "no image has a person annotated"),
])
def test_a_malformed_coco_file_is_one_line_before_the_model_runs(multi_person_model, shared_data, tmp_path, capsys,
                                                                  change, message):
    from keras_hourglass.cli import evaluate
    from tests.conftest import one_line_error

    path = write_annotations(tmp_path / "truth.json", two_men())
    data = json.loads(open(path).read())
    change(data)
    (tmp_path / "truth.json").write_text(json.dumps(data))
    line = one_line_error(evaluate.main, ["--model", multi_person_model, "--annotations", path, "--image-dir",
                                          str(shared_data / "mpii" / "images"), "--quiet"], capsys)
    assert message in line
