"""train.py end to end on tiny synthetic data: wiring, resume after kill -9, learning, bad input, mirrored."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from keras_hourglass.cli import train
from tests.conftest import ROOT, TINY_ARGS, one_line_error



@pytest.fixture(scope="module")
def synthetic_dir(tiny_synthetic):
    return tiny_synthetic


def read_log(run):
    with open(os.path.join(run, "training_log.csv")) as f:
        return list(csv.DictReader(f))


def test_a_wrong_path_fails_before_writing_anything(tmp_path, capsys):
    run = str(tmp_path / "run")
    one_line_error(train.main, [*TINY_ARGS, "--output", run, "--epochs", "1", "--data-dir", str(tmp_path / "nowhere"),
                                "--train-annotations", str(tmp_path / "nowhere.h5")], capsys)
    assert not os.path.exists(run)


def test_a_few_steps_end_to_end(tiny_run):
    run, printed = tiny_run
    # The configuration left by a run that never completed an epoch did not block this one (`LEFT_CONFIG`).
    config = json.loads(open(os.path.join(run, "config.json")).read())
    assert config["preset"] == "synthetic-small" and config["filters"] == 8 and config["epochs"] == 2
    rows = read_log(run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for column in ("loss", "val_pckh", "val_pckh_wrist"):
        assert column in rows[0], column
    for path in ("checkpoints/best/saved_model.pb", "checkpoints/last/saved_model.pb", "resume/epoch-0002",
                 "eval/metrics.json", "eval/predictions.h5", "eval/pck_curve.png", "eval/predictions.png",
                 "model.tflite", "training_curves.png", "summary.json"):
        assert os.path.exists(os.path.join(run, path)), path
    assert not os.path.exists(os.path.join(run, "resume/epoch-0001"))  # only the newest is kept
    summary = json.loads(open(os.path.join(run, "summary.json")).read())
    # The best SavedModel, evaluated after training through the saved format, scores what the callback
    # measured on the in-memory model at its best epoch (up to a joint on a threshold's edge).
    best_logged = max(float(r["val_pckh"]) for r in rows)
    assert summary["metric"] == "PCKh" and abs(summary["mean"] - best_logged) < 1.0, (summary["mean"], best_logged)
    assert summary["mean"] == pytest.approx(json.loads(open(os.path.join(run, "eval/metrics.json")).read())["mean"],
                                            abs=0.01)
    assert os.listdir(os.path.join(run, "tensorboard"))
    assert "wrote " + os.path.join(run, "model.tflite") in printed


@pytest.mark.slow
def test_resume_after_kill_9_continues_from_the_saved_epoch(synthetic_dir, tmp_path, capsys):
    """A run killed after its first epoch; the same command resumes it (here in-process: the kill is what needs
    the process boundary)."""
    run = str(tmp_path / "run")
    argv = [*TINY_ARGS, "--data-dir", synthetic_dir, "--output", run, "--epochs", "3",
            "--steps-per-epoch", "2", "--no-flip-test", "--no-evaluate", "--no-export-tflite"]
    first = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.isdir(os.path.join(run, "resume", "epoch-0001")):
        assert first.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The kill may land while the next epoch's checkpoint is half-written (epoch-0002.partial).
    complete = sorted(p for p in os.listdir(os.path.join(run, "resume")) if not p.endswith(".partial"))
    assert complete and complete[-1] in ("epoch-0001", "epoch-0002"), complete
    assert train.main(argv) == 0
    assert f"resuming {run} from {run}/resume/{complete[-1]}" in capsys.readouterr().out
    assert [r["epoch"] for r in read_log(run)] == ["0", "1", "2"]
    assert sorted(os.listdir(os.path.join(run, "resume"))) == ["epoch-0003"]


def test_a_changed_configuration_is_refused(synthetic_dir, tmp_path, capsys):
    run = str(tmp_path / "run")
    os.makedirs(run)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"preset": "synthetic-small", "epochs": 99}, f)
    epoch = os.path.join(run, "resume", "epoch-0001")  # a run with a completed epoch
    os.makedirs(epoch)
    for name in ("state.json", "model.weights.h5"):
        open(os.path.join(epoch, name), "w").close()
    err = one_line_error(train.main, [*TINY_ARGS, "--data-dir", synthetic_dir, "--output", run, "--epochs", "1"],
                         capsys)
    assert "holds a run with another configuration (changed: " in err and "epochs" in err


@pytest.mark.parametrize("argv, message", [
    (["--preset", "mpii-16stack"], "unknown preset 'mpii-16stack'"),
    (["--dataset", "mpii", "--train-annotations", "/no/such/train.h5", "--valid-annotations", "/no/such/valid.h5"],
     "/no/such/train.h5: annotation file not found"),
    (["--dataset", "mpii"], "--train-annotations is required"),
    (["--lr-decay-epochs", "5,x"], "--lr-decay-epochs must be comma-separated integers"),
    (["--stem-filters", "8"], "--stem-filters must be two or three comma-separated widths"),
    (["--epochs", "x"], "--epochs must be an integer, got 'x'"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path):
    assert message in one_line_error(train.main, [*argv, "--output", str(tmp_path / "run")], capsys)


def test_a_model_with_other_keypoints_is_refused_by_evaluate(synthetic_dir, tmp_path, capsys):
    from keras_hourglass.cli import evaluate
    from keras_hourglass import build_stacked_hourglass
    from tests.conftest import TINY

    path = str(tmp_path / "three.keras")
    build_stacked_hourglass(1, 3, **TINY).save(path)
    code = evaluate.main(["--model", path, "--dataset", "synthetic",
                          "--annotations", os.path.join(synthetic_dir, "valid.h5"),
                          "--image-dir", os.path.join(synthetic_dir, "images")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "predicts 3 keypoints" in err and err.count("\n") == 0, err


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(synthetic_dir, tmp_path):
    """Two replicas of a 2-stack model: each stack's loss is logged, summed over the replicas."""
    run = str(tmp_path / "run")
    script = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "import train\n"
        f"sys.exit(train.main({[*TINY_ARGS, '--stacks', '2', '--data-dir', synthetic_dir, '--output', run, '--epochs', '1', '--steps-per-epoch', '2', '--strategy', 'mirrored', '--no-flip-test', '--no-export-tflite', '--no-evaluate']!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy, 2 replica(s)" in result.stdout
    assert os.path.isfile(os.path.join(run, "checkpoints", "best", "saved_model.pb"))
    (row,) = read_log(run)
    stacks = [float(row["heatmaps_stack0_loss"]), float(row["heatmaps_stack1_loss"])]
    assert min(stacks) > 0 and float(row["loss"]) == pytest.approx(sum(stacks), rel=1e-5), row


@pytest.mark.slow
def test_loss_goes_down_and_pck_goes_up(synthetic_dir, tmp_path):
    """A short run that must learn: 8 people, no augmentation, scored on themselves."""
    import h5py

    small = str(tmp_path / "small.h5")
    with h5py.File(os.path.join(synthetic_dir, "train.h5")) as source, h5py.File(small, "w") as target:
        for key in source:
            target[key] = source[key][:8]
    run = str(tmp_path / "run")
    code = train.main(["--stacks", "1", "--filters", "32", "--depth", "2", "--stem-filters", "16,32", "--image-size", "64",
                       "--batch-size", "8", "--output", run, "--no-augment", "--train-annotations", small,
                       "--valid-annotations", small, "--image-dir", os.path.join(synthetic_dir, "images"),
                       "--epochs", "8", "--steps-per-epoch", "10", "--eval-every", "4", "--no-flip-test",
                       "--no-evaluate", "--no-export-tflite"])
    assert code == 0
    rows = read_log(run)
    loss = [float(r["loss"]) for r in rows]
    pckh = [float(r["val_pckh"]) for r in rows if not math.isnan(float(r["val_pckh"]))]
    assert len(loss) == 8 and len(pckh) == 2
    assert loss[-1] < 0.2 * loss[0], loss
    assert pckh[-1] > pckh[0] + 10, pckh  # measured: 3.6 -> 21.4
