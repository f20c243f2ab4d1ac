import numpy as np
import pytest

from keras_hourglass.joints import FLIC, MPII, JointSpec, get_joint_spec, infer_flip_partners


@pytest.mark.parametrize("spec", [MPII, FLIC])
def test_flip_index_is_an_involution_swapping_left_and_right(spec):
    flip = spec.flip_index
    np.testing.assert_array_equal(flip[flip], np.arange(spec.num_keypoints))
    for k, name in enumerate(spec.names):
        partner = spec.names[flip[k]]
        if name.startswith("l_"):
            assert partner == "r_" + name[2:]
        elif name.startswith("r_"):
            assert partner == "l_" + name[2:]
        else:
            assert partner == name


def test_mpii_order_matches_the_data_set():
    # MPII's official order (shared/data/README.md): 0 r-ankle ... 15 l-wrist.
    assert MPII.num_keypoints == 16
    assert MPII.names[0] == "r_ankle" and MPII.names[9] == "head_top" and MPII.names[15] == "l_wrist"
    np.testing.assert_array_equal(MPII.flip_index, [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10])
    assert len(MPII.mean_index) == 14
    assert MPII.index("pelvis") not in MPII.mean_index and MPII.index("thorax") not in MPII.mean_index


def test_flic_torso_and_groups():
    assert FLIC.num_keypoints == 11
    assert FLIC.indices(FLIC.torso) == [3, 6]
    assert sorted(FLIC.mean_index) == [1, 2, 4, 5]


def test_sides_and_limbs():
    assert MPII.side("l_wrist") == "left" and MPII.side("r_wrist") == "right" and MPII.side("pelvis") == "centre"
    assert all(0 <= a < 16 and 0 <= b < 16 for a, b in MPII.limb_index)


def test_bad_specs_name_the_field():
    with pytest.raises(ValueError, match="limbs names unknown joint 'elbow'"):
        JointSpec("x", ("a", "b"), limbs=(("a", "elbow"),))
    with pytest.raises(ValueError, match="unique"):
        JointSpec("x", ("a", "a"))
    with pytest.raises(ValueError, match="more than one flip pair"):
        JointSpec("x", ("a", "b", "c"), flip_partners=(("a", "b"), ("a", "c")))
    with pytest.raises(ValueError, match="Unknown joint spec 'coco'"):
        get_joint_spec("coco")


def test_infer_flip_partners():
    assert infer_flip_partners(["l_knee", "r_knee", "neck", "left_x", "right_x"]) == (("l_knee", "r_knee"), ("left_x", "right_x"))
