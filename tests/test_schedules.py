import keras
import numpy as np
import pytest

from keras_hourglass.schedules import WarmupStepDecay


def test_warmup_then_step_decay():
    schedule = WarmupStepDecay([1.0, 0.2, 0.04], boundaries=[10, 20], warmup_steps=4)
    rates = [float(schedule(step)) for step in (0, 1, 3, 4, 9, 10, 19, 20, 100)]
    np.testing.assert_allclose(rates, [0.25, 0.5, 1.0, 1.0, 1.0, 0.2, 0.2, 0.04, 0.04], rtol=1e-6)


def test_round_trips_through_keras_serialization():
    schedule = WarmupStepDecay([1e-3, 2e-4], boundaries=[5], warmup_steps=2)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize("kwargs, message", [
    (dict(values=[1.0, 0.1], boundaries=[]), "one more entry"),
    (dict(values=[1.0, 0.1, 0.01], boundaries=[5, 5]), "increasing"),
    (dict(values=[-1.0]), "positive"),
    (dict(values=[1.0], warmup_steps=-1), "warmup_steps"),
])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupStepDecay(**kwargs)
