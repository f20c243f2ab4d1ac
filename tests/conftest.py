"""Shared test helpers: the real annotation files in ../shared/data, tiny models and data, running a command.

* `TINY`, `tiny_model`: the smallest valid network, for wiring and serialization tests.
* `tiny_saved_model`: one exported SavedModel of it with MPII's joints, shared by a session's tests.
* `tiny_synthetic`: a 48 + 16 person synthetic data set.
* `one_line_error`: runs a command's `main` and checks it failed with one `error:` line.
"""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("KERAS_HOURGLASS_SHARED_DATA", ROOT.parent / "shared" / "data"))

# The smallest valid model: tests of wiring, shapes and serialization use it.
TINY = dict(filters=8, image_size=(64, 64), depth=2, stem_filters=(8, 8))
# The same network as `train` command flags.
TINY_ARGS = ["--filters", "8", "--depth", "2", "--stem-filters", "8,8", "--image-size", "64", "--batch-size", "8"]


def tiny_model(num_stacks: int = 2, num_keypoints: int = 16):
    from keras_hourglass.model import build_stacked_hourglass

    return build_stacked_hourglass(num_stacks, num_keypoints, **TINY)


def one_line_error(main, argv, capsys) -> str:
    """Runs `main(argv)`, asserts exit code 2 with exactly one line on standard error; returns that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err and err.count("\n") == 0, (code, err)
    return err


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


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> str:
    """A synthetic data set folder (`train.h5` 48 people, `valid.h5` 16, 96x96 images)."""
    from keras_hourglass.data.synthetic import generate

    folder = tmp_path_factory.mktemp("tiny_synthetic")
    generate(str(folder), num_train=48, num_valid=16, image_size=(96, 96))
    return str(folder)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """`../shared/data`; missing data fails in CI and skips elsewhere."""
    if not SHARED_DATA.is_dir():
        message = f"shared data not found at {SHARED_DATA} (set KERAS_HOURGLASS_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA
