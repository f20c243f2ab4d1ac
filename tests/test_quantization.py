"""Quantization-aware training: the wrapper rounds as TFLite's int8 kernels do, and fine-tuning works end to end."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hourglass.cli import train
from keras_hourglass.quantization import (
    QuantizedAdd,
    QuantizedInput,
    calibrate,
    quantization_aware_model,
    quantize_activation,
    quantize_kernel,
    ranges_from_tflite,
    tflite_ops,
)
from keras_hourglass.tflite import SIGNATURE, int8_mac_share
from tests.conftest import TINY_ARGS, one_line_error, tiny_model


def trained_like(model, seed=0):
    """Random batch-norm statistics and affine weights, as training leaves them (the defaults fold to no-ops)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 2, shape), rng.normal(0, 0.3, shape), rng.normal(0, 0.3, shape),
                               rng.uniform(0.3, 3, shape)])
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """`(float model, wrapper, int8 file, crops)`: a tiny 2-stack model calibrated on 16 random crops."""
    keras.utils.set_random_seed(0)
    model = trained_like(tiny_model(num_stacks=2))
    crops = np.random.default_rng(1).uniform(0, 1, (20, 64, 64, 3)).astype(np.float32)
    qat = quantization_aware_model(model)
    path = calibrate(qat, model, crops[:16], str(tmp_path_factory.mktemp("calibration")))
    return model, qat, path, crops


def test_activation_rounding_is_tflites_int8_grid():
    low, high = -1.3, 2.9
    x = np.linspace(-3, 4, 1001).astype(np.float32)
    scale = (high - low) / 255
    zero_point = round(-128 - low / scale)
    expected = (np.clip(np.floor(x / scale + 0.5) + zero_point, -128, 127) - zero_point) * scale
    np.testing.assert_allclose(quantize_activation(x, low, high), expected, atol=1e-6)
    assert float(quantize_activation(np.float32(0.0), low, high)) == 0.0  # zero is exact
    # A range that excludes 0 is widened to include it (ReLU outputs: [0, max]).
    assert float(quantize_activation(np.float32(0.0), 0.5, 2.0)) == 0.0
    # Straight through inside the range, nothing outside it.
    x = tf.constant([-5.0, 0.3, 5.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(quantize_activation(x, low, high))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 1.0, 0.0])


def test_kernels_round_per_output_channel_to_127_steps():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32) * np.arange(1, 6)
    rounded = np.asarray(quantize_kernel(kernel))
    scale = np.abs(kernel).max(axis=(0, 1, 2)) / 127
    steps = rounded / scale
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    np.testing.assert_allclose(np.abs(steps).max(axis=(0, 1, 2)), 127, atol=1e-3)
    assert np.all(np.abs(rounded - kernel) <= scale / 2 + 1e-6)


def test_every_op_equals_the_tflite_int8_kernel(converted):
    """Given TFLite's own int8 input, each wrapper layer gives TFLite's int8 output (1 step at most, rarely).

    The whole networks differ by more: a one-step difference in a residual
    stream is multiplied by the next batch normalisation, as in any two int8
    implementations that round one sum differently.
    """
    _, qat, path, crops = converted
    interpreter = tf.lite.Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    interpreter.get_signature_runner(SIGNATURE)(images=crops[16:17])
    details = {d["index"]: d for d in interpreter.get_tensor_details()}

    def value(index):
        scale, zero_point = details[index]["quantization"]
        return (interpreter.get_tensor(index).astype(np.float32) - zero_point) * scale, scale

    ops, checked, differing = tflite_ops(qat, path), 0, []
    for layer in qat.layers:
        if layer.name not in ops or isinstance(layer, QuantizedInput):
            continue
        (inputs, _), *rest = ops[layer.name]
        expected, step = value(ops[layer.name][-1][1])
        if isinstance(layer, QuantizedAdd):  # ADD's operands come in either order; a sum does not care
            got = layer([value(index)[0] for index in inputs[:2]] + [value(op[0][1])[0] for op in rest])
        else:
            got = layer(value(inputs[0])[0])
        steps = np.abs(np.asarray(got) - expected) / step
        assert steps.max() <= 1.0 + 1e-3, (layer.name, steps.max())
        differing.append(np.mean(steps > 0.5))
        checked += 1
    assert checked == len([layer for layer in qat.layers if layer.name in ops]) - 1 > 50
    assert np.mean(differing) < 0.01  # the rare differences: a convolution sum within rounding of a half step


def test_the_wrapper_trains_the_float_model_in_place(converted):
    _, _, path, crops = converted
    model = trained_like(tiny_model(num_stacks=2), seed=1)
    qat = quantization_aware_model(model)
    ranges_from_tflite(qat, path)  # the same architecture and layer names: the file's ranges fit
    before = {w.path: w.numpy().copy() for w in model.weights}
    assert qat.output_names == model.output_names  # the training log's columns are the float model's
    qat.compile(keras.optimizers.Adam(1e-3), loss="mse")
    qat.fit(crops[:8], [np.zeros((8, 16, 16, 16), np.float32)] * 2, epochs=1, batch_size=8, verbose=0)
    changed = {w.path for w in model.weights if not np.array_equal(w.numpy(), before[w.path])}
    assert any(path.endswith("kernel") for path in changed) and any(path.endswith("gamma") for path in changed)
    assert not any("moving" in path for path in changed)  # batch-norm statistics stay frozen


def test_a_layer_tflite_quantizes_otherwise_is_named():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    with pytest.raises(ValueError, match="'pool'.*GlobalAveragePooling2D"):
        quantization_aware_model(keras.Model(inputs, outputs))


def test_another_models_file_is_refused(converted):
    _, _, path, _ = converted
    bigger = quantization_aware_model(trained_like(tiny_model(num_stacks=3)))
    with pytest.raises(ValueError, match="0 int8 ops computed by layer 'stack1_remap_features'"):
        ranges_from_tflite(bigger, path)


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("source") / "tiny.keras")
    trained_like(tiny_model(num_stacks=2)).save(path)
    return path


@pytest.fixture(scope="module")
def qat_run(tiny_synthetic, tiny_run, tmp_path_factory):
    """`(source run folder, quantization-aware run folder, what the second run printed)`: the suite's one QAT run.

    The source is the suite's tiny training run; the fine-tuning starts from its run folder (its last completed
    epoch), as a user continues a training run; `load_trained_model` is what differs for a `.keras` source (tested
    below).
    """
    import contextlib
    import io

    source, _ = tiny_run
    run = str(tmp_path_factory.mktemp("qat") / "qat")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = train.main([*TINY_ARGS, "--data-dir", tiny_synthetic, "--epochs", "1", "--no-flip-test",
                           "--num-calibration", "8", "--steps-per-epoch", "2", "--learning-rate", "1e-4",
                           "--output", run, "--qat-from", source])
    assert code == 0, printed.getvalue()[-3000:]
    return source, run, printed.getvalue()


def test_qat_from_a_run_folder_ends_in_a_full_integer_file(tiny_synthetic, qat_run, tmp_path):
    from keras_hourglass.training import load_trained_model

    source_run, run, out = qat_run
    assert f"fine-tuning {source_run} from its last completed epoch, {source_run}/resume/epoch-0002" in out
    assert "model-int8.tflite: PCKh@0.5" in out
    assert sorted(os.listdir(run)) == sorted([".lock", "calibration", "checkpoints", "config.json", "eval", "model-int8.tflite",
                                              "model.keras", "resume", "summary.json", "tensorboard",
                                              "training_curves.png", "training_log.csv"])
    assert int8_mac_share(os.path.join(run, "model-int8.tflite")) == 1.0
    tuned = keras.models.load_model(os.path.join(run, "model.keras"))
    source = load_trained_model(source_run, 16)
    assert [layer.name for layer in tuned.layers] == [layer.name for layer in source.layers]  # the float model
    assert not np.array_equal(tuned.get_layer("stem_conv").kernel, source.get_layer("stem_conv").kernel)
    # The epoch's metric was measured with the ranges of the epoch's final weights: calibrated after the epoch.
    from keras_hourglass.data.loaders import load_records
    from keras_hourglass.quantization import calibration_crops

    records = load_records("synthetic", os.path.join(tiny_synthetic, "train.h5"), os.path.join(tiny_synthetic, "images"))
    qat = quantization_aware_model(tuned)
    calibrate(qat, tuned, calibration_crops(records, (64, 64), 8, 8), str(tmp_path / "again"))
    final = [layer.ranges.numpy() for layer in qat.layers if hasattr(layer, "ranges")]
    ranges_from_tflite(qat, os.path.join(run, "calibration", "calibration-int8.tflite"))
    for layer, expected in zip([layer for layer in qat.layers if hasattr(layer, "ranges")], final):
        np.testing.assert_allclose(layer.ranges.numpy(), expected, rtol=1e-6, err_msg=layer.name)


def test_qat_from_a_keras_file_takes_that_model(source_model):
    from keras_hourglass.training import load_trained_model

    model = load_trained_model(source_model, 16)
    expected = keras.models.load_model(source_model)
    assert [layer.name for layer in model.layers] == [layer.name for layer in expected.layers]
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel, expected.get_layer("stem_conv").kernel)


def test_qat_from_bad_sources_is_one_clear_line(tiny_synthetic, source_model, qat_run, tmp_path, capsys):
    base = [*TINY_ARGS, "--data-dir", tiny_synthetic, "--epochs", "1", "--steps-per-epoch", "1"]
    line = one_line_error(train.main, [*base, "--output", str(tmp_path / "a"), "--qat-from",
                                       str(tmp_path / "none.keras")], capsys)
    assert f"--qat-from {tmp_path / 'none.keras'}: no such .keras file" in line
    line = one_line_error(train.main, [*base, "--output", str(tmp_path / "b"), "--qat-from", str(tmp_path)], capsys)
    assert f"--qat-from {tmp_path}: expected a .keras file or a run folder" in line
    line = one_line_error(train.main, [*base[:-4], "--image-size", "128", "--data-dir", tiny_synthetic, "--epochs",
                                       "1", "--output", str(tmp_path / "c"), "--qat-from", source_model], capsys)
    assert "takes 64x64 crops" in line and "--image-size 128" in line
    assert not os.path.exists(tmp_path / "c" / "config.json")
    line = one_line_error(train.main, [*base, "--output", str(tmp_path / "again"), "--qat-from", qat_run[1]], capsys)
    assert "a quantization-aware run already; fine-tune from its model.keras" in line
