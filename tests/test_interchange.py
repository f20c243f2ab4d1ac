"""ONNX and OpenVINO files: conversion, parity with the SavedModel, metadata, loading by every command, bad files.

Parity on the demo model's validation split is in `tests/test_deploy.py` (the `float` conversion), on an
imported reference checkpoint in `tests/test_reference_weights.py`.
"""

import json
import os

import numpy as np
import pytest

from keras_hourglass import interchange
from keras_hourglass.interchange import RuntimePoseModel, convert
from keras_hourglass.joints import MPII
from tests.conftest import ROOT, one_line_error

KEYPOINT_TOLERANCE = 0.01  # pixels: the bound for a converted file's keypoints
FLOAT_FORMATS = ("onnx", "openvino")  # openvino-int8 is measured on the trained fixture, in test_deploy.py


@pytest.fixture(scope="module")
def converted(tiny_saved_model, tmp_path_factory):
    """The tiny SavedModel as `model.onnx` and `model.xml`, converted once for the module."""
    folder = tmp_path_factory.mktemp("interchange")
    _, _, saved_model = tiny_saved_model
    return {fmt: convert(saved_model, str(folder / f"model{interchange.EXTENSIONS[fmt]}"), fmt)
            for fmt in FLOAT_FORMATS}


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_a_converted_file_equals_the_saved_model(converted, tiny_saved_model, fmt):
    import tensorflow as tf

    _, _, saved_model = tiny_saved_model
    crops = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    expected = {k: v.numpy() for k, v in tf.saved_model.load(saved_model).signatures["crops"](images=crops).items()}
    runner = RuntimePoseModel(converted[fmt])
    outputs = runner.predict(crops)
    assert sorted(outputs) == ["heatmaps", "keypoints", "scores"]
    scale = np.abs(expected["heatmaps"]).max()
    np.testing.assert_allclose(outputs["heatmaps"], expected["heatmaps"], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(outputs["keypoints"], expected["keypoints"], rtol=0, atol=KEYPOINT_TOLERANCE)
    np.testing.assert_allclose(outputs["scores"], expected["scores"], rtol=0, atol=1e-5 * scale)
    # The joints travel in the file: names, limbs, codec, input size.
    assert runner.metadata["keypoint_names"] == list(MPII.names) and runner.metadata["input_size"] == [64, 64]
    assert runner.metadata["format_converted"] == fmt and runner.milliseconds_per_image(steps=2) > 0


def test_the_metadata_is_where_each_format_keeps_it(converted):
    import onnx
    import openvino as ov

    proto = onnx.load(converted["onnx"])
    entry = {p.key: p.value for p in proto.metadata_props}[interchange.METADATA_KEY]
    assert json.loads(entry)["keypoint_names"] == list(MPII.names)
    assert [i.name for i in proto.graph.input] == ["images"]
    model = ov.Core().read_model(converted["openvino"])
    assert json.loads(model.get_rt_info([interchange.METADATA_KEY]).astype(str))["codec"]["heatmap_size"] == [16, 16]
    assert os.path.isfile(converted["openvino"][:-4] + ".bin")
    assert not [n for n in os.listdir(os.path.dirname(converted["onnx"])) if ".partial" in n]


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_predict_and_evaluate_take_the_files(converted, fmt, tmp_path, tiny_synthetic):
    from keras_hourglass.cli import evaluate, predict
    from keras_hourglass.pose_model import load_pose_model

    pose_model = load_pose_model(converted[fmt])
    assert pose_model.keypoint_names == list(MPII.names) and not pose_model.flip_tested
    image = sorted((ROOT.parent / "shared" / "data" / "mpii" / "images").glob("*.jpg"))[0]
    assert predict.main(["--model", converted[fmt], "--input", str(image), "--output", str(tmp_path / "p"),
                         "--no-overlays"]) == 0
    found = json.loads((tmp_path / "p" / "keypoints.json").read_text())
    assert found["keypoint_names"] == list(MPII.names)
    report = tmp_path / "m.json"
    assert evaluate.main(["--model", converted[fmt], "--dataset", "synthetic", "--annotations",
                          os.path.join(tiny_synthetic, "valid.h5"), "--image-dir",
                          os.path.join(tiny_synthetic, "images"), "--json", str(report), "--quiet"]) == 0
    assert json.loads(report.read_text())["metric"] == "PCKh"


def test_bad_files_and_a_missing_runtime_are_one_line(converted, tmp_path, capsys, monkeypatch):
    from keras_hourglass.cli import convert as convert_command
    from keras_hourglass.cli import predict

    image = str(sorted((ROOT.parent / "shared" / "data" / "mpii" / "images").glob("*.jpg"))[0])
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(open(converted["onnx"], "rb").read()[:5000])
    xml = tmp_path / "alone.xml"
    xml.write_text("<net>not a model</net>")
    (tmp_path / "alone.bin").write_bytes(b"")
    foreign = tmp_path / "foreign.onnx"
    import onnx

    proto = onnx.load(converted["onnx"])
    del proto.metadata_props[:]
    foreign.write_bytes(proto.SerializeToString())
    altered = []  # metadata that the converter never writes: each field is named
    for name, change in (("no_codec", lambda m: m.pop("codec")), ("flip_text", lambda m: m.update(flip_test="no")),
                         ("huge_size", lambda m: m.update(input_size=[100000, 100000]))):
        proto = onnx.load(converted["onnx"])
        metadata = json.loads(proto.metadata_props[0].value)
        change(metadata)
        proto.metadata_props[0].value = json.dumps(metadata)
        (tmp_path / f"{name}.onnx").write_bytes(proto.SerializeToString())
        altered.append(tmp_path / f"{name}.onnx")
    lonely = tmp_path / "lonely.xml"
    lonely.write_bytes(open(converted["openvino"], "rb").read())  # without its .bin
    for path, message in ((damaged, "not an ONNX model ONNX Runtime can load"),
                          (lonely, f"its weights file {tmp_path / 'lonely.bin'} is not there"),
                          (xml, "not an OpenVINO model OpenVINO can load"),
                          (foreign, "no keras_hourglass metadata in this file"),
                          (altered[0], "metadata has a bad codec"), (altered[1], "metadata has a bad flip_test"),
                          (altered[2], "metadata has a bad input_size")):
        line = one_line_error(predict.main, ["--model", str(path), "--input", image, "--output",
                                             str(tmp_path / "out")], capsys)
        assert str(path) in line and message in line
    line = one_line_error(convert_command.main, ["--model", str(ROOT / "tests" / "data" / "synthetic_small.keras"),
                                                 "--output", str(tmp_path / "c"), "--format", "onnx", "--quantization",
                                                 "int8"], capsys)
    assert "--quantization int8 is for TFLite files" in line
    line = one_line_error(convert_command.main, ["--model", str(ROOT / "tests" / "data" / "synthetic_small.keras"),
                                                 "--output", str(tmp_path / "c"), "--format", "openvino-int8"], capsys)
    assert "--format openvino-int8 needs --calibration" in line
    monkeypatch.setitem(interchange.EXTRA_MODULES, "openvino", ("openvino_that_is_not_installed",))
    line = one_line_error(convert_command.main, ["--model", str(ROOT / "tests" / "data" / "synthetic_small.keras"),
                                                 "--output", str(tmp_path / "c"), "--format", "openvino"], capsys)
    assert "pip install keras-hourglass[openvino]" in line
    assert not os.path.exists(tmp_path / "c")
