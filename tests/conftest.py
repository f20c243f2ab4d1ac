"""Shared fixtures: the real annotation files in ../shared/data and tiny model settings."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("KERAS_HOURGLASS_SHARED_DATA", ROOT.parent / "shared" / "data"))

# The smallest valid model: tests of wiring, shapes and serialization use it.
TINY = dict(filters=8, image_size=(64, 64), depth=2, stem_filters=(8, 8))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """`../shared/data`; missing data fails in CI and skips elsewhere."""
    if not SHARED_DATA.is_dir():
        message = f"shared data not found at {SHARED_DATA} (set KERAS_HOURGLASS_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA
