import keras
import numpy as np
import pytest

from keras_hourglass import MPII, build_stacked_hourglass
from keras_hourglass.equalization import _groups, equalize_channel_ranges
from tests.conftest import TINY


def randomized_model():
    """A tiny hourglass whose BatchNorm statistics and channel gains differ, as a trained one's do."""
    keras.utils.set_random_seed(0)
    model = build_stacked_hourglass(2, MPII.num_keypoints, **TINY)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma * rng.uniform(0.2, 5, gamma.shape), beta + rng.normal(0, 1, beta.shape),
                               mean + rng.normal(0, 1, mean.shape), variance * rng.uniform(0.5, 2, variance.shape)])
    return model


def test_the_outputs_do_not_change_and_the_channel_ranges_become_equal():
    model = randomized_model()
    crops = np.random.default_rng(1).uniform(0, 1, (8, 64, 64, 3)).astype(np.float32)
    before = [o.numpy() for o in model(crops, training=False)]
    assert equalize_channel_ranges(model, crops) > 10
    after = [o.numpy() for o in model(crops, training=False)]
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max())
    # Every scaled group now has one channel maximum, the median it had before, over the calibration crops.
    tensors, group_of, scalable, _ = _groups(model)
    keys = [k for k in tensors if group_of[k] in scalable]
    values = keras.Model(model.inputs, [tensors[k] for k in keys]).predict(crops, verbose=0)
    peaks = {}
    for key, value in zip(keys, values):
        peak = np.abs(value).reshape(-1, value.shape[-1]).max(0)
        peaks[group_of[key]] = np.maximum(peaks.get(group_of[key], 0), peak)
    spreads = [p.max() / p.min() for p in peaks.values() if p.min() > 0]
    assert spreads and max(spreads) < 1.01


def test_outputs_and_inputs_are_never_scaled():
    model = randomized_model()
    tensors, group_of, scalable, _ = _groups(model)
    for tensor in (*model.inputs, *model.outputs):
        assert group_of[id(tensor)] not in scalable


def test_a_layer_called_twice_is_refused():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(3, 1)
    model = keras.Model(inputs, conv(conv(inputs)))
    with pytest.raises(ValueError, match="called 2 times"):
        equalize_channel_ranges(model, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="non-empty batch"):
        equalize_channel_ranges(model, np.zeros((0, 8, 8, 3), np.float32))
