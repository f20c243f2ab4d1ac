import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hourglass.losses import HeatmapMSE
from keras_hourglass.model import build_stacked_hourglass
from tests.conftest import TINY


def test_unweighted_loss_is_the_plain_mean():
    y_true = np.zeros((2, 4, 4, 3), np.float32)
    y_pred = np.zeros((2, 4, 4, 3), np.float32)
    y_pred[0, :, :, 1] = 2.0  # one joint of one person off by 2 everywhere
    # Per-joint MSE is 4 for that joint, 0 for the other 5: mean 4/6.
    assert float(HeatmapMSE()(y_true, y_pred)) == pytest.approx(4 / 6)


def test_joints_with_zero_weight_are_ignored():
    y_true = np.zeros((2, 4, 4, 3), np.float32)
    y_pred = np.zeros((2, 4, 4, 3), np.float32)
    y_pred[..., 0] = 1.0  # joint 0: per-joint MSE 1
    y_pred[..., 2] = 5.0  # joint 2 is not annotated: must not count
    weights = np.array([[1, 1, 0], [1, 1, 0]], np.float32)
    # Mean over the 4 annotated joint instances: (1 + 0 + 1 + 0) / 4.
    assert float(HeatmapMSE()(y_true, y_pred, sample_weight=weights)) == pytest.approx(0.5)
    with tf.GradientTape() as tape:
        prediction = tf.Variable(y_pred)
        loss = HeatmapMSE()(y_true, prediction, sample_weight=weights)
    gradient = tape.gradient(loss, prediction).numpy()
    assert np.all(gradient[..., 2] == 0) and np.all(gradient[..., 0] > 0)


def test_all_weights_zero_gives_zero_not_nan():
    y = np.ones((1, 4, 4, 2), np.float32)
    assert float(HeatmapMSE()(y, 2 * y, sample_weight=np.zeros((1, 2)))) == 0.0


def test_multi_output_fit_uses_per_stack_weights():
    model = build_stacked_hourglass(2, 3, **TINY)
    model.compile(keras.optimizers.SGD(0.0), loss=HeatmapMSE())
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    targets = np.random.default_rng(1).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    weights = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
    logs = model.train_on_batch(images, (targets, targets), sample_weight=(weights, weights), return_dict=True)
    predictions = [p.numpy() for p in model(images, training=True)]  # BatchNorm as in the step
    for stack, prediction in enumerate(predictions):
        per_joint = ((prediction - targets) ** 2).mean(axis=(1, 2))
        expected = (per_joint * weights).sum() / weights.sum()
        assert logs[f"heatmaps_stack{stack}_loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["loss"] == pytest.approx(logs["heatmaps_stack0_loss"] + logs["heatmaps_stack1_loss"], rel=1e-5)


def test_serialization_round_trip():
    loss = HeatmapMSE(reduction="sum")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, HeatmapMSE) and clone.reduction == "sum"
