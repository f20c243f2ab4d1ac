"""The torch-free reader: both torch formats, the allow-list, and files that are not checkpoints."""

import pickle
import zipfile

import numpy as np
import pytest

from keras_hourglass.torch_files import load_torch_file
from tests.conftest import ROOT

REFERENCE = ROOT / "tests" / "data" / "reference"


def test_zip_and_legacy_files_hold_the_same_tensors():
    zipped = load_torch_file(REFERENCE / "pp_s8_b1_j16_w4.pt")
    legacy = load_torch_file(REFERENCE / "pp_s8_b1_j16_w4_legacy.pt")
    assert list(zipped) == list(legacy) == ["epoch", "arch", "state_dict", "best_acc", "optimizer"]
    assert zipped["epoch"] == 37 and zipped["arch"] == "hg"
    assert isinstance(zipped["best_acc"], np.ndarray) and zipped["best_acc"].shape == ()  # a 0-d tensor
    assert list(zipped["state_dict"]) == list(legacy["state_dict"])
    for key, value in zipped["state_dict"].items():
        assert value.dtype == legacy["state_dict"][key].dtype and np.array_equal(value, legacy["state_dict"][key]), key
    conv = zipped["state_dict"]["module.conv1.weight"]
    assert conv.shape == (4, 3, 7, 7) and conv.dtype == np.float32 and np.abs(conv).max() > 0
    assert zipped["state_dict"]["module.bn1.num_batches_tracked"].dtype == np.int64


def test_a_foreign_global_is_refused_by_name():
    with pytest.raises(ValueError, match=r"foreign_global\.pt: refusing to load the global argparse\.Namespace"):
        load_torch_file(REFERENCE / "bad" / "foreign_global.pt")


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never be printed",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pt: refusing to load the global (__builtin__|builtins)\.print"):
        load_torch_file(path)


@pytest.mark.parametrize("content, message", [
    (b"", "not a torch checkpoint"),
    (b"hello world", "not a torch checkpoint"),
    (pickle.dumps({"a": 1}, protocol=2), "no torch magic number"),
])
def test_other_files_are_named(tmp_path, content, message):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_torch_file(path)
    with pytest.raises(ValueError, match="no such checkpoint file"):
        load_torch_file(tmp_path / "missing.pth")


def test_truncated_files_are_refused(tmp_path):
    for name in ("pp_s8_b1_j16_w4.pt", "pp_s8_b1_j16_w4_legacy.pt"):
        data = (REFERENCE / name).read_bytes()
        path = tmp_path / name
        for cut in (len(data) // 2, len(data) - 3):  # a partial download ends anywhere
            path.write_bytes(data[:cut])
            with pytest.raises(ValueError, match=f"{name}: the file is truncated, an incomplete download: "
                                                 "download it again"):
                load_torch_file(path)
