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
    keypoints = np.array(report["results"][0]["keypoints"])
    assert keypoints.shape == (16, 2) and len(report["results"][0]["scores"]) == 16
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
        found[kind] = np.array(json.loads((tmp_path / kind / "keypoints.json").read_text())["results"][0]["keypoints"])
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
    sources = [r["source"] for r in json.loads((tmp_path / "v" / "keypoints.json").read_text())["results"]]
    assert sources == ["clip.avi#frame000000", "clip.avi#frame000002", "clip.avi#frame000004"]


@pytest.mark.parametrize("argv, message", [
    (["--input", "/no/such.jpg"], "/no/such.jpg: no such file or folder"),
    (["--input", __file__], "not an image"),
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
