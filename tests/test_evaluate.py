import json

import h5py
import numpy as np
import pytest

from keras_hourglass.cli import evaluate
from tests.conftest import one_line_error
from tests.test_metrics import PUBLISHED_HG8


def test_reproduces_the_published_table_from_files(shared_data, tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    code = evaluate.main(["--predictions", str(shared_data / "mpii" / "valid-preds-hg8.h5"),
                          "--ground-truth", str(shared_data / "mpii" / "detections_our_format.mat"),
                          "--json", str(metrics)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "PCKh@0.5" in printed and " 87.56" in printed and " 95.94" in printed
    report = json.loads(metrics.read_text())
    assert report["metric"] == "PCKh" and report["threshold"] == 0.5
    assert {g: round(v, 2) for g, v in report["groups"].items()} == {
        g: v for g, v in PUBLISHED_HG8.items() if g != "Mean"}
    assert round(report["mean"], 2) == PUBLISHED_HG8["Mean"]
    assert set(report["joints"]) == set(report["counts"]) and len(report["joints"]) == 16


def test_the_rounded_hdf5_ground_truth_moves_only_head(shared_data, capsys):
    code = evaluate.main(["--predictions", str(shared_data / "mpii" / "valid-preds-hg8.h5"),
                          "--ground-truth", str(shared_data / "mpii" / "valid.h5")])
    assert code == 0
    assert "95.87" in capsys.readouterr().out  # the README's "Head moves to 95.84" is with 1-px rounding the other way


def test_wrong_prediction_shape_is_one_clear_line(shared_data, tmp_path, capsys):
    bad = tmp_path / "preds.h5"
    with h5py.File(bad, "w") as f:
        f["preds"] = np.zeros((10, 16, 2))
    err = one_line_error(evaluate.main, ["--predictions", str(bad), "--ground-truth",
                                         str(shared_data / "mpii" / "valid.h5")], capsys)
    assert "preds" in err and "(2958, 16, 2)" in err


def test_missing_files_are_named(tmp_path, capsys):
    assert evaluate.main(["--predictions", str(tmp_path / "p.h5"), "--ground-truth", str(tmp_path / "gt.h5")]) == 2
    assert "gt.h5: annotation file not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--model", "m", "--predictions", "p", "--ground-truth", "g"]])
def test_argument_errors_exit_cleanly(argv):
    with pytest.raises(SystemExit) as raised:
        evaluate.main(argv)
    assert raised.value.code == 2
