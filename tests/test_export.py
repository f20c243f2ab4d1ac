import json

import numpy as np
import pytest
import tensorflow as tf

from keras_hourglass import MPII, HeatmapCodec, build_stacked_hourglass
from keras_hourglass.export import METADATA_FILE, PoseEstimator, save_estimator
from keras_hourglass.model import stack_outputs
from keras_hourglass.pose_model import load_pose_model
from keras_hourglass.transforms import apply_affine, crop_matrix, invert_affine, warp_image
from tests.conftest import PIXEL_TOLERANCE, TINY, assert_close_to_scale


@pytest.fixture(scope="module")
def exported(tiny_saved_model):
    model, codec, path = tiny_saved_model
    return model, codec, path, tf.saved_model.load(path)


def test_crops_signature_equals_the_keras_model(exported):
    model, codec, _, loaded = exported
    crops = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    outputs = loaded.signatures["crops"](images=tf.constant(crops))
    expected = model(crops, training=False)[-1]
    # The SavedModel (the network as one graph function, whose ops TensorFlow may fuse) and the eager model run
    # the same float32 arithmetic with different kernels and summation orders: equal to RELATIVE_TOLERANCE of the
    # heatmaps' largest value (measured 1.4e-6 on an AVX-512 Xeon), keypoints to a ten-thousandth of a pixel.
    assert_close_to_scale(outputs["heatmaps"], expected)
    keypoints, scores = codec.decode(expected)
    np.testing.assert_allclose(outputs["keypoints"], keypoints, atol=1e-4)
    assert_close_to_scale(outputs["scores"], scores)


def test_serving_default_crops_the_whole_image_and_maps_back(exported):
    model, codec, _, loaded = exported
    images = np.random.default_rng(1).integers(0, 256, (2, 48, 80, 3)).astype(np.uint8)
    outputs = loaded.signatures["serving_default"](images=tf.constant(images))
    # The whole image padded to a square: centre in the middle, side = longer side.
    matrix = crop_matrix([[39.5, 23.5]] * 2, [80 / 200] * 2, (64, 64))
    crops = warp_image(images, matrix, (64, 64)) / 255.0
    keypoints, scores = codec.decode(model(crops, training=False)[-1])
    np.testing.assert_allclose(outputs["keypoints"], apply_affine(invert_affine(matrix), keypoints), atol=1e-3)
    np.testing.assert_allclose(outputs["scores"], scores, atol=1e-4)
    assert outputs["keypoints"].shape == (2, 16, 2) and outputs["heatmaps"].shape == (2, 16, 16, 16)


def test_boxes_and_center_scale_signatures_agree(exported):
    _, _, _, loaded = exported
    images = tf.constant(np.random.default_rng(2).integers(0, 256, (1, 60, 60, 3)).astype(np.uint8))
    boxes = tf.constant([[10.0, 5.0, 30.0, 45.0]])  # 20 x 40: scale = 40 * 1.25 / 200
    by_box = loaded.signatures["boxes"](images=images, boxes=boxes)
    by_scale = loaded.signatures["center_scale"](images=images, center=tf.constant([[20.0, 25.0]]),
                                                 scale=tf.constant([0.25]))
    np.testing.assert_allclose(by_box["keypoints"], by_scale["keypoints"], atol=PIXEL_TOLERANCE)


@pytest.mark.parametrize("images, message", [
    (np.zeros((1, 32, 32, 3), np.float32), "uint8"),
    (np.zeros((32, 32, 3), np.uint8), "batch \\[N, height, width, 3\\]"),
    (np.zeros((1, 32, 32, 4), np.uint8), "3 channels"),
    (np.zeros((1, 240, 0, 3), np.uint8), "at least 1x1 pixels"),
    (np.zeros((0, 32, 32, 3), np.uint8), "at least one image"),
])
def test_signature_rejects_bad_images(exported, images, message):
    _, _, _, loaded = exported
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match=message):
        loaded.signatures["serving_default"](images=tf.constant(images))


def test_center_scale_rejects_mismatched_rows(exported):
    _, _, _, loaded = exported
    images = tf.zeros((2, 32, 32, 3), tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per image"):
        loaded.signatures["center_scale"](images=images, center=tf.zeros((1, 2)), scale=tf.ones((2,)))


@pytest.mark.parametrize("signature, inputs, message", [
    ("boxes", dict(boxes=np.zeros((1, 3), np.float32)), r"boxes must have shape \[N, 4\]"),
    ("boxes", dict(boxes=np.array([[10, 10, 5, 20]], np.float32)), "x2 > x1 and y2 > y1"),
    ("boxes", dict(boxes=np.array([[0, 0, np.inf, 20]], np.float32)), "boxes must be finite"),
    ("center_scale", dict(center=np.array([[np.inf, 3]], np.float32), scale=np.ones(1, np.float32)),
     "center must be finite"),
    ("center_scale", dict(center=np.zeros((1, 3), np.float32), scale=np.ones(1, np.float32)),
     r"center must have shape \[N, 2\]"),
    ("center_scale", dict(center=np.zeros((1, 2), np.float32), scale=np.array([np.nan], np.float32)),
     "scale must be finite"),
])
def test_person_inputs_are_checked(exported, signature, inputs, message):
    _, _, _, loaded = exported
    images = tf.zeros((1, 32, 32, 3), tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures[signature](images=images, **{k: tf.constant(v) for k, v in inputs.items()})


def test_metadata_and_load_pose_model(exported):
    _, codec, path, _ = exported
    with open(f"{path}/{METADATA_FILE}") as f:
        metadata = json.load(f)
    assert metadata["keypoint_names"] == list(MPII.names) and metadata["input_size"] == [64, 64]
    pose_model = load_pose_model(path)
    assert pose_model.codec.get_config() == codec.get_config() and pose_model.num_keypoints == 16


def test_flip_test_export_averages_with_the_mirror(tmp_path):
    model = build_stacked_hourglass(1, MPII.num_keypoints, **TINY)
    codec = HeatmapCodec(TINY["image_size"], flip_index=MPII.flip_index)
    estimator = PoseEstimator(model, codec, MPII.names, flip_test=True)
    crops = np.random.default_rng(3).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    expected = codec.flip_test(lambda x: model(x, training=False), crops)
    assert_close_to_scale(estimator.heatmaps(crops), expected)


def test_saved_model_holds_a_variable_per_layer_with_the_weights_as_they_are_when_saved(tmp_path):
    """The model trains on after its estimator was built (as `SavedModelCheckpoint` keeps one per run): each save
    writes the weights of that moment, one variable per layer that has weights."""
    model = build_stacked_hourglass(1, MPII.num_keypoints, **TINY)
    estimator = PoseEstimator(model, HeatmapCodec(TINY["image_size"], flip_index=MPII.flip_index), MPII.names)
    crops = np.random.default_rng(4).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    before = stack_outputs(model(crops, training=False))[-1]
    save_estimator(estimator, str(tmp_path / "before"))
    for variable in model.weights:  # as a training step would: new values in the model's own variables
        variable.assign(variable * 1.25 + 0.01)
    after = stack_outputs(model(crops, training=False))[-1]
    save_estimator(estimator, str(tmp_path / "after"))
    assert np.abs(after - before).max() > 0.1 * np.abs(before).max()
    for folder, expected in (("before", before), ("after", after)):
        loaded = tf.saved_model.load(str(tmp_path / folder))
        assert_close_to_scale(loaded.signatures["crops"](images=tf.constant(crops))["heatmaps"], expected)
        stored = [name for name, _ in tf.train.list_variables(str(tmp_path / folder / "variables" / "variables"))
                  if name.endswith("VARIABLE_VALUE")]
        assert len(stored) == len({v.path.rpartition("/")[0] for v in model.weights}) < len(model.weights)
    assert_close_to_scale(estimator.heatmaps(crops), after)  # the functions in memory read them as well


def test_estimator_checks_its_arguments():
    model = build_stacked_hourglass(1, 3, **TINY)
    with pytest.raises(ValueError, match="3 heatmap channels"):
        PoseEstimator(model, HeatmapCodec(TINY["image_size"]), ["a", "b"])
    with pytest.raises(ValueError, match="input size"):
        PoseEstimator(model, HeatmapCodec((128, 128)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="flip_index"):
        PoseEstimator(model, HeatmapCodec(TINY["image_size"]), ["a", "b", "c"], flip_test=True)


def test_load_pose_model_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="not a SavedModel"):
        load_pose_model(str(tmp_path))
    with pytest.raises(ValueError, match="missing.keras: no such model file or folder"):
        load_pose_model(str(tmp_path / "missing.keras"))


def test_saved_model_cli_runs_the_signature(exported, tmp_path):
    """The TF1-session loader (saved_model_cli, TensorFlow Serving) finds every variable."""
    import os
    import subprocess
    import sys

    _, _, path, _ = exported
    np.save(tmp_path / "images.npy", np.zeros((1, 40, 50, 3), np.uint8))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
                             "--inputs", f"images={tmp_path / 'images.npy'}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Result for output key keypoints" in result.stdout
