import json
import os

import numpy as np
import pytest

from keras_hourglass.cli import predict
from keras_hourglass import MPII
from keras_hourglass.tflite import convert_saved_model
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_saved_model):
    folder = tmp_path_factory.mktemp("predict")
    model, _, saved = tiny_saved_model
    model.save(str(folder / "model.keras"))
    return {"saved": saved, "keras": str(folder / "model.keras"),
            "tflite": convert_saved_model(saved, str(folder / "model.tflite"))}


@pytest.mark.parametrize("kind", ["saved", "keras", "tflite"])
def test_writes_json_and_png_for_a_real_mpii_image(models, kind, shared_data, tmp_path):
    import cv2

    image = sorted((shared_data / "mpii" / "images").glob("*.jpg"))[0]
    # No flip test, as the exported signature has none in its graph.
    assert predict.main(["--model", models[kind], "--input", str(image), "--output", str(tmp_path),
                         "--no-flip-test"]) == 0
    report = json.loads((tmp_path / "keypoints.json").read_text())
    assert report["keypoint_names"] == list(MPII.names) and len(report["results"]) == 1
    (person,) = report["results"][0]["people"]  # one person filling the image, its box the image's edges
    keypoints = np.array(person["keypoints"])
    assert keypoints.shape == (16, 2) and len(person["scores"]) == 16
    height, width = cv2.imread(str(image)).shape[:2]
    assert person["box"] == [-0.5, -0.5, width - 0.5, height - 0.5] and person["box_score"] is None
    assert person["score"] == pytest.approx(np.mean(person["scores"]), abs=1e-3)
    # What the SavedModel's own serving_default signature returns for the image, in image pixels.
    import tensorflow as tf

    signature = tf.saved_model.load(models["saved"]).signatures["serving_default"]
    expected = signature(images=tf.constant(cv2.imread(str(image))[None, ..., ::-1].copy()))["keypoints"][0].numpy()
    np.testing.assert_allclose(keypoints, expected, atol=0.01)  # the JSON rounds to 0.01 px
    overlay = report["results"][0]["overlay"]
    assert os.path.basename(overlay) == image.stem + ".png" and open(overlay, "rb").read(4) == b"\x89PNG"
    assert cv2.imread(overlay).shape == cv2.imread(str(image)).shape  # drawn at the photo's own resolution


def test_same_keypoints_from_the_three_formats(models, shared_data, tmp_path):
    image = str(sorted((shared_data / "mpii" / "images").glob("*.jpg"))[1])
    found = {}
    for kind in models:
        assert predict.main(["--model", models[kind], "--input", image, "--output", str(tmp_path / kind),
                             "--no-overlays"]) == 0
        report = json.loads((tmp_path / kind / "keypoints.json").read_text())
        found[kind] = np.array(report["results"][0]["people"][0]["keypoints"])
    np.testing.assert_allclose(found["saved"], found["keras"], atol=0.05)
    np.testing.assert_allclose(found["saved"], found["tflite"], atol=0.05)


def test_folder_and_video(models, tmp_path):
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (40, 30, 3)).astype(np.uint8))
    (folder / "notes.txt").write_text("ignored")
    assert predict.main(["--model", models["saved"], "--input", str(folder), "--output", str(tmp_path / "o")]) == 0
    assert [r["source"] for r in json.loads((tmp_path / "o" / "keypoints.json").read_text())["results"]] == ["a.png", "b.jpg"]
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for _ in range(5):
        writer.write(rng.integers(0, 255, (24, 32, 3)).astype(np.uint8))
    writer.release()
    assert predict.main(["--model", models["tflite"], "--input", video, "--output", str(tmp_path / "v"),
                         "--every", "2"]) == 0
    report = json.loads((tmp_path / "v" / "keypoints.json").read_text())
    assert [r["source"] for r in report["results"]] == ["clip.avi#frame000000", "clip.avi#frame000002",
                                                         "clip.avi#frame000004"]
    overlay = cv2.VideoCapture(report["overlay_video"])  # the overlays as a video, not one PNG a frame
    assert overlay.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and overlay.get(cv2.CAP_PROP_FPS) == 2.5
    assert (overlay.get(cv2.CAP_PROP_FRAME_WIDTH), overlay.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (32, 24)
    assert not list((tmp_path / "v").glob("*.png")) and not list((tmp_path / "v").glob("*partial*"))


def test_people_in_a_video_keep_their_ids_and_can_be_smoothed(models, shared_data, tmp_path):
    import cv2

    photo = cv2.imread(str(shared_data / "mpii" / "images" / TWO_PEOPLE))
    video = str(tmp_path / "two.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, photo.shape[1::-1])
    for shift in range(4):  # the two men, the camera panning a pixel a frame
        writer.write(np.roll(photo, shift, axis=1))
    writer.release()
    boxes = ["--box", "250,100,420,460", "--box", "440,110,610,460"]
    runs = {}
    for flag in ("--no-flip-test", "--smooth"):
        assert predict.main(["--model", models["saved"], "--input", video, "--output", str(tmp_path / flag),
                             "--no-flip-test", *boxes, *([flag] if flag == "--smooth" else [])]) == 0
        runs[flag] = json.loads((tmp_path / flag / "keypoints.json").read_text())
    plain, smooth = runs["--no-flip-test"], runs["--smooth"]
    assert [[p["id"] for p in r["people"]] for r in plain["results"]] == [[1, 2]] * 4
    assert plain["smoothing"] is None and smooth["smoothing"] == "one-euro" and plain["fps"] == 10
    first = [np.array([p["keypoints"] for p in r["people"]]) for r in (plain["results"][0], smooth["results"][0])]
    np.testing.assert_array_equal(*first)  # the first frame as it is
    later = [np.array([p["keypoints"] for p in r["people"]]) for r in (plain["results"][3], smooth["results"][3])]
    assert np.abs(later[0] - later[1]).max() > 0
    assert cv2.VideoCapture(smooth["overlay_video"]).get(cv2.CAP_PROP_FRAME_COUNT) == 4


TWO_PEOPLE = "052475643.jpg"  # two men seated side by side
TWO_BOXES = [[250.0, 100.0, 420.0, 460.0], [440.0, 110.0, 610.0, 460.0]]  # (x1, y1, x2, y2), pixel centres


def coco_detection(image_id, box, score, category_id=1):
    x1, y1, x2, y2 = box  # COCO boxes run from pixel edges
    return {"image_id": image_id, "category_id": category_id, "bbox": [x1 + 0.5, y1 + 0.5, x2 - x1, y2 - y1],
            "score": score}


def test_every_box_is_a_person_whose_keypoints_are_the_boxes_signatures(models, shared_data, tmp_path):
    import cv2
    import tensorflow as tf

    image = shared_data / "mpii" / "images" / TWO_PEOPLE
    detections = tmp_path / "detections.json"  # image ids: COCO's number for the file's stem
    detections.write_text(json.dumps([
        coco_detection(52475643, TWO_BOXES[1], 0.8), coco_detection(52475643, TWO_BOXES[0], 0.9),
        coco_detection(52475643, [0, 0, 100, 100], 0.95, category_id=3),  # a car: not a person
        coco_detection(52475643, [600, 0, 700, 100], 0.2),  # under --min-box-score
        coco_detection(7, TWO_BOXES[0], 0.9)]))  # an image not among the inputs
    assert predict.main(["--model", models["saved"], "--input", str(image), "--output", str(tmp_path / "file"),
                         "--no-flip-test", "--boxes", str(detections), "--min-box-score", "0.5"]) == 0
    people = json.loads((tmp_path / "file" / "keypoints.json").read_text())["results"][0]["people"]
    assert [p["box"] for p in people] == TWO_BOXES and [p["box_score"] for p in people] == [0.9, 0.8]
    signature = tf.saved_model.load(models["saved"]).signatures["boxes"]
    pixels = cv2.imread(str(image))[..., ::-1].copy()
    expected = signature(images=tf.constant(np.stack([pixels, pixels])), boxes=tf.constant(TWO_BOXES))
    np.testing.assert_allclose([p["keypoints"] for p in people], expected["keypoints"].numpy(), atol=0.01)
    np.testing.assert_allclose([p["scores"] for p in people], expected["scores"].numpy(), atol=1e-4)
    # the same boxes given on the command line: the same people
    assert predict.main(["--model", models["tflite"], "--input", str(image), "--output", str(tmp_path / "argv"),
                         "--no-flip-test", "--box", "250,100,420,460", "--box", "440,110,610,460"]) == 0
    report = json.loads((tmp_path / "argv" / "keypoints.json").read_text())
    np.testing.assert_allclose([p["keypoints"] for p in report["results"][0]["people"]],
                               expected["keypoints"].numpy(), atol=0.05)
    assert cv2.imread(report["results"][0]["overlay"]).shape == pixels.shape


def test_an_image_without_detections_has_no_people(models, tmp_path):
    from tests.conftest import write_image

    write_image(tmp_path / "000012.jpg", 40, 30)
    detections = tmp_path / "d.json"
    detections.write_text(json.dumps([coco_detection("other.jpg", [1, 1, 9, 9], 0.9)]))
    assert predict.main(["--model", models["saved"], "--input", str(tmp_path / "000012.jpg"), "--output",
                         str(tmp_path / "o"), "--boxes", str(detections)]) == 0
    assert json.loads((tmp_path / "o" / "keypoints.json").read_text())["results"][0]["people"] == []


@pytest.mark.parametrize("argv, message", [
    (["--input", "/no/such.jpg"], "/no/such.jpg: no such file or folder"),
    (["--input", __file__], "not an image"),
    (["--input", __file__, "--box", "1,2,3"], "expected X1,Y1,X2,Y2"),
    (["--input", __file__, "--box", "5,2,3,9"], "X2 - X1 and Y2 - Y1 at least 1 pixel"),
    (["--input", __file__, "--box", "100,100,100.0000001,100.0000001"], "at least 1 pixel"),
    (["--input", __file__, "--every", "2"], "--every is for a video"),
    (["--input", __file__, "--output", __file__], "a file is there; give a folder"),
    (["--input", __file__, "--box", "0,0,1e30,5"], "within 1,048,576 pixels"),
    (["--input", __file__, "--min-box-score", "0.3"], "--min-box-score applies to --boxes FILE only"),
    (["--input", __file__, "--smooth"], "--smooth is for a video"),
    (["--input", __file__, "--detection-threshold", "0.2"], "--detection-threshold is for multi-person SavedModels"),
])
def test_bad_input_is_one_clear_line(models, argv, message, tmp_path, capsys):
    assert message in one_line_error(predict.main, ["--model", models["saved"], "--output", str(tmp_path), *argv],
                                     capsys)


def test_a_model_of_another_skeleton_draws_its_own_limbs(tmp_path):
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.export import export_saved_model
    from keras_hourglass.pose_model import load_pose_model
    from tests.conftest import TINY, tiny_model, write_image

    names, limbs = ["left_hand", "right_hand", "nose", "tail"], [("left_hand", "nose"), ("nose", "tail")]
    saved = export_saved_model(tiny_model(1, 4), str(tmp_path / "custom"), HeatmapCodec(TINY["image_size"]), names,
                               limbs=limbs)
    assert load_pose_model(saved).limbs == tuple(limbs)
    write_image(tmp_path / "a.jpg", 40, 30)
    assert predict.main(["--model", saved, "--input", str(tmp_path / "a.jpg"), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert report["keypoint_names"] == names and report["limbs"] == [list(limb) for limb in limbs]


@pytest.mark.parametrize("content, message", [
    ('{"image_id": 1}', "expected a list of detections"),
    ('[{"image_id": 1, "bbox": [0, 0, 5, 5]}]', "detection 0: missing score"),
    ('[{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 1}, {"image_id": 1, "bbox": [0, 0, -5, 5], "score": 1}]',
     "detection 1: bbox must be [x, y, width, height]"),
    ('[{"image_id": [1], "bbox": [0, 0, 5, 5], "score": 1}]', "detection 0: image_id must be"),
    ('[{"image_id": 1, "bbox": [0, 0, 5, 5], "score": NaN}]', "detection 0: score must be a finite number"),
    ('[{"image_id": 1, "bbox": [0, 0, 1e300, 5], "score": 1}]', "detection 0: bbox must be"),
    ("[", "not valid JSON"),
    ("[" * 5000 + "]" * 5000, "not valid JSON (RecursionError"),
    ('[{"image_id": 1, "bbox": [1' + "0" * 400 + ', 0, 5, 5], "score": 1}]', "detection 0: bbox must be"),
    ('[{"image_id": 1, "bbox": [0, 0, 1e-300, 5], "score": 1}]', "at least 1 pixel wide and high"),
    ('[{"image_id": 1, "category_id": "1", "bbox": [0, 0, 5, 5], "score": 1}]', "category_id must be an integer"),
    ('[{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 1' + "0" * 400 + '}]', "score must be a finite number"),
])
def test_a_bad_detections_file_is_one_clear_line_before_the_model_loads(content, message, tmp_path, capsys):
    detections = tmp_path / "d.json"
    detections.write_text(content)
    err = one_line_error(predict.main, ["--model", "/no/model", "--input", __file__, "--output", str(tmp_path / "o"),
                                        "--boxes", str(detections)], capsys)
    assert str(detections) in err and message in err


def test_a_detections_path_that_is_no_regular_file_or_a_bad_score_floor_is_one_line(tmp_path, capsys):
    for path, message in ((tmp_path, "not a regular file"), ("/dev/zero", "not a regular file"),
                          (tmp_path / "none.json", "no such file")):
        err = one_line_error(predict.main, ["--model", "/no/model", "--input", __file__, "--output",
                                            str(tmp_path / "o"), "--boxes", str(path)], capsys)
        assert message in err
    (tmp_path / "d.json").write_text("[]")
    err = one_line_error(predict.main, ["--model", "/no/model", "--input", __file__, "--output", str(tmp_path / "o"),
                                        "--boxes", str(tmp_path / "d.json"), "--min-box-score", "nan"], capsys)
    assert "--min-box-score must be a finite number" in err


def test_boxes_beside_the_image_or_too_many_are_refused_and_ids_of_one_image_are_merged(models, tmp_path, capsys):
    from tests.conftest import write_image

    write_image(tmp_path / "000007.jpg", 40, 30)  # 40 high, 30 wide
    image = str(tmp_path / "000007.jpg")
    err = one_line_error(predict.main, ["--model", models["saved"], "--input", image, "--output", str(tmp_path / "o"),
                                        "--box", "50,0,60,10"], capsys)
    assert "000007.jpg: the box [50.0, 0.0, 60.0, 10.0] lies outside the 30x40 image" in err
    err = one_line_error(predict.main, ["--model", models["saved"], "--input", image, "--output", str(tmp_path / "o"),
                                        *["--box=0,0,9,9"] * 101], capsys)
    assert "101 person boxes; at most 100" in err
    detections = tmp_path / "d.json"  # the same image named by its file name and by its number
    detections.write_text(json.dumps([coco_detection("000007.jpg", [1, 1, 20, 20], 0.5),
                                      coco_detection(7, [10, 5, 35, 28], 0.7)]))
    assert predict.main(["--model", models["saved"], "--input", image, "--output", str(tmp_path / "m"),
                         "--boxes", str(detections)]) == 0
    people = json.loads((tmp_path / "m" / "keypoints.json").read_text())["results"][0]["people"]
    assert [p["box_score"] for p in people] == [0.7, 0.5]
    assert "named none of the inputs" not in capsys.readouterr().out
