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


def test_the_associative_embedding_losses_equal_the_reference():
    """Against pose-ae-train's `HeatmapLoss` and `singleTagLoss` on two images (`make_fixtures.py` `loss_case`)."""
    from keras_hourglass.losses import masked_heatmap_loss, tag_losses
    from tests.conftest import ROOT

    fixture = np.load(ROOT / "tests" / "data" / "associative_embedding" / "loss_two_images.npz")
    channels_last = lambda a: a.transpose(0, 2, 3, 1)  # noqa: E731 - the reference's [B, J, H, W]
    detection = masked_heatmap_loss(channels_last(fixture["predicted"]), channels_last(fixture["target"]),
                                    fixture["masks"])
    np.testing.assert_allclose(np.asarray(detection), fixture["detection"], rtol=1e-5)
    keypoints = fixture["keypoints"].copy()  # the reference indexes [J, H, W] maps; ours are [H, W, J]
    joints, res = 17, fixture["tags"].shape[-1]
    joint, pixel = np.divmod(keypoints[..., 0], res * res)
    keypoints[..., 0] = np.where(keypoints[..., 1] > 0, pixel * joints + joint, 0)
    push, pull = tag_losses(channels_last(fixture["tags"]), keypoints)
    np.testing.assert_allclose(np.asarray(push), fixture["push"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(pull), fixture["pull"], rtol=1e-5)


def test_the_tag_losses_pull_a_persons_tags_together_and_push_people_apart():
    import tensorflow as tf

    from keras_hourglass.losses import tag_losses

    tags = tf.Variable(np.random.default_rng(0).normal(0, 1, (1, 4, 4, 2)).astype(np.float32))
    # two people of two joints each: (row * 4 + column) * 2 + joint
    keypoints = np.array([[[[0 * 2 + 0, 1], [5 * 2 + 1, 1]], [[10 * 2 + 0, 1], [15 * 2 + 1, 1]]]], np.int32)
    optimizer = tf.keras.optimizers.SGD(0.5)
    first = None
    for _ in range(100):
        with tf.GradientTape() as tape:
            push, pull = tag_losses(tags, keypoints)
            loss = tf.reduce_sum(push + pull)
        first = first if first is not None else (float(push[0]), float(pull[0]))
        optimizer.apply_gradients([(tape.gradient(loss, tags), tags)])
    assert float(pull[0]) < first[1] / 10 and float(push[0]) < first[0]
    values = tags.numpy()[0]
    person = lambda a, b: (values.reshape(-1)[a], values.reshape(-1)[b])  # noqa: E731
    (a1, a2), (b1, b2) = person(0, 11), person(20, 31)
    assert abs(a1 - a2) < 0.1 and abs(b1 - b2) < 0.1 and abs((a1 + a2) - (b1 + b2)) / 2 > 1
