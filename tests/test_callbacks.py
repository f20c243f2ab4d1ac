import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hourglass.callbacks import PCKCallback, ResumeCheckpoint, SavedModelCheckpoint, latest_resume_state
from keras_hourglass.data.records import PoseRecords
from keras_hourglass import MPII, HeatmapCodec, HeatmapMSE, build_stacked_hourglass
from keras_hourglass.joints import JointSpec
from tests.conftest import TINY, assert_close_to_scale


@pytest.fixture
def tiny_model():
    model = build_stacked_hourglass(2, MPII.num_keypoints, **TINY)
    model.compile(keras.optimizers.RMSprop(1e-3), loss=HeatmapMSE())
    return model


def test_saved_model_checkpoint_reloads_with_the_keras_outputs(tiny_model, tmp_path):
    codec = HeatmapCodec(TINY["image_size"], flip_index=MPII.flip_index)
    checkpoint = SavedModelCheckpoint(str(tmp_path), codec, MPII.names, monitor="val_pckh", verbose=0)
    checkpoint.set_model(tiny_model)
    checkpoint.on_epoch_end(0, {"val_pckh": 10.0})
    checkpoint.on_epoch_end(1, {"val_pckh": 5.0})  # worse: best/ keeps epoch 1
    checkpoint.on_epoch_end(2, {"loss": 1.0})  # no metric this epoch: skipped
    checkpoint.on_train_end()
    assert json.load(open(tmp_path / "best" / "assets.extra" / "checkpoint.json")) == {
        "epoch": 1, "monitor": "val_pckh", "value": 10.0}
    assert json.load(open(tmp_path / "last" / "assets.extra" / "checkpoint.json"))["epoch"] == 3
    loaded = tf.saved_model.load(str(tmp_path / "best"))
    crops = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    assert_close_to_scale(loaded.signatures["crops"](images=tf.constant(crops))["heatmaps"],
                          tiny_model(crops, training=False)[-1])
    assert checkpoint.get_state() == {"best": 10.0, "best_epoch": 1}


def test_when_the_last_epoch_is_the_best_last_is_a_copy_of_best(tiny_model, tmp_path):
    codec = HeatmapCodec(TINY["image_size"], flip_index=MPII.flip_index)
    checkpoint = SavedModelCheckpoint(str(tmp_path), codec, MPII.names, monitor="val_pckh", verbose=0)
    checkpoint.set_model(tiny_model)
    checkpoint.on_epoch_end(0, {"val_pckh": 10.0})
    checkpoint._estimator = None  # a second export would have to build and trace a new estimator
    checkpoint.on_train_end()
    assert checkpoint._estimator is None  # nothing was exported again
    assert json.load(open(tmp_path / "last" / "assets.extra" / "checkpoint.json")) == {
        "epoch": 1, "monitor": "val_pckh", "value": None}
    assert (tmp_path / "last" / "saved_model.pb").read_bytes() == (tmp_path / "best" / "saved_model.pb").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["best", "last"]


def test_saved_model_checkpoint_min_mode_and_bad_mode(tiny_model, tmp_path):
    codec = HeatmapCodec(TINY["image_size"])
    checkpoint = SavedModelCheckpoint(str(tmp_path), codec, MPII.names, monitor="val_loss", mode="min", verbose=0)
    assert checkpoint.best == math.inf
    with pytest.raises(ValueError, match="mode"):
        SavedModelCheckpoint(str(tmp_path), codec, MPII.names, mode="best")


def test_resume_checkpoint_restores_weights_optimizer_and_callback_state(tiny_model, tmp_path):
    x = np.random.default_rng(1).uniform(0, 1, (4, 64, 64, 3)).astype(np.float32)
    y = np.random.default_rng(2).uniform(0, 1, (4, 16, 16, 16)).astype(np.float32)
    tiny_model.fit(x, (y, y), epochs=1, batch_size=2, verbose=0)
    best = SavedModelCheckpoint(str(tmp_path / "ckpt"), HeatmapCodec(TINY["image_size"]), MPII.names, verbose=0)
    best.set_state({"best": 42.0, "best_epoch": 1})
    saver = ResumeCheckpoint(str(tmp_path / "resume"), stateful={"best": best})
    saver.set_model(tiny_model)
    saver.on_epoch_end(0, {"loss": 0.5})
    saver.on_epoch_end(1, {"loss": 0.4})
    os.makedirs(tmp_path / "resume" / "epoch-0003.partial")  # a kill mid-write: ignored
    latest = latest_resume_state(str(tmp_path / "resume"))
    assert latest.endswith("epoch-0002") and sorted(os.listdir(tmp_path / "resume")) == ["epoch-0002", "epoch-0003.partial"]
    saver.on_train_begin()  # a resumed run clears what a kill left half-written
    assert sorted(os.listdir(tmp_path / "resume")) == ["epoch-0002"]

    fresh = build_stacked_hourglass(2, MPII.num_keypoints, **TINY)
    fresh.compile(keras.optimizers.RMSprop(1e-3), loss=HeatmapMSE())
    fresh_best = SavedModelCheckpoint(str(tmp_path / "ckpt"), HeatmapCodec(TINY["image_size"]), MPII.names)
    restorer = ResumeCheckpoint(str(tmp_path / "resume"), stateful={"best": fresh_best})
    restorer.set_model(fresh)
    assert restorer.restore(latest) == 2
    assert fresh_best.best == 42.0
    assert int(fresh.optimizer.iterations) == int(tiny_model.optimizer.iterations) == 2
    for a, b in zip(fresh.weights, tiny_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(fresh.optimizer.variables, tiny_model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_pck_callback_writes_the_metric_and_groups_into_the_logs(tmp_path):
    import cv2

    spec = JointSpec("dots", ("l_a", "r_a", "c"), flip_partners=(("l_a", "r_a"),),
                     groups={"A": ("l_a", "r_a"), "C": ("c",)}, mean_joints=("l_a", "r_a", "c"))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64, 3), np.uint8))
    records = PoseRecords(spec=spec, image_path=[str(tmp_path / "a.png")] * 2, keypoints=np.full((2, 3, 2), 20.0),
                          annotated=np.ones((2, 3)), visible=np.ones((2, 3)), center=[[31.5, 31.5]] * 2,
                          scale=[0.32] * 2, normalizer=[10.0] * 2, id=["0", "1"], source="dots")
    model = build_stacked_hourglass(1, 3, **TINY)
    callback = PCKCallback(records, every=2, flip_test=True, verbose=0)
    callback.set_model(model)
    callback.set_params({"epochs": 3})
    logs = {}
    callback.on_epoch_end(0, logs)
    assert set(logs) == {"val_pck", "val_pck_a", "val_pck_c"}  # not an evaluation epoch: NaN
    assert all(math.isnan(v) for v in logs.values())
    callback.on_epoch_end(1, logs)
    assert set(logs) == {"val_pck", "val_pck_a", "val_pck_c"}
    assert callback.metric == "PCK" and callback.threshold == 0.2 and callback.monitor == "val_pck"
    assert logs["val_pck"] == pytest.approx(callback.last_result.mean)
    logs = {}
    callback.on_epoch_end(2, logs)  # the last epoch is always evaluated
    assert "val_pck" in logs
    with pytest.raises(ValueError, match="every"):
        PCKCallback(records, every=0)


def test_throughput_counts_the_steps_of_each_epoch_and_prints_the_rate(capsys):
    from keras_hourglass.callbacks import Throughput

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    throughput = Throughput(batch_size=4)
    model.fit(np.zeros((20, 3)), np.zeros((20, 1)), batch_size=4, epochs=2, callbacks=[throughput], verbose=0)
    lines = [line for line in capsys.readouterr().out.splitlines() if "images/s" in line]
    assert len(throughput.rates) == 2 and all(rate > 0 for rate in throughput.rates)
    assert lines[0].startswith("epoch 1: 5 steps of 4 images in ") and lines[1].startswith("epoch 2: 5 steps")
