"""Importing the reference PyTorch checkpoints: every fixture reproduces the reference network's heatmaps.

The fixtures under `tests/data/reference/` were written by the two reference
projects' own code (see its README); each `.npz` holds the reference
network's heatmaps for fixed images.
"""

import importlib.util
import json

import numpy as np
import pytest

from keras_hourglass.cli import import_weights
from keras_hourglass.model import stack_outputs
from keras_hourglass.reference_weights import (
    PRINCETON_VL,
    PYTORCH_POSE,
    PYTORCH_POSE_MEAN,
    read_checkpoint,
    torch_module,
    unused_keys,
)
from tests.conftest import ROOT, one_line_error

REFERENCE = ROOT / "tests" / "data" / "reference"
# (checkpoint, reference outputs, format, stacks, joints, stem widths)
FIXTURES = [
    ("pv_s2_d32_j16_legacy.pt", "pv_s2_d32_j16.npz", PRINCETON_VL, 2, 16, (64, 128, 128)),
    ("pv_s2_d32_j11.pt", "pv_s2_d32_j11.npz", PRINCETON_VL, 2, 11, (64, 128, 128)),
    ("pp_s8_b1_j16_w4.pt", "pp_s8_b1_j16_w4.npz", PYTORCH_POSE, 8, 16, (4, 8, 16)),
    ("pp_s8_b1_j16_w4_legacy.pt", "pp_s8_b1_j16_w4.npz", PYTORCH_POSE, 8, 16, (4, 8, 16)),
]
RELATIVE_TOLERANCE = 1e-5  # of each stack's largest heatmap value


def max_relative_difference(model, reference) -> list[float]:
    outputs = stack_outputs(model(reference["images"], training=False))
    differences = []
    for stack, output in enumerate(outputs):
        expected = np.transpose(reference["heatmaps"][stack], (0, 2, 3, 1))  # NCHW -> NHWC
        differences.append(float(np.abs(np.asarray(output) - expected).max() / np.abs(expected).max()))
    return differences


@pytest.mark.parametrize("name, outputs, format, stacks, joints, stem", FIXTURES)
def test_each_fixture_reproduces_the_reference_heatmaps(name, outputs, format, stacks, joints, stem):
    checkpoint = read_checkpoint(REFERENCE / name)
    assert (checkpoint.format, checkpoint.num_stacks, checkpoint.num_keypoints) == (format, stacks, joints)
    assert checkpoint.stem_filters == stem and checkpoint.depth == 4 and checkpoint.info["epoch"] == 37
    reference = np.load(REFERENCE / outputs)
    model = checkpoint.build(reference["images"].shape[1:3])
    differences = max_relative_difference(model, reference)
    assert len(differences) == stacks and max(differences) < RELATIVE_TOLERANCE, differences


def test_pytorch_pose_models_subtract_the_mean_inside_and_carry_their_accuracy():
    checkpoint = read_checkpoint(REFERENCE / "pp_s8_b1_j16_w4.pt")
    assert checkpoint.input_mean == PYTORCH_POSE_MEAN and checkpoint.info["best_acc"] == pytest.approx(0.8125)
    model = checkpoint.build((64, 64))
    assert model.layers[1].name == "input_normalization"
    assert read_checkpoint(REFERENCE / "pv_s2_d32_j11.pt").input_mean is None


def test_unused_reference_convolutions_are_recognised():
    checkpoint = read_checkpoint(REFERENCE / "pv_s2_d32_j11.pt")
    skipped = [k for k in unused_keys(checkpoint) if not k.endswith("num_batches_tracked")]
    # princeton-vl creates a skip conv in every residual; only the stem's 64->128 and 128->32 use theirs.
    assert skipped and all(".skip_layer.conv." in k for k in skipped)
    assert not any(k.startswith(("pre.1.", "pre.4.")) for k in skipped)


def test_layer_names_map_to_the_reference_modules():
    assert torch_module("stack1_hourglass_up4_res_conv2", PRINCETON_VL, 4) == "hgs.1.0.up1.conv2.conv"
    assert torch_module("stack1_hourglass_down2_res_bn1", PRINCETON_VL, 4) == "hgs.1.0.low2.low2.low1.bn1"
    assert torch_module("stack0_hourglass_bottom_res_skip", PRINCETON_VL, 4) == "hgs.0.0.low2.low2.low2.low2.skip_layer.conv"
    assert torch_module("stack0_remap_heatmaps", PRINCETON_VL, 4) == "merge_preds.0.conv.conv"
    assert torch_module("stack1_hourglass_up4_low_res_conv3", PYTORCH_POSE, 4) == "hg.1.hg.3.2.0.conv3"
    assert torch_module("stack0_hourglass_bottom_res_bn2", PYTORCH_POSE, 4) == "hg.0.hg.0.3.0.bn2"
    assert torch_module("stem_res1_skip", PYTORCH_POSE, 4) == "layer1.0.downsample.0"
    assert torch_module("stack2_head_bn", PYTORCH_POSE, 4) == "fc.2.1"


def test_safetensors_state_dicts_import_the_same_way(tmp_path):
    from safetensors.numpy import save_file

    state = read_checkpoint(REFERENCE / "pv_s2_d32_j11.pt").state_dict
    path = tmp_path / "pv.safetensors"
    save_file({f"model.module.{k}": np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == PRINCETON_VL and checkpoint.num_keypoints == 11
    assert max(max_relative_difference(checkpoint.build((64, 64)), np.load(REFERENCE / "pv_s2_d32_j11.npz"))) < 1e-5


@pytest.mark.parametrize("name, message", [
    ("bad/missing_key.pt", "missing key 'hg.0.hg.3.0.0.conv1.weight' for layer stack0_hourglass_up4_res_conv1 "
                           "(expected shape (4, 8, 1, 1))"),
    ("bad/extra_key.pt", "unexpected key 'foo.weight' of shape (4, 4)"),
    ("bad/wrong_shape.pt", "score.1.weight has shape (16, 8, 3, 3), but layer heatmaps_stack1 needs (16, 8, 1, 1)"),
    ("bad/foreign_global.pt", "refusing to load the global argparse.Namespace"),
    ("bad/two_blocks.pt", "a pytorch-pose model with 2 residual blocks per stack"),
])
def test_bad_checkpoints_fail_with_one_line(name, message, tmp_path, capsys):
    argv = [str(REFERENCE / name), "--output", str(tmp_path / "out"), "--image-size", "64"]
    assert message in one_line_error(import_weights.main, argv, capsys)
    assert not list(tmp_path.iterdir())  # nothing written, nothing left to block the corrected run


def test_other_joint_counts_need_names(tmp_path, capsys):
    argv = [str(REFERENCE / "pv_s2_d32_j11.pt"), "--output", str(tmp_path / "out"), "--image-size", "64"]
    assert import_weights.main([*argv, "--dataset", "mpii"]) == 2
    assert "--dataset mpii has 16 joints, but the checkpoint predicts 11" in capsys.readouterr().err
    assert import_weights.main([*argv, "--keypoint-names", "a,b"]) == 2
    assert "--keypoint-names has 2 names" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    assert import_weights.main([*argv[:1], "--output", str(tmp_path / "mine")]) == 2
    assert "exists and was not written by an import" in capsys.readouterr().err


def test_the_suite_runs_without_torch():
    assert importlib.util.find_spec("torch") is None


@pytest.mark.slow
def test_the_command_writes_keras_saved_model_and_tflite_that_agree(tmp_path, shared_data, capsys):
    import cv2

    from keras_hourglass.cli import predict
    from keras_hourglass.inference import whole_image_crop
    from keras_hourglass.joints import MPII
    from keras_hourglass.pose_model import load_pose_model

    # A folder that an import did not write is never replaced; an earlier import is, when asked, and only then.
    output = tmp_path / "imported"
    output.mkdir()
    argv = [str(REFERENCE / "pv_s2_d32_j16_legacy.pt"), "--output", str(output), "--image-size", "64"]
    assert "was not written by an import" in one_line_error(import_weights.main, [*argv, "--overwrite"], capsys)
    (output / "import.json").write_text("{}")  # as an earlier import leaves it (with its files)
    (output / "model.keras").write_text("an earlier import's model")
    assert "add --overwrite to replace it" in one_line_error(import_weights.main, argv, capsys)
    assert (output / "model.keras").read_text() == "an earlier import's model"
    assert import_weights.main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in output.iterdir()) == ["import.json", "model.keras", "model.tflite", "saved_model"]
    printed = capsys.readouterr().out
    assert "princeton-vl checkpoint, 2 stacks, 16 joints (mpii)" in printed and "epoch 37" in printed
    assert "stack1 hourglass" in printed and "skipped" in printed
    report = json.loads((output / "import.json").read_text())
    assert report["format"] == PRINCETON_VL and report["keypoint_names"][0] == "r_ankle"
    image_path = sorted((shared_data / "mpii" / "images").glob("*.jpg"))[0]
    crop, _ = whole_image_crop(cv2.imread(str(image_path))[..., ::-1], (64, 64))
    # The SavedModel and the TFLite file have the flip test in their graph; the .keras model gets it here.
    keras_model = load_pose_model(str(output / "model.keras"), MPII.names, MPII.flip_index)
    expected = np.asarray(keras_model.codec.flip_test(keras_model.heatmaps, crop))
    for kind in ("saved_model", "model.tflite"):
        pose_model = load_pose_model(str(output / kind))
        assert pose_model.flip_tested and pose_model.keypoint_names == list(MPII.names)
        np.testing.assert_allclose(np.asarray(pose_model.heatmaps(crop)), expected, rtol=0,
                                   atol=1e-5 * np.abs(expected).max(), err_msg=kind)
    assert predict.main(["--model", str(output / "saved_model"), "--input", str(image_path),
                         "--output", str(tmp_path / "predicted"), "--no-overlays"]) == 0


def test_hostile_or_damaged_weights_are_one_line_and_leave_nothing(tmp_path, capsys):
    from safetensors.numpy import save_file

    from tests.test_torch_files import op_dict, op_storage, op_tensor, write_zip

    stride0 = write_zip(tmp_path / "stride0.pt", op_dict(state_dict=op_dict(
        w=op_tensor(op_storage("0", 1), (4000, 4000), (0, 0)))), {"0": np.ones(1, np.float32).tobytes()})
    line = one_line_error(import_weights.main, [str(stride0), "--output", str(tmp_path / "a")], capsys)
    assert line.startswith(f"import_weights.py: error: {stride0}: ") and "repeats the values" in line
    state = read_checkpoint(REFERENCE / "pv_s2_d32_j11.pt").state_dict
    for name, change, message in [
        ("inf", lambda s: s["outs.0.conv.weight"].__setitem__((0, 0, 0, 0), np.inf), "non-finite values"),
        ("huge", lambda s: s.__setitem__("outs.0.conv.weight", s["outs.0.conv.weight"].astype(np.float64) * 1e300),
         "beyond float32's range"),
        ("int", lambda s: s.__setitem__("outs.0.conv.weight", s["outs.0.conv.weight"].astype(np.int8)),
         "holds int8 values"),
    ]:
        damaged = {k: np.array(v) for k, v in state.items()}
        change(damaged)
        path = tmp_path / f"{name}.safetensors"
        save_file({f"model.module.{k}": np.ascontiguousarray(v) for k, v in damaged.items()}, str(path))
        line = one_line_error(import_weights.main, [str(path), "--output", str(tmp_path / name), "--image-size",
                                                    "64"], capsys)
        assert "outs.0.conv.weight" in line and message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.safetensors", "inf.safetensors", "int.safetensors",
                                                          "stride0.pt"]


def test_text_from_the_file_cannot_drive_the_terminal():
    from keras_hourglass.cli.import_weights import printable

    assert printable("hg\x1b[2J\x1b[31m") == "hg\\x1b[2J\\x1b[31m"
    assert printable("x" * 1000) == "x" * 80 + "..."


def test_state_dicts_of_other_shapes_are_one_escaped_line(tmp_path, capsys):
    from tests.test_torch_files import op_dict, op_int, op_storage, op_tensor, write_zip

    weight = op_tensor(op_storage("0", 1), (), ())
    storages = {"0": np.ones(1, np.float32).tobytes()}
    int_key = write_zip(tmp_path / "int_key.pt", b"}(" + b"X\x0a\x00\x00\x00state_dict" + b"}" + op_int(1) + weight
                        + b"su", storages)
    zero_d = write_zip(tmp_path / "zero_d.pt", op_dict(state_dict=op_dict(**{"pre.0.conv.weight": weight,
                                                                               "hgs.0.x": weight})), storages)
    forged = write_zip(tmp_path / "forged.pt", op_dict(state_dict=op_dict(
        **{"x\nimport_weights.py: error: forged line\x1b[2J": weight})), storages)
    for path, words in ((int_key, "a state_dict key is a int"), (zero_d, "a weight of at least 1 dimensions"),
                        (forged, "not a princeton-vl, pytorch-pose or pose-ae-train")):
        line = one_line_error(import_weights.main, [str(path), "--output", str(tmp_path / "out")], capsys)
        assert words in line and "\x1b" not in line, line
    assert not (tmp_path / "out").exists()


def test_empty_tensors_cannot_size_the_network_and_odd_values_stay_plain(tmp_path, capsys):
    """Found by the second attack trial: a tensor with a zero dimension holds nothing but would still set the width
    the network is built with (1.4 KB -> 4.4 GiB); a complex, huge or NaN `epoch` broke `import.json` after the
    whole import; a bfloat16 safetensors file was refused with NumPy's words."""
    from safetensors.numpy import save_file

    from keras_hourglass.reference_weights import _plain

    state = {f"model.module.{k}": np.array(v) for k, v in read_checkpoint(REFERENCE / "pv_s2_d32_j11.pt").state_dict.items()}
    state["model.module.pre.4.conv3.conv.weight"] = np.zeros((8192, 0, 1, 1), np.float32)
    path = tmp_path / "empty.safetensors"
    save_file(state, str(path))
    line = one_line_error(import_weights.main, [str(path), "--output", str(tmp_path / "out")], capsys)
    assert "pre.4.conv3.conv.weight" in line and "holds no values" in line, line
    assert _plain(np.complex128(1 + 2j)) == "<a complex>" and _plain(np.float16(3.5)) == 3.5
    assert _plain(10 ** 20000) == "<a very large int>" and _plain(float("nan")) == "nan" and _plain(np.int64(7)) == 7
    # bfloat16 weights (as .pt files may hold them) load from safetensors too, exactly
    import ml_dtypes

    from keras_hourglass.reference_weights import float32_weights

    bf16 = tmp_path / "bf16.safetensors"
    weight = np.array([[1.5, -2.25]], np.float32)
    save_file({"model.module.w": weight.astype(ml_dtypes.bfloat16)}, str(bf16))
    with pytest.raises(ValueError, match="not a princeton-vl"):  # read, then not an hourglass: nothing else
        read_checkpoint(bf16)
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(float32_weights(load_file(str(bf16))["model.module.w"], "w", str(bf16)), weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16.safetensors", "empty.safetensors"]


@pytest.mark.slow
def test_an_imported_checkpoint_converts_to_onnx_and_openvino_with_its_heatmaps(tmp_path, shared_data):
    """The reference network, imported as `import_weights.py` imports it (flip test in the graph), as ONNX and
    OpenVINO files: heatmaps within 1e-5 of the largest value of its own `crops` signature's, keypoints within
    0.01 px. Converted from the estimator in memory, as the import converts its TFLite file."""
    import cv2

    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.export import PoseEstimator
    from keras_hourglass.inference import whole_image_crop
    from keras_hourglass.interchange import RuntimePoseModel, convert
    from keras_hourglass.joints import MPII
    from keras_hourglass.pose_model import load_pose_model
    from keras_hourglass.reference_weights import read_checkpoint

    checkpoint = read_checkpoint(str(REFERENCE / "pv_s2_d32_j16_legacy.pt"))
    model = checkpoint.build_network((64, 64))
    checkpoint.load_into(model)
    estimator = PoseEstimator(model, HeatmapCodec((64, 64), flip_index=MPII.flip_index, refine="quarter"),
                              MPII.names, True, MPII.limbs)
    image_path = sorted((shared_data / "mpii" / "images").glob("*.jpg"))[1]
    crop, _ = whole_image_crop(cv2.imread(str(image_path))[..., ::-1], (64, 64))
    expected = {k: v.numpy() for k, v in estimator.crops(crop).items()}
    for fmt, name in (("onnx", "reference.onnx"), ("openvino", "reference.xml")):
        path = convert(estimator, str(tmp_path / name), fmt)
        outputs = RuntimePoseModel(path).predict(crop)
        np.testing.assert_allclose(outputs["heatmaps"], expected["heatmaps"], rtol=0,
                                   atol=1e-5 * np.abs(expected["heatmaps"]).max(), err_msg=fmt)
        np.testing.assert_allclose(outputs["keypoints"], expected["keypoints"], rtol=0, atol=0.01, err_msg=fmt)
        assert load_pose_model(path).flip_tested
