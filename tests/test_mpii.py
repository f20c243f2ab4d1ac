import json

import numpy as np
import pytest
import scipy.io

from keras_hourglass.data.mpii import load_mpii_h5, load_mpii_json, load_mpii_release, split_by_reference
from keras_hourglass.joints import MPII


def write_release(path, people, extra_test_image=True):
    """A tiny `mpii_human_pose_v1_u12_1.mat`: one annolist entry per person, plus a test image."""
    point_dtype = [("x", "O"), ("y", "O"), ("id", "O"), ("is_visible", "O")]
    rect_dtype = [("x1", "O"), ("y1", "O"), ("x2", "O"), ("y2", "O"), ("annopoints", "O"), ("scale", "O"), ("objpos", "O")]
    entries = []
    for person in people:
        joints = [k for k in range(16) if person["joints_vis"][k]]
        points = np.zeros((1, len(joints)), dtype=point_dtype)
        for i, k in enumerate(joints):
            points[0, i] = (person["joints"][k][0], person["joints"][k][1], k, str(person["visible"][k]))
        rects = np.zeros((1, 2), dtype=rect_dtype)
        (x1, y1), (x2, y2) = person["head_box"]
        rects[0, 0] = (x1, y1, x2, y2, {"point": points}, person["scale"],
                       {"x": person["center"][0], "y": person["center"][1]})
        # A second rectangle without joints (a person in the background): skipped.
        rects[0, 1] = (0, 0, 1, 1, np.zeros((0, 0)), 1.0, {"x": 1.0, "y": 1.0})
        entries.append(({"name": person["image"]}, rects))
    if extra_test_image:
        entries.append(({"name": "test.jpg"}, np.zeros((0, 0))))
    annolist = np.zeros((1, len(entries)), dtype=[("image", "O"), ("annorect", "O")])
    for i, entry in enumerate(entries):
        annolist[0, i] = entry
    img_train = np.array([[1] * len(people) + [0] * extra_test_image])
    scipy.io.savemat(path, {"RELEASE": {"annolist": annolist, "img_train": img_train}})


@pytest.fixture(scope="module")
def five_people(shared_data):
    """The five MPII people of annotations.json with their real head boxes."""
    people = json.loads((shared_data / "mpii" / "images" / "annotations.json").read_text())
    head_boxes = scipy.io.loadmat(shared_data / "mpii" / "detections_our_format.mat")["headboxes_src"]
    reference = load_mpii_h5(shared_data / "mpii" / "valid.h5")
    for row, person in enumerate(people):
        person["head_box"] = head_boxes[:, :, row]
        person["visible"] = reference.visible[row].astype(int)
    return people


def test_hdf5_layout(shared_data):
    records = load_mpii_h5(shared_data / "mpii" / "valid.h5", image_dir="/images")
    assert len(records) == 2958 and records.spec is MPII
    assert records.image_path[0] == "/images/005808361.jpg"
    missing = scipy.io.loadmat(shared_data / "mpii" / "detections_our_format.mat")["jnt_missing"].T
    np.testing.assert_array_equal(records.annotated, missing == 0)
    assert not records.visible[~records.annotated].any()
    # Adjusted values are kept as they are, shifted to 0-based pixels.
    np.testing.assert_allclose(records.center[0], [965.0, 409.7773], atol=1e-3)
    assert records.scale[0] == pytest.approx(5.89811, abs=1e-5)
    np.testing.assert_allclose(records.to_source_pixels(records.keypoints[0, 0]), [804.0, 711.0])


def test_the_three_formats_agree(shared_data, five_people, tmp_path):
    write_release(tmp_path / "release.mat", five_people)
    release = load_mpii_release(tmp_path / "release.mat")
    as_json = load_mpii_json(shared_data / "mpii" / "images" / "annotations.json")
    as_h5 = load_mpii_h5(shared_data / "mpii" / "valid.h5").select(range(5))
    assert len(release) == 5 and list(release.id) == [f"annolist {i}, person 0" for i in range(5)]
    for other in (as_json, as_h5):
        np.testing.assert_array_equal(release.annotated, other.annotated)
        np.testing.assert_allclose(release.center, other.center, atol=1e-3)
        np.testing.assert_allclose(release.scale, other.scale, rtol=1e-6)
    np.testing.assert_allclose(release.keypoints, as_json.keypoints, atol=1e-4)
    np.testing.assert_allclose(release.keypoints, as_h5.keypoints, atol=1.0)  # the HDF5 file rounds
    np.testing.assert_allclose(release.normalizer, as_h5.normalizer, rtol=1e-5)
    np.testing.assert_array_equal(release.visible, as_h5.visible)
    assert np.isnan(as_json.normalizer).all()  # the JSON layout has no head boxes


def test_split_by_reference(shared_data, five_people, tmp_path):
    write_release(tmp_path / "release.mat", five_people)
    release = load_mpii_release(tmp_path / "release.mat")
    reference = load_mpii_h5(shared_data / "mpii" / "valid.h5").select([3, 1])
    train, valid = split_by_reference(release, reference)
    assert list(valid.id) == ["annolist 3, person 0", "annolist 1, person 0"]
    assert len(train) == 3 and "annolist 3, person 0" not in train.id


def test_bad_files_are_named(tmp_path, shared_data):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image": "a.jpg", "center": [1, 2], "scale": 1}]')
    with pytest.raises(ValueError, match=r"bad.json: person 0 lacks a field.*joints"):
        load_mpii_json(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_mpii_json(bad)
    people = json.loads((shared_data / "mpii" / "images" / "annotations.json").read_text())
    people[2]["scale"] = -1.0
    bad.write_text(json.dumps(people))
    with pytest.raises(ValueError, match=r"bad.json: record bad.json:2 .*scale must be positive"):
        load_mpii_json(bad)
    people[2]["scale"] = 1.0
    people[1]["joints"][3] = [float("nan"), 4.0]
    bad.write_text(json.dumps(people))
    with pytest.raises(ValueError, match="annotated joint 'l_hip' has non-finite coordinates"):
        load_mpii_json(bad)
    scipy.io.savemat(tmp_path / "other.mat", {"x": 1})
    with pytest.raises(ValueError, match="not an MPII release file"):
        load_mpii_release(tmp_path / "other.mat")


def test_check_images_names_missing_and_truncated_files(shared_data, tmp_path):
    records = load_mpii_json(shared_data / "mpii" / "images" / "annotations.json", shared_data / "mpii" / "images")
    assert records.check_images() == {"images": 5}
    data = (shared_data / "mpii" / "images" / "004645041.jpg").read_bytes()
    (tmp_path / "004645041.jpg").write_bytes(data[: len(data) // 2])
    broken = load_mpii_json(shared_data / "mpii" / "images" / "annotations.json", tmp_path)
    with pytest.raises(ValueError, match=r"record annotations.json:0 .*image file not found: .*005808361.jpg"):
        broken.check_images()
    with pytest.raises(ValueError, match=r"record annotations.json:3 .*004645041.jpg is truncated"):
        broken.select([3]).check_images()
