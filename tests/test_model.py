import ast
import pathlib

import keras
import numpy as np
import pytest

from keras_hourglass.model import VARIANTS, build_stacked_hourglass, build_variant, stack_outputs
from tests.conftest import TINY, assert_close_to_scale


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


# The paper's widths (filters 256, input 256): trainable parameters of the
# reference implementations.
@pytest.mark.parametrize(
    "num_stacks, num_keypoints, expected",
    [(1, 16, 3_426_448), (2, 16, 6_570_400), (8, 16, 25_434_112), (2, 14, 6_568_860), (8, 14, 25_426_416)],
)
def test_parameter_counts_match_the_reference(num_stacks, num_keypoints, expected):
    model = build_stacked_hourglass(num_stacks, num_keypoints)
    assert count(model.trainable_weights) == expected
    if num_stacks == 2:
        assert count(model.non_trainable_weights) == 31_488  # BatchNorm moving statistics


@pytest.mark.parametrize("num_stacks", [1, 2, 8])
def test_outputs_are_named_per_stack_with_quarter_resolution(num_stacks):
    model = build_stacked_hourglass(num_stacks, 5, **TINY)
    assert model.output_names == [f"heatmaps_stack{i}" for i in range(num_stacks)]
    outputs = stack_outputs(model(np.zeros((2, 64, 64, 3), np.float32)))
    assert len(outputs) == num_stacks
    for output in outputs:
        assert tuple(output.shape) == (2, 16, 16, 5)


def test_non_square_input():
    model = build_stacked_hourglass(1, 3, filters=8, image_size=(64, 32), depth=2, stem_filters=(8, 8))
    assert tuple(model.outputs[0].shape) == (None, 16, 8, 3)


def test_stem_pads_three_pixels_on_every_side():
    # With a delta kernel at the centre tap, output pixel (i, j) must read
    # input pixel (2i, 2j); Keras' "same" padding would read (2i + 1, 2j + 1).
    model = build_stacked_hourglass(1, 2, **TINY)
    conv = model.get_layer("stem_conv")
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[3, 3, 0, 0] = 1.0
    conv.set_weights([kernel, np.zeros(conv.bias.shape, np.float32)])
    images = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    stem = keras.Model(model.input, conv.output)
    np.testing.assert_allclose(stem(images)[0, :, :, 0], images[0, ::2, ::2, 0], atol=1e-6)


def test_batch_norm_matches_the_reference_checkpoints():
    model = build_stacked_hourglass(1, 2, **TINY)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(n.epsilon == 1e-5 and n.momentum == 0.9 for n in norms)


def test_residual_skip_conv_only_where_widths_differ():
    model = build_stacked_hourglass(2, 2, filters=16, image_size=(64, 64), depth=2, stem_filters=(8, 12))
    names = {layer.name for layer in model.layers}
    assert {"stem_res1_skip", "stem_res3_skip"} <= names  # 8 -> 12 and 12 -> 16
    assert "stem_res2_skip" not in names and not any("hourglass" in n and n.endswith("_skip") for n in names)
    # Depth 2: two down levels and a bottom residual in each hourglass.
    assert {"stack1_hourglass_down2_pool", "stack1_hourglass_down1_pool", "stack1_hourglass_bottom_res_add"} <= names


def test_three_stem_widths_widen_the_second_residual():
    model = build_stacked_hourglass(1, 2, filters=16, image_size=(64, 64), depth=2, stem_filters=(8, 12, 16))
    widths = {layer.name: layer.output.shape[-1] for layer in model.layers}
    assert (widths["stem_conv"], widths["stem_res1_add"], widths["stem_res2_add"], widths["stem_res3_add"]) == (8, 12, 16, 16)
    assert {"stem_res2_skip"} <= set(widths) and "stem_res3_skip" not in widths  # 12 -> 16, then 16 -> 16
    same = build_stacked_hourglass(1, 2, filters=16, image_size=(64, 64), depth=2, stem_filters=(8, 12, 12))
    assert same.count_params() == build_stacked_hourglass(1, 2, filters=16, image_size=(64, 64), depth=2,
                                                          stem_filters=(8, 12)).count_params()


def test_input_mean_is_subtracted_inside_the_model(tmp_path):
    mean = (0.4404, 0.4440, 0.4327)
    with_mean = build_stacked_hourglass(1, 2, **TINY, input_mean=mean)
    plain = build_stacked_hourglass(1, 2, **TINY)
    plain.set_weights(with_mean.get_weights()[-len(plain.get_weights()):])
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype("float32")
    assert_close_to_scale(with_mean.predict(images, verbose=0), plain.predict(images - np.float32(mean), verbose=0))
    path = str(tmp_path / "mean.keras")
    with_mean.save(path)
    assert_close_to_scale(keras.saving.load_model(path).predict(images, verbose=0), with_mean.predict(images, verbose=0))


def test_keras_file_round_trip(tmp_path):
    model = build_stacked_hourglass(2, 3, **TINY)
    images = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    # Move the BatchNorm statistics away from their initial values.
    model.compile("sgd", loss="mse")
    model.fit(images, [np.zeros((2, 16, 16, 3))] * 2, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.predict(images, verbose=0), loaded.predict(images, verbose=0)):
        np.testing.assert_array_equal(a, b)


def test_config_round_trip():
    model = build_stacked_hourglass(2, 3, **TINY)
    clone = keras.Model.from_config(model.get_config())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    clone.set_weights(model.get_weights())
    images = np.ones((1, 64, 64, 3), np.float32)
    assert_close_to_scale(clone(images)[-1], model(images)[-1])


def test_variants():
    assert set(VARIANTS) == {"hourglass_2stack", "hourglass_8stack", "hourglass_small", "associative_embedding",
                             "associative_embedding_small"}
    small = build_variant("hourglass_small", 16)
    assert small.name == "hourglass_small" and len(small.outputs) == 2
    assert tuple(small.outputs[0].shape) == (None, 32, 32, 16)
    paper = build_variant("hourglass_2stack", 16)
    assert count(paper.trainable_weights) == 6_570_400
    wider = build_variant("hourglass_small", 4, filters=32, num_stacks=1)
    assert len(wider.outputs) == 1
    people = build_variant("associative_embedding_small", 34)  # the synthetic-people preset's network
    assert count(people.trainable_weights) == 2_654_020 and not people.non_trainable_weights
    assert tuple(people.outputs[-1].shape) == (None, 32, 32, 34)


def test_the_associative_embedding_model_has_the_references_parameters_and_layers():
    """pose-ae-train's `PoseNet(4, 256, 68, bn=False, increase=128)` has 138,893,840 parameters (counted with its
    own code and PyTorch). Its forward pass, with the reference's weights mapped by layer, was equal to 3e-8 on a
    2-stack, 16-wide network (measured once in a scratch environment; the checkpoint import will carry fixtures)."""
    model = build_variant("associative_embedding", 68)
    assert count(model.trainable_weights) == 138_893_840 and not model.non_trainable_weights
    assert len(model.outputs) == 4 and tuple(model.outputs[-1].shape) == (None, 128, 128, 68)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "BatchNormalization" not in kinds and "Add" in kinds
    widths = [model.get_layer(f"stack0_hourglass_down{level}_block_conv").filters for level in (4, 3, 2, 1)]
    assert widths == [384, 512, 640, 768]
    assert model.get_layer("stack0_hourglass_up1_low_block_conv").filters == 640


def test_batch_norm_off_leaves_residual_models_without_it():
    model = build_stacked_hourglass(2, 3, **TINY, batch_norm=False)
    assert not model.non_trainable_weights
    assert count(model.trainable_weights) < count(build_stacked_hourglass(2, 3, **TINY).trainable_weights)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(block="dense"), "block must be one of residual, conv, got 'dense'"),
        (dict(width_increase=-2), "width_increase must be a non-negative even integer, got -2"),
        (dict(width_increase=3), "width_increase must be a non-negative even integer, got 3"),
        (dict(batch_norm="no"), "batch_norm must be True or False, got 'no'"),
        (dict(num_stacks=0), "num_stacks must be a positive integer, got 0"),
        (dict(num_stacks=True), "num_stacks must be a positive integer, got True"),
        (dict(num_stacks=1.5), "num_stacks must be a positive integer"),
        (dict(num_keypoints=0), "num_keypoints must be a positive integer"),
        (dict(filters=7), "filters must be a positive even integer"),
        (dict(filters=-8), "filters must be a positive even integer"),
        (dict(depth=0), "depth must be a positive integer"),
        (dict(image_size=(60, 64), depth=2), r"divisible by 2\^\(depth \+ 2\) = 16 for depth=2.*image_size=\(64, 64\)"),
        (dict(image_size=64), r"image_size must be \(height, width\)"),
        (dict(image_size=(64, 64, 3)), r"image_size must be \(height, width\)"),
        (dict(stem_filters=(8, 9)), "stem_filters must be a positive even integer"),
        (dict(stem_filters=8), "stem_filters must be two or three even widths"),
        (dict(input_mean=(0.5, 0.5)), "input_mean must be 3 values"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    arguments = dict(num_stacks=1, num_keypoints=2, **TINY)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_stacked_hourglass(**arguments)


def test_invalid_variant_arguments():
    with pytest.raises(ValueError, match="Unknown variant 'hourglass_3stack'"):
        build_variant("hourglass_3stack", 16)
    with pytest.raises(ValueError, match=r"Unknown override\(s\) \['stacks'\]"):
        build_variant("hourglass_small", 16, stacks=3)


def test_model_code_uses_keras_only():
    source = pathlib.Path(__file__).resolve().parents[1] / "keras_hourglass" / "model.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "tensorflow" not in imported and "numpy" not in imported
