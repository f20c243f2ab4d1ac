"""Bad input everywhere: one line naming the file, field or argument, exit status 2, nothing left that blocks a rerun.

Each test writes the bad file itself (truncated, garbled, empty, of the wrong
format) and runs the command a user would run.
"""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from keras_hourglass.cli import evaluate, predict, train
from keras_hourglass.fileio import FolderLock
from tests.conftest import TINY_ARGS, corrupt_jpeg, one_line_error, write_image

MPII_VALID = "mpii/valid.h5"


@pytest.fixture
def broken_synthetic(tiny_synthetic, tmp_path):
    """A copy of the tiny synthetic set whose validation image 3 has a corrupt body."""
    folder = tmp_path / "synthetic"
    shutil.copytree(tiny_synthetic, folder)
    corrupt_jpeg(folder / "images" / "valid_000003.jpg")
    return folder


def test_a_corrupt_image_is_named_before_training_and_nothing_is_written(broken_synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [*TINY_ARGS, "--data-dir", str(broken_synthetic), "--output", str(run), "--epochs", "1",
            "--steps-per-epoch", "1", "--no-evaluate", "--no-export-tflite"]
    err = one_line_error(train.main, argv, capsys)
    assert "valid_000003.jpg cannot be decoded" in err and "record" in err
    assert not run.exists()


def test_a_run_folder_in_use_is_refused_at_once(tiny_synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    with FolderLock(str(run)):
        err = one_line_error(train.main, [*TINY_ARGS, "--data-dir", tiny_synthetic, "--output", str(run)], capsys)
    assert f"{run} is in use by a running process (pid {os.getpid()}" in err
    with FolderLock(str(run)):  # released when its holder ends: taken over at once
        pass


def test_a_split_without_normalisers_is_refused_when_loaded(shared_data, tmp_path, capsys):
    people = json.loads((shared_data / "mpii" / "images" / "annotations.json").read_text())
    annotations = tmp_path / "no_head_boxes.json"
    annotations.write_text(json.dumps(people))  # the raw MPII JSON layout has no head boxes
    predictions = tmp_path / "preds.h5"
    import h5py

    with h5py.File(predictions, "w") as f:
        f["preds"] = np.zeros((len(people), 16, 2))
    err = one_line_error(evaluate.main, ["--predictions", str(predictions), "--annotations", str(annotations)], capsys)
    assert "no PCK normaliser" in err and "no_head_boxes.json" in err
    # convert.py refuses the split before converting anything, and leaves nothing behind
    from keras_hourglass.cli import convert

    from tests.conftest import ROOT

    err = one_line_error(convert.main, ["--model", str(ROOT / "tests" / "data" / "synthetic_small.keras"), "--output",
                                        str(tmp_path / "out"), "--valid", str(annotations), "--image-dir",
                                        str(shared_data / "mpii" / "images"), "--quantization", "float32"], capsys)
    assert "no PCK normaliser" in err and "no_head_boxes.json" in err
    assert not (tmp_path / "out").exists()


def test_coco_people_without_both_normaliser_joints_are_refused(tmp_path, capsys):
    names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    keypoints = [[10, 10, 2, 30, 10, 2, 10, 40, 2, 30, 40, 2], [10, 10, 2, 30, 10, 2, 0, 0, 0, 30, 40, 2]]
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}],
            "categories": [{"id": 1, "keypoints": names, "skeleton": [[1, 2]]}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "keypoints": k}
                            for i, k in enumerate(keypoints)]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    predictions = tmp_path / "preds.h5"
    import h5py

    with h5py.File(predictions, "w") as f:
        f["preds"] = np.zeros((2, 4, 2))
    argv = ["--predictions", str(predictions), "--dataset", "coco", "--annotations", str(path)]
    err = one_line_error(evaluate.main, [*argv, "--normalizer-joints", "right_shoulder,left_hip"], capsys)
    assert "annotation 1" in err and "no PCK normaliser" in err
    assert "must be two joint names" in one_line_error(evaluate.main, [*argv, "--normalizer-joints", "left_hip"], capsys)


@pytest.mark.parametrize("name, content, message", [
    ("empty.mat", b"", "annotation file is empty (0 bytes)"),
    ("garbled.h5", b"hello, not HDF5", "cannot read as HDF5"),
])
def test_unreadable_annotation_files_are_named(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    err = one_line_error(evaluate.main, ["--predictions", str(tmp_path / "p.h5"), "--annotations", str(path)], capsys)
    assert name in err and message in err


@pytest.mark.parametrize("name, write, message", [
    ("noconfig.keras", lambda p: zipfile.ZipFile(p, "w").writestr("metadata.json", "{}"), "no config.json"),
    ("text.keras", lambda p: p.write_text("hello"), "not a .keras file"),
    ("text.tflite", lambda p: p.write_text("hello" * 50), "not a TFLite model"),
])
def test_damaged_model_files_are_named(shared_data, tmp_path, capsys, name, write, message):
    path = tmp_path / name
    write(path)
    err = one_line_error(evaluate.main, ["--model", str(path), "--annotations", str(shared_data / MPII_VALID)], capsys)
    assert name in err and message in err


@pytest.fixture(scope="module")
def saved_model(tiny_saved_model):
    return tiny_saved_model[2]


@pytest.mark.parametrize("make, message", [
    (lambda p: (write_image(p, 40, 30), corrupt_jpeg(p)), "cannot be decoded"),
    (lambda p: (write_image(p, 40, 30), p.write_bytes(p.read_bytes()[:200])), "truncated"),
    (lambda p: write_image(p, 1, 1), "1x1 pixels, too small"),
    (lambda p: p.write_bytes(b""), "neither a JPEG, a PNG nor a BMP"),
])
def test_predict_refuses_a_bad_image(saved_model, tmp_path, capsys, make, message):
    image = tmp_path / "bad.jpg"
    make(image)
    output = tmp_path / "out"
    err = one_line_error(predict.main, ["--model", saved_model, "--input", str(image), "--output", str(output)], capsys)
    assert "bad.jpg" in err and message in err
    assert not (output / "keypoints.json").exists()


def test_predict_on_a_folder_names_the_bad_images_and_predicts_the_rest(saved_model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.jpg", 40, 30)
    write_image(folder / "b.png", 40, 30)
    write_image(folder / "z.jpg", 40, 30)
    corrupt_jpeg(folder / "z.jpg")  # the last one
    output = tmp_path / "out"
    assert predict.main(["--model", saved_model, "--input", str(folder), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "z.jpg cannot be decoded" in err
    report = json.loads((output / "keypoints.json").read_text())
    assert [r["source"] for r in report["results"]] == ["a.jpg", "b.png"]
    assert [f["source"] for f in report["failed"]] == ["z.jpg"] and "cannot be decoded" in report["failed"][0]["error"]
    assert sorted(p.name for p in output.glob("*.png")) == ["a.png", "b.png"]


def test_a_model_of_other_joints_is_refused_by_name(tiny_synthetic, tmp_path, capsys):
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.export import export_saved_model
    from tests.conftest import TINY, tiny_model

    names = [f"joint_{i}" for i in range(16)]  # 16 channels, but not MPII's joints
    saved = export_saved_model(tiny_model(1, 16), str(tmp_path / "other"), HeatmapCodec(TINY["image_size"]), names)
    err = one_line_error(evaluate.main, ["--model", saved, "--dataset", "synthetic", "--annotations",
                                         os.path.join(tiny_synthetic, "valid.h5"), "--image-dir",
                                         os.path.join(tiny_synthetic, "images")], capsys)
    assert "channel 0 is 'joint_0' in the model and 'r_ankle' in the annotations" in err


def test_convert_takes_the_normaliser_of_training(tmp_path, capsys):
    from keras_hourglass.cli import convert

    from tests.conftest import ROOT

    argv = ["--model", str(ROOT / "tests" / "data" / "synthetic_small.keras"), "--output", str(tmp_path / "out"),
            "--dataset", "coco", "--valid", str(tmp_path / "v.json"), "--normalizer-joints", "left_hip",
            "--quantization", "float32"]
    assert "v.json: annotation file not found" in one_line_error(convert.main, argv, capsys)
    (tmp_path / "v.json").write_text("{}")
    assert "normalizer joints must be two joint names" in one_line_error(convert.main, argv, capsys)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are known to be good


@pytest.mark.parametrize("flag, value, expected", [
    ("--num-calibration", "0", "--num-calibration must be positive, got 0"),
    ("--int8-keep-float-above", "-1", "--int8-keep-float-above must be a positive range"),
])
def test_convert_refuses_bad_int8_options_before_writing(tmp_path, capsys, flag, value, expected):
    from keras_hourglass.cli import convert

    from tests.conftest import ROOT

    argv = ["--model", str(ROOT / "tests" / "data" / "synthetic_small.keras"), "--output", str(tmp_path / "out"),
            "--dataset", "synthetic", "--calibration", str(tmp_path / "train.h5"), "--quantization", "int8",
            flag, value]
    assert expected in one_line_error(convert.main, argv, capsys)
    assert not (tmp_path / "out").exists()


def test_errors_after_tensorflow_starts_are_still_one_line(tmp_path):
    """TensorFlow's start-up lines and libjpeg's warnings do not drown the command's one error line."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    image = tmp_path / "bad.jpg"
    write_image(image, 40, 30)
    corrupt_jpeg(image)
    garbage = tmp_path / "m.tflite"
    garbage.write_text("hello" * 50)
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for script, argv in (("evaluate.py", ["--model", str(garbage), "--annotations", str(tmp_path / "none.h5")]),
                         ("predict.py", ["--model", str(garbage), "--input", str(image), "--output",
                                         str(tmp_path / "out")])):
        result = subprocess.run([sys.executable, script, *argv], cwd=ROOT, capture_output=True, text=True,
                                env=environment, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{script}: error: "), lines
