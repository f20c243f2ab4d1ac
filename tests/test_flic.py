import numpy as np
import pytest
import scipy.io

from keras_hourglass.data.flic import MODEC_COLUMNS, load_flic_h5, load_flic_mat, to_observer_centric
from keras_hourglass.joints import FLIC


def test_hdf5_layout(shared_data):
    for split, count in (("train", 3987), ("valid", 1016)):
        records = load_flic_h5(shared_data / "flic" / f"{split}.h5")
        assert len(records) == count and records.spec is FLIC and records.annotated.all()
        names = (shared_data / "flic" / f"{split}_images.txt").read_text().split()
        assert list(records.image_path) == names


def test_observer_and_person_centric(shared_data):
    observer = load_flic_h5(shared_data / "flic" / "valid.h5")
    person = load_flic_h5(shared_data / "flic" / "valid_personcentric.h5")
    converted = load_flic_h5(shared_data / "flic" / "valid_personcentric.h5", person_centric=False)
    np.testing.assert_array_equal(converted.keypoints, observer.keypoints)
    assert (np.any(person.keypoints != observer.keypoints, axis=(1, 2))).sum() == 48
    np.testing.assert_array_equal(person.normalizer, observer.normalizer)
    with pytest.raises(ValueError, match="look observer-centric"):
        load_flic_h5(shared_data / "flic" / "valid.h5", person_centric=True)


def write_examples(path, parts, train_rows):
    """A tiny FLIC `examples.mat` from person-centric 11-joint parts (1-based pixels)."""
    dtype = [(n, "O") for n in ("coords", "filepath", "istrain", "istest", "torsobox", "imgdims")]
    examples = np.zeros((1, len(parts)), dtype=dtype)
    for row, part in enumerate(parts):
        coords = np.full((2, 29), np.nan)
        coords[:, list(MODEC_COLUMNS)] = part.T
        x = part[[0, 3, 6, 7], 0]
        examples[0, row] = (coords, f"img{row}.jpg", int(row in train_rows), int(row not in train_rows),
                            np.array([x.min(), 100.0, x.max(), 300.0]), np.array([480, 720, 3]))
    scipy.io.savemat(path, {"examples": examples})


def test_examples_mat_agrees_with_the_hdf5_layout(shared_data, tmp_path):
    person = load_flic_h5(shared_data / "flic" / "valid_personcentric.h5")
    observer = load_flic_h5(shared_data / "flic" / "valid.h5")
    away = np.flatnonzero(np.any(person.keypoints != observer.keypoints, axis=(1, 2)))[:2]
    rows = [0, 1, *away]
    parts = person.to_source_pixels(person.keypoints[rows])
    parts[0, FLIC.index("nose")] = np.nan  # a missing joint
    write_examples(tmp_path / "examples.mat", parts, train_rows={1})
    test = load_flic_mat(tmp_path / "examples.mat", split="test")
    assert list(test.image_path) == ["img0.jpg", "img2.jpg", "img3.jpg"]
    expected = observer.keypoints[[0, *away]]
    annotated = np.ones((3, 11), bool)
    annotated[0, FLIC.index("nose")] = False
    np.testing.assert_array_equal(test.annotated, annotated)
    np.testing.assert_allclose(test.keypoints[annotated], expected[annotated], atol=1e-4)
    np.testing.assert_allclose(test.normalizer, observer.normalizer[[0, *away]], rtol=1e-5)
    anatomical = load_flic_mat(tmp_path / "examples.mat", split="test", person_centric=True)
    np.testing.assert_allclose(anatomical.keypoints[1:], person.keypoints[away], atol=1e-4)
    assert test.scale[0] == pytest.approx(2.2) and test.center[0, 1] == pytest.approx(239.0)
    assert len(load_flic_mat(tmp_path / "examples.mat", split="train")) == 1
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_flic_mat(tmp_path / "examples.mat", split="valid")


def test_to_observer_centric_is_idempotent(shared_data):
    person = load_flic_h5(shared_data / "flic" / "train_personcentric.h5")
    once = to_observer_centric(person.keypoints)
    np.testing.assert_array_equal(to_observer_centric(once), once)
