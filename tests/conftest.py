"""Shared test helpers: the real annotation files in ../shared/data, tiny models and data, running a command.

* `TINY`, `tiny_model`: the smallest valid network, for wiring and serialization tests.
* `tiny_saved_model`: one exported SavedModel of it with MPII's joints, shared by a session's tests.
* `tiny_synthetic`: a 48 + 16 person synthetic data set.
* `tiny_run`: the suite's one complete `train.py` run of the tiny model (tested in test_train, fine-tuned in
  test_quantization).
* `built_once`: an artefact built once per test session, also when xdist workers share it.
* `one_line_error`: runs a command's `main` and checks it failed with one `error:` line.
* `write_image`, `corrupt_jpeg`: image files for input tests.
"""

import contextlib
import fcntl
import io
import os
import pathlib
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("KERAS_HOURGLASS_SHARED_DATA", ROOT.parent / "shared" / "data"))

# The smallest valid model: tests of wiring, shapes and serialization use it.
TINY = dict(filters=8, image_size=(64, 64), depth=1, stem_filters=(8, 8))
# The same network with one stack, as `train` command flags: each command run in the suite traces, exports and
# converts it, and those costs grow with the layers (a test of stacking adds `--stacks 2`).
TINY_ARGS = ["--stacks", "1", "--filters", "8", "--depth", "1", "--stem-filters", "8,8", "--image-size", "64", "--batch-size", "8"]


def tiny_model(num_stacks: int = 2, num_keypoints: int = 16):
    from keras_hourglass.model import build_stacked_hourglass

    return build_stacked_hourglass(num_stacks, num_keypoints, **TINY)


# Tolerances say what matters to a user, not what one CPU's vector unit happened to round to:
GREY_LEVEL = 1 / 255  # one grey level of an image in [0, 1]
PIXEL_TOLERANCE = 1e-3  # keypoints: a thousandth of a pixel
RELATIVE_TOLERANCE = 1e-5  # network outputs: of their largest magnitude (float32 sums in any order)


def assert_close_to_scale(actual, expected, fraction: float = RELATIVE_TOLERANCE, **kwargs):
    """`actual` equals `expected` to `fraction` of the largest magnitude in `expected`."""
    import numpy as np

    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=fraction * max(float(np.abs(expected).max()), 1e-12),
                               **kwargs)


def one_line_error(main, argv, capsys) -> str:
    """Runs `main(argv)`, asserts exit code 2 with exactly one line on standard error; returns that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err and err.count("\n") == 0, (code, err)
    return err


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corrupt_jpeg(path):
    """Garbles the middle of a JPEG's compressed data: the file keeps its markers, but no decoder can read it."""
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 100] = b"\xff\x3f" * 50
    open(path, "wb").write(bytes(data))


def write_image(path, height, width):
    import cv2
    import numpy as np

    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (height, width, 3)).astype(np.uint8))


@pytest.fixture(scope="session")
def tiny_saved_model(tmp_path_factory):
    """`(keras model, codec, SavedModel path)`: a 2-stack tiny model with MPII's joints, exported once."""
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.export import export_saved_model
    from keras_hourglass.joints import MPII

    model = tiny_model(2, MPII.num_keypoints)
    codec = HeatmapCodec(TINY["image_size"], flip_index=MPII.flip_index)
    path = export_saved_model(model, str(tmp_path_factory.mktemp("tiny_saved_model") / "model"), codec, MPII.names)
    return model, codec, path


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """The folder `name` that `build(folder)` fills, built once per test session.

    xdist's workers are separate processes with their own session fixtures; the
    expensive artefacts go in the folder their base temporary folders share, and
    a file lock makes the first worker that needs one build it while the others
    wait and then read it. A failed build leaves no marker: the next asks again.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, shared by popen-gw0/, popen-gw1/, ...
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> str:
    """A synthetic data set folder (`train.h5` 48 people, `valid.h5` 16, 96x96 images)."""
    from keras_hourglass.data.synthetic import generate

    return str(built_once(tmp_path_factory, "tiny_synthetic",
                          lambda folder: generate(str(folder), num_train=48, num_valid=16, image_size=(96, 96))))


# A run folder left by a run that never completed an epoch: the tiny run starts in it (and must replace it).
LEFT_CONFIG = {"preset": "synthetic-small", "epochs": 99}


@pytest.fixture(scope="session")
def tiny_run(tiny_synthetic, tmp_path_factory) -> tuple[str, str]:
    """`(run folder, what train.py printed)`: 2 epochs of 2 steps, evaluated every epoch, with every output.

    It starts in a folder holding a `config.json` from a run that never
    completed an epoch (`LEFT_CONFIG`), which must not block it.
    """
    import json

    from keras_hourglass.cli import train

    def build(folder):
        run = folder / "run"
        run.mkdir()
        (run / "config.json").write_text(json.dumps(LEFT_CONFIG))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = train.main([*TINY_ARGS, "--data-dir", tiny_synthetic, "--output", str(run), "--epochs", "2",
                               "--steps-per-epoch", "2", "--eval-every", "1", "--no-flip-test"])
        (folder / "printed.txt").write_text(printed.getvalue())
        assert code == 0, printed.getvalue()[-3000:]

    folder = built_once(tmp_path_factory, "tiny_run", build)
    return str(folder / "run"), (folder / "printed.txt").read_text()


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """`../shared/data`; missing data fails in CI and skips elsewhere."""
    if not SHARED_DATA.is_dir():
        message = f"shared data not found at {SHARED_DATA} (set KERAS_HOURGLASS_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA
