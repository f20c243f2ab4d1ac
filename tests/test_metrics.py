import h5py
import numpy as np
import pytest
import scipy.io

from keras_hourglass.joints import FLIC, MPII, JointSpec
from keras_hourglass.metrics import (
    CURVE_THRESHOLDS,
    PCKH_THRESHOLD,
    area_under_curve,
    evaluate_pck,
    head_normalizer,
    pck,
    pck_curve,
    summarize_pck,
    torso_normalizer,
)

# The published MPII PCKh@0.5 of the original 8-stack model (shared/data/README.md).
PUBLISHED_HG8 = {
    "Head": 95.94, "Shoulder": 94.68, "Elbow": 88.53, "Wrist": 83.38,
    "Hip": 87.48, "Knee": 83.09, "Ankle": 79.05, "Mean": 87.56,
}


def load_mpii_reference(shared_data):
    mat = scipy.io.loadmat(shared_data / "mpii" / "detections_our_format.mat")
    ground_truth = mat["pos_gt_src"].transpose(2, 0, 1)  # [N, 16, 2]
    annotated = mat["jnt_missing"].T == 0  # [N, 16]
    head_boxes = mat["headboxes_src"].transpose(2, 0, 1)  # [N, 2 corners, (x, y)]
    with h5py.File(shared_data / "mpii" / "valid-preds-hg8.h5", "r") as f:
        predictions = f["preds"][()]
    return predictions, ground_truth, annotated, head_boxes


def test_reproduces_the_published_mpii_table(shared_data):
    predictions, ground_truth, annotated, head_boxes = load_mpii_reference(shared_data)
    result = evaluate_pck(predictions, ground_truth, annotated, head_normalizer(head_boxes), MPII, PCKH_THRESHOLD, "PCKh")
    measured = {**result.groups, "Mean": result.mean}
    assert list(measured) == list(PUBLISHED_HG8)
    for group, published in PUBLISHED_HG8.items():
        assert round(measured[group], 2) == pytest.approx(published, abs=1e-9), group
    assert "Mean" in result.format_table() and "87.56" in result.format_table()
    assert result.counts["head_top"] == annotated[:, 9].sum()


def test_head_normalizer_matches_the_hdf5_layout(shared_data):
    _, _, _, head_boxes = load_mpii_reference(shared_data)
    with h5py.File(shared_data / "mpii" / "valid.h5", "r") as f:
        normalize = f["normalize"][()]
    np.testing.assert_allclose(head_normalizer(head_boxes), normalize, rtol=1e-6)


@pytest.mark.parametrize("split", ["train", "valid"])
def test_flic_torso_normalizer_is_anatomical(shared_data, split):
    with h5py.File(shared_data / "flic" / f"{split}_personcentric.h5", "r") as f:
        person_parts, person_normalize = f["part"][()], f["normalize"][()]
    with h5py.File(shared_data / "flic" / f"{split}.h5", "r") as f:
        observer_parts, observer_normalize = f["part"][()], f["normalize"][()]
    np.testing.assert_allclose(torso_normalizer(person_parts, FLIC), person_normalize, rtol=1e-6)
    # The observer-centric file stores the same, anatomical torso: computing
    # it from mirrored (observer-centric) labels would take the other diagonal.
    np.testing.assert_array_equal(observer_normalize, person_normalize)
    mirrored = np.any(observer_parts != person_parts, axis=(1, 2))
    assert mirrored.sum() == {"train": 199, "valid": 48}[split]
    assert not np.allclose(torso_normalizer(observer_parts[mirrored], FLIC), person_normalize[mirrored])


def test_hand_worked_pck_with_unannotated_joints():
    spec = JointSpec("toy", ("l_a", "r_a", "c"), flip_partners=(("l_a", "r_a"),),
                     groups={"A": ("l_a", "r_a"), "C": ("c",)}, mean_joints=("l_a", "r_a"))
    ground_truth = np.zeros((3, 3, 2))
    normalizer = np.array([10.0, 20.0, 10.0])
    predictions = np.zeros((3, 3, 2))
    predictions[0, 0] = [3, 4]     # distance 5 / 10 = 0.5: correct (<=)
    predictions[1, 0] = [0, 10.2]  # 10.2 / 20 = 0.51: wrong
    predictions[2, 0] = [100, 0]   # not annotated: ignored
    predictions[0, 1] = [6, 0]     # 0.6: wrong
    predictions[:, 2] = np.nan     # NaN predictions are wrong
    annotated = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]], bool)
    per_joint = pck(predictions, ground_truth, annotated, normalizer, 0.5)
    np.testing.assert_allclose(per_joint, [50.0, 200 / 3, 0.0])
    result = evaluate_pck(predictions, ground_truth, annotated, normalizer, spec, 0.5)
    assert result.groups == pytest.approx({"A": (50 + 200 / 3) / 2, "C": 0.0})
    assert result.mean == pytest.approx((50 + 200 / 3) / 2)
    assert result.counts == {"l_a": 2, "r_a": 3, "c": 1}


def test_never_annotated_joint_is_nan_and_left_out_of_means():
    per_joint = pck(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), [[1, 0], [1, 0]], [1.0, 1.0], 0.5)
    assert per_joint[0] == 100.0 and np.isnan(per_joint[1])
    spec = JointSpec("toy", ("a", "b"), groups={"Both": ("a", "b"), "B": ("b",)})
    result = summarize_pck(per_joint, spec, "PCK", 0.5)
    assert result.groups["Both"] == 100.0 and np.isnan(result.groups["B"]) and result.mean == 100.0


def test_curve_and_area():
    ground_truth = np.zeros((4, 1, 2))
    predictions = np.array([[[0.0, 0.0]], [[0.1, 0.0]], [[0.2, 0.0]], [[0.3, 0.0]]])
    curve = pck_curve(predictions, ground_truth, np.ones((4, 1)), np.ones(4), [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(curve[:, 0], [25, 50, 75, 100])
    assert area_under_curve([0.0, 0.1, 0.2, 0.3], curve)[0] == pytest.approx(62.5)
    assert np.all(np.diff(pck_curve(predictions, ground_truth, np.ones((4, 1)), np.ones(4))[:, 0]) >= 0)
    assert CURVE_THRESHOLDS[0] == 0.0 and CURVE_THRESHOLDS[-1] == 0.5 and len(CURVE_THRESHOLDS) == 51


def test_bad_inputs_name_the_argument():
    gt = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match="predictions and ground_truth must both have shape"):
        pck(np.zeros((2, 4, 2)), gt, np.ones((2, 3)), np.ones(2), 0.5)
    with pytest.raises(ValueError, match=r"annotated must have shape \(2, 3\)"):
        pck(gt, gt, np.ones((2, 4)), np.ones(2), 0.5)
    with pytest.raises(ValueError, match=r"normalizer must have shape \(2,\)"):
        pck(gt, gt, np.ones((2, 3)), np.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"normalizer must be positive.*rows \[1\]"):
        pck(gt, gt, np.ones((2, 3)), [1.0, 0.0], 0.5)
    with pytest.raises(ValueError, match="head_boxes must have"):
        head_normalizer(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="defines no torso joints"):
        torso_normalizer(gt, MPII)
    with pytest.raises(ValueError, match="thresholds must be"):
        area_under_curve([0.2, 0.1], [1, 2])
    with pytest.raises(ValueError, match="but mpii has 16"):
        evaluate_pck(gt, gt, np.ones((2, 3)), np.ones(2), MPII, 0.5)
