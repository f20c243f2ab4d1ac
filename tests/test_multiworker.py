"""`--strategy multiworker` for real: two `train.py` processes with their own TF_CONFIG over loopback.

Each test starts the same command twice, as a user starts it on two
machines; the run folder and the data folder are shared, as the README asks.
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT, TINY_ARGS

# Long enough for start-up, data generation and tracing on 2 loaded cores; a hang fails instead of blocking CI.
WORKER_TIMEOUT = 420
# A dead worker must stop the other one within this many seconds (measured: about 10 to 20).
FAILURE_DETECTION_BOUND = 120


def start_workers(tmp_path, args, attempt: str) -> list:
    """Two workers of one cluster; worker i logs to `worker<i>-<attempt>.log` and has its own TMPDIR."""
    from keras_hourglass.distributed import loopback_cluster

    workers = []
    for index, tf_config in enumerate(loopback_cluster(2)):
        temporary = tmp_path / f"tmp{index}-{attempt}"  # a killed worker's leftovers stay in its own
        temporary.mkdir(exist_ok=True)
        env = dict(os.environ, TF_CONFIG=tf_config, TMPDIR=str(temporary), PYTHONUNBUFFERED="1")
        log = open(tmp_path / f"worker{index}-{attempt}.log", "w")
        process = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        process.log_path = log.name
        log.close()
        workers.append(process)
    return workers


def finish(workers) -> list[str]:
    for process in workers:
        try:
            process.wait(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            pytest.fail(f"a worker hung; logs: {[open(p.log_path).read()[-2000:] for p in workers]}")
    return [open(process.log_path).read() for process in workers]


def digests(log: str) -> list[tuple]:
    return re.findall(r"epoch (\d+): weights (\w+) after step (\d+)", log)


def command(tmp_path, *extra) -> list[str]:
    return [*TINY_ARGS, "--data-dir", str(tmp_path / "data"), "--num-train", "32", "--num-valid", "8",
            "--output", str(tmp_path / "run"), "--strategy", "multiworker", "--no-flip-test", "--no-export-tflite",
            "--no-evaluate",
            "--steps-per-epoch", "2", *extra]


STEPS = 12  # per epoch in the kill test


@pytest.fixture(scope="module")
def killed_job(tmp_path_factory):
    """One job, as a user lives it: two workers start and one is killed in epoch 2. Returns `(folder, args, chief,
    other, seconds from the kill to the chief's exit)`; the two tests below read it (the stop, then the resume), so
    that neither test runs the four worker processes alone."""
    tmp_path = tmp_path_factory.mktemp("killed_job")
    # Enough steps that the second epoch outlasts the poll below: the tiny model takes a few ms a step.
    # The metric (and the best model's export) on the last epoch only: one export fewer per worker.
    args = [*command(tmp_path, "--epochs", "2", "--eval-every", "2"), "--steps-per-epoch", str(STEPS)]
    chief, other = start_workers(tmp_path, args, "killed")
    deadline = time.monotonic() + WORKER_TIMEOUT
    while "Epoch 2/2" not in open(other.log_path).read():  # the second epoch has begun: kill during it
        assert other.poll() is None and time.monotonic() < deadline, open(other.log_path).read()[-3000:]
        time.sleep(0.2)
    other.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        chief.wait(timeout=FAILURE_DETECTION_BOUND)
    except subprocess.TimeoutExpired:
        chief.kill()
        pytest.fail(f"the chief did not stop within {FAILURE_DETECTION_BOUND} s of the other worker's death")
    return tmp_path, args, chief, other, time.monotonic() - killed_at


@pytest.mark.slow
def test_a_killed_worker_stops_the_other_with_one_line(killed_job):
    """The chief stops with one line naming the dead worker; the data was prepared once, by the chief."""
    tmp_path, args, chief, other, seconds = killed_job
    print(f"the chief stopped {seconds:.1f} s after the kill")
    log = open(chief.log_path).read()
    errors = [line for line in log.splitlines() if line.startswith("train.py: error:")]
    assert chief.returncode == 1 and len(errors) == 1, log[-3000:]
    assert "CollectiveAllReduceStrategy worker 0 of 2" in errors[0] and "worker 1 stopped responding" in errors[0]
    assert "Traceback" not in log and "tf.Tensor" not in log and "PerReplica" not in log
    # Data prepared once, by the chief, in the first attempt.
    first_other = open(other.log_path).read()
    assert "generating the synthetic data set" in log and "generating" not in first_other
    assert "checking the images" in log and "checking the images" not in first_other


@pytest.mark.slow
def test_the_same_command_resumes_both_workers_in_step(killed_job):
    """The same command resumes both from epoch 1 and they finish in step, with only the chief writing the run."""
    tmp_path, args, chief, other, _ = killed_job
    first_other = open(other.log_path).read()
    logs = finish(start_workers(tmp_path, args, "resumed"))
    run = tmp_path / "run"
    for index, worker_log in enumerate(logs):
        assert "Traceback" not in worker_log, worker_log[-3000:]
        assert f"this is worker {index} of 2" in worker_log
        assert f"from {run / 'resume' / 'epoch-0001'} (epoch 1 of 2)" in worker_log, worker_log[-3000:]
    chief_log, other_log = logs
    # Equal weights and optimizer state after the resumed epoch; the schedule counted global steps (STEPS per epoch).
    assert digests(chief_log) == digests(other_log) and [d[0::2] for d in digests(chief_log)] == [("2", str(2 * STEPS))], (
        digests(chief_log), digests(other_log))
    # The validation metric is the same on both workers.
    metric = r"val_pckh: (\S+)"
    assert re.findall(metric, chief_log) == re.findall(metric, other_log) and re.findall(metric, chief_log)
    # The chief wrote the run folder; the other worker wrote only to its temporary folder, and removed it.
    assert sorted(os.listdir(run)) == sorted([".lock", "config.json", "training_log.csv", "tensorboard", "checkpoints",
                                               "resume", "training_curves.png", "summary.json"])
    assert (run / "checkpoints" / "best" / "saved_model.pb").is_file()
    assert (run / "checkpoints" / "last" / "saved_model.pb").is_file()
    assert sorted(os.listdir(run / "resume")) == ["epoch-0002"]
    rows = [line.split(",")[0] for line in (run / "training_log.csv").read_text().splitlines()[1:]]
    assert rows == ["0", "1"]
    # The other worker saved each best model to its own temporary folder (epoch 1's metric may be NaN: then epoch 2's),
    # and removed it.
    assert (f"saving SavedModel to {tmp_path / 'tmp1-killed'}" in first_other
            or f"saving SavedModel to {tmp_path / 'tmp1-resumed'}" in other_log)
    assert os.listdir(tmp_path / "tmp1-resumed") == []
    assert "done in" in chief_log and '"worker": "CollectiveAllReduceStrategy worker 1 of 2"' in other_log


def test_each_worker_reads_its_own_shard_once_per_epoch(tiny_synthetic):
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.data.loaders import load_records
    from keras_hourglass.data.pipeline import NO_AUGMENTATION, build_dataset

    records = load_records("synthetic", os.path.join(tiny_synthetic, "train.h5"), os.path.join(tiny_synthetic, "images"))
    codec = HeatmapCodec((32, 32), flip_index=records.spec.flip_index)

    def images(shard):
        dataset = build_dataset(records, codec, 4, 1, augmentation=NO_AUGMENTATION, seed=0, check_images=False,
                                shard=shard)
        return {np.round(image, 3).tobytes() for batch, _, _ in dataset for image in batch.numpy()}

    everyone, first, second = images((1, 0)), images((2, 0)), images((2, 1))
    assert len(everyone) == len(records) == 48
    assert len(first) == len(second) == 24 and not first & second and first | second == everyone


@pytest.mark.parametrize("shard", [(2, 2), (0, 0), (2, -1)])
def test_a_bad_shard_is_refused(tiny_synthetic, shard):
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.data.loaders import load_records
    from keras_hourglass.data.pipeline import build_dataset

    records = load_records("synthetic", os.path.join(tiny_synthetic, "train.h5"), os.path.join(tiny_synthetic, "images"))
    with pytest.raises(ValueError, match="shard must be"):
        build_dataset(records, HeatmapCodec((32, 32)), 4, 1, check_images=False, shard=shard)


def test_a_failure_is_one_line_that_names_the_dead_worker():
    import tensorflow as tf

    from keras_hourglass.distributed import Worker, failure_cause

    chief = Worker("CollectiveAllReduceStrategy", 0, 2)
    reset = ("Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
             '  File "train.py", line 8\nrecvmsg:Connection reset by peer\nAdditional GRPC error information from '
             "remote target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:\n"
             "\t [[{{node CollectiveReduceV2}}]] [Op:__inference_multi_step_on_iterator_123]")
    cause = failure_cause(tf.errors.UnavailableError(None, None, reset), chief)
    assert cause.startswith("worker 1 stopped responding (connection reset by peer") and "\n" not in cause
    other = Worker("CollectiveAllReduceStrategy", 1, 2, chief=False)
    heartbeats = ("The following tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:0\n"
                  "The tasks have crashed.")
    assert failure_cause(tf.errors.UnavailableError(None, None, heartbeats), other).startswith("worker 0 stopped")
    graph = 'Graph execution error:\n\nDetected at node X defined at:\n  File "a.py"\nthe real cause\n [[{{node X}}]]'
    assert failure_cause(tf.errors.InternalError(None, None, graph), chief) == "the real cause"


@pytest.mark.slow
def test_a_chief_that_cannot_prepare_the_data_fails_the_other_worker_with_its_message(tmp_path):
    missing = str(tmp_path / "missing.h5")
    args = command(tmp_path, "--epochs", "1", "--train-annotations", missing, "--valid-annotations", missing)
    chief, other = finish(start_workers(tmp_path, args, "failed"))
    chief_errors = [line for line in chief.splitlines() if line.startswith("train.py: error:")]
    other_errors = [line for line in other.splitlines() if line.startswith("train.py: error:")]
    assert chief_errors == [f"train.py: error: synthetic annotation file not found: {missing} or {missing}."], chief
    assert other_errors == [f"train.py: error: CollectiveAllReduceStrategy worker 1 of 2: the chief could not "
                            f"prepare the data: synthetic annotation file not found: {missing} or {missing}."], other
    assert not (tmp_path / "run").exists()


def test_a_multiline_framework_error_becomes_one_line():
    from keras_hourglass.distributed import TrainingStopped, Worker, failures_named

    worker = Worker("CollectiveAllReduceStrategy", 1, 2, chief=False)
    with pytest.raises(TrainingStopped, match=r"^CollectiveAllReduceStrategy worker 1 of 2: training stopped: "
                                              r"Attempt to convert a value \(PerReplica:\{$"):
        with failures_named(worker):
            raise ValueError("Attempt to convert a value (PerReplica:{\n  0: <tf.Tensor: numpy=array([[0.5]])>\n})")
    with pytest.raises(ValueError, match="^one line of ours$"), failures_named(worker):
        raise ValueError("one line of ours")


def test_a_shard_too_small_for_one_batch_is_refused(tiny_synthetic):
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.data.loaders import load_records
    from keras_hourglass.data.pipeline import build_dataset

    records = load_records("synthetic", os.path.join(tiny_synthetic, "train.h5"), os.path.join(tiny_synthetic, "images"))
    build_dataset(records, HeatmapCodec((32, 32)), 24, 1, check_images=False, shard=(2, 1))
    with pytest.raises(ValueError, match=r"48 people over 2 shard\(s\) make no full batch of 25"):
        build_dataset(records, HeatmapCodec((32, 32)), 25, 1, check_images=False, shard=(2, 1))


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{cluster", "TF_CONFIG is not JSON"),
    ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}', '"cluster" must map'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', '"task" must name'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', '"task" must name'),
])
def test_a_bad_tf_config_is_one_line(tf_config, message, tmp_path, monkeypatch, capsys):
    from keras_hourglass.cli import train
    from tests.conftest import one_line_error

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    line = one_line_error(train.main, ["--strategy", "multiworker", "--output", str(tmp_path / "run")], capsys)
    assert message in line and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_workers_started_with_different_commands_are_refused_on_both(tmp_path):
    from keras_hourglass.distributed import loopback_cluster

    chief_config, other_config = loopback_cluster(2)
    logs = []
    for tf_config, batch in ((chief_config, "8"), (other_config, "4")):
        args = [*command(tmp_path, "--epochs", "1"), "--batch-size", batch]
        logs.append(subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, text=True,
                                     env=dict(os.environ, TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE))
    chief, other = [process.communicate(timeout=WORKER_TIMEOUT) for process in logs]
    assert [process.returncode for process in logs] == [2, 2], (chief, other)
    assert chief[1].strip().splitlines()[-1] == ("train.py: error: CollectiveAllReduceStrategy worker 0 of 2: worker 1 "
                                                 "was started with other batch_size; start every worker with the "
                                                 "same command.")
    assert other[1].strip().splitlines()[-1].endswith("worker 1 of 2: this command differs from the chief's in "
                                                       "batch_size; start every worker with the same command.")
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
