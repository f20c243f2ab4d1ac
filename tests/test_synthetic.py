import filecmp

import h5py
import numpy as np

from keras_hourglass.data.mpii import load_mpii_h5
from keras_hourglass.data.synthetic import generate
from keras_hourglass.metrics import PCKH_THRESHOLD, evaluate_pck


def test_deterministic_and_loadable(tmp_path):
    first = generate(tmp_path / "a", num_train=6, num_valid=3, seed=5, image_size=(96, 128))
    second = generate(tmp_path / "b", num_train=6, num_valid=3, seed=5, image_size=(96, 128))
    other = generate(tmp_path / "c", num_train=6, num_valid=3, seed=6, image_size=(96, 128))
    for split in ("train", "valid"):
        with h5py.File(first[split]) as a, h5py.File(second[split]) as b, h5py.File(other[split]) as c:
            for key in a:
                np.testing.assert_array_equal(a[key][()], b[key][()])
            assert not np.array_equal(a["part"][()], c["part"][()])
    assert filecmp.cmp(tmp_path / "a/images/train_000004.jpg", tmp_path / "b/images/train_000004.jpg", shallow=False)
    records = load_mpii_h5(first["train"], tmp_path / "a" / "images")
    assert len(records) == 6 and records.annotated.all()
    assert records.check_images() == {"images": 6}
    assert (records.keypoints >= 0).all() and (records.keypoints[..., 0] < 128).all()


def test_mean_pose_scores_badly(tmp_path):
    paths = generate(tmp_path, num_train=300, num_valid=100, seed=0, image_size=(128, 128))
    train, valid = load_mpii_h5(paths["train"]), load_mpii_h5(paths["valid"])
    # The best constant pose relative to the person box still misses most joints.
    relative = (train.keypoints - train.center[:, None]) / train.scale[:, None, None]
    mean_pose = valid.center[:, None] + relative.mean(0) * valid.scale[:, None, None]
    result = evaluate_pck(mean_pose, valid.keypoints, valid.annotated, valid.normalizer, valid.spec,
                          PCKH_THRESHOLD, "PCKh")
    assert result.mean < 40
