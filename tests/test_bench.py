"""The deployment benchmark's arithmetic: FLOPs counted from the model, not assumed."""

from bench.deploy_speed import model_flops, seconds_per_call


def test_model_flops_counts_every_convolution():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 outputs * 3*3*3 MACs * 4 channels
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 4*4 outputs * 4 MACs * 6 channels
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Add()([x, x]))
    assert model_flops(model) == 2 * (8 * 8 * 27 * 4 + 4 * 4 * 4 * 6)


def test_seconds_per_call_calls_warmup_then_steps():
    calls = []
    assert seconds_per_call(lambda: calls.append(1), steps=3, warmup=2) >= 0
    assert len(calls) == 5
