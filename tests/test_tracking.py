"""People across video frames: ids by keypoint similarity, the 1-euro filter."""

import numpy as np
import pytest

from keras_hourglass.tracking import OneEuroFilter, PersonTracker, keypoint_similarity


def person(x, y, joints=5):
    return np.stack([np.linspace(x, x + 40, joints), np.linspace(y, y + 80, joints)], axis=-1)


def frame(*people):
    keypoints = np.stack(people) if people else np.zeros((0, 5, 2))
    boxes = [[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in keypoints]
    return keypoints, np.ones(keypoints.shape[:2], bool), boxes


def test_similarity_is_one_for_the_same_pose_and_falls_with_the_distance():
    a = person(0, 0)
    found = np.ones(5, bool)
    assert keypoint_similarity(a, found, a, found, 56.6) == 1.0
    near, far = (keypoint_similarity(a + shift, found, a, found, 56.6) for shift in (3, 30))
    assert 1 > near > 0.5 > far
    assert keypoint_similarity(a, ~found, a, found, 56.6) == 0.0  # no joint in common


def test_ids_follow_the_people_whatever_their_order():
    tracker = PersonTracker()
    assert tracker.update(*frame(person(0, 0), person(200, 0))) == [1, 2]
    assert tracker.update(*frame(person(203, 2), person(2, 1))) == [2, 1]  # listed the other way round
    assert tracker.update(*frame(person(4, 2), person(500, 0), person(205, 3))) == [1, 3, 2]  # a newcomer


def test_a_person_hidden_for_a_few_frames_keeps_its_id():
    tracker = PersonTracker(max_missed=2)
    assert tracker.update(*frame(person(0, 0), person(200, 0))) == [1, 2]
    for _ in range(2):
        assert tracker.update(*frame(person(0, 0))) == [1]
    assert tracker.update(*frame(person(0, 0), person(201, 0))) == [1, 2]
    for _ in range(3):
        tracker.update(*frame(person(0, 0)))
    assert tracker.update(*frame(person(0, 0), person(201, 0))) == [1, 3]  # gone too long: a new id
    assert tracker.update(*frame()) == []


def test_the_filter_steadies_a_still_joint_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    still = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = 100 + rng.normal(0, 2, (90, 1, 2))
    smoothed = np.array([still.filter(v, t / 30) for t, v in enumerate(noisy)])
    assert smoothed[0].tolist() == noisy[0].tolist()  # the first value as it is
    assert smoothed[30:].std() < noisy[30:].std() / 2
    ramp = np.arange(60, dtype=float)[:, None, None] * np.ones((1, 1, 2)) * 10  # 300 px/s
    lag = {}
    for beta in (0.0, 0.05):
        moving = OneEuroFilter(min_cutoff=1.0, beta=beta)
        lag[beta] = ramp[-1, 0, 0] - [moving.filter(v, t / 30) for t, v in enumerate(ramp)][-1][0, 0]
    assert lag[0.05] < lag[0.0] / 3  # the speed raises the cut-off: less lag
    unknown = OneEuroFilter()
    unknown.filter(np.array([[1.0, 2.0]]), 0.0)
    assert np.isnan(unknown.filter(np.array([[np.nan, 2.0]]), 0.1)[0, 0])
    assert unknown.filter(np.array([[5.0, 2.0]]), 0.2)[0, 0] == 5.0  # after a gap: the new value, unfiltered


@pytest.mark.parametrize("settings", [dict(min_cutoff=0), dict(beta=-1), dict(derivative_cutoff=0)])
def test_bad_filter_settings_are_named(settings):
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(**settings)
