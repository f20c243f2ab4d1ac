import numpy as np
import pytest
import tensorflow as tf

from keras_hourglass.codec import HeatmapCodec, flip_keypoints
from keras_hourglass.joints import MPII
from tests.conftest import PIXEL_TOLERANCE

RNG = np.random.default_rng(0)


def grid_keypoints(codec, shape):
    """Image positions of random interior heatmap pixel centres."""
    height, width = codec.heatmap_size
    u = RNG.integers(1, width - 1, shape)
    v = RNG.integers(1, height - 1, shape)
    return codec.heatmap_to_image(np.stack([u, v], -1).astype(np.float32)).numpy()


def test_pixel_centre_mapping():
    codec = HeatmapCodec((256, 256))
    # Heatmap pixel 0 covers image pixels 0..3 (-0.5 .. 3.5): its centre is 1.5.
    np.testing.assert_allclose(codec.heatmap_to_image([[0.0, 0.0], [63.0, 10.0]]), [[1.5, 1.5], [253.5, 41.5]])
    np.testing.assert_allclose(codec.image_to_heatmap([[1.5, 41.5]]), [[0.0, 10.0]])
    np.testing.assert_allclose(codec.image_to_heatmap([[-0.5, 255.5]]), [[-0.5, 63.5]])


def test_encode_draws_a_unit_gaussian_at_the_joint():
    codec = HeatmapCodec((64, 64), sigma=2.0)
    keypoints = codec.heatmap_to_image([[[5.0, 9.0], [0.0, 0.0]]]).numpy()
    heatmaps, weights = codec.encode(keypoints, [[1, 1]])
    heatmaps = heatmaps.numpy()
    assert heatmaps.shape == (1, 16, 16, 2)
    assert heatmaps[0, 9, 5, 0] == pytest.approx(1.0)
    assert np.unravel_index(heatmaps[0, ..., 0].argmax(), (16, 16)) == (9, 5)
    assert heatmaps[0, 9, 7, 0] == pytest.approx(np.exp(-4 / 8))  # two pixels away, sigma 2
    np.testing.assert_array_equal(weights, [[1, 1]])


def test_encode_zeroes_unannotated_and_outside_joints():
    codec = HeatmapCodec((64, 64))
    keypoints = np.array([[10.0, 10.0], [np.nan, np.nan], [64.0, 10.0], [-0.6, 3.0], [63.4, 63.4], [5.0, 5.0]])
    annotated = np.array([1, 0, 1, 1, 1, 0])
    heatmaps, weights = codec.encode(keypoints, annotated)
    np.testing.assert_array_equal(weights, [1, 0, 0, 0, 1, 0])
    assert np.isfinite(heatmaps).all()
    assert np.all(heatmaps.numpy()[..., [1, 2, 3, 5]] == 0)
    assert heatmaps.numpy()[..., 4].max() > 0.5


@pytest.mark.parametrize("image_size", [(256, 256), (64, 128)])
def test_round_trip_on_the_grid_is_exact(image_size):
    codec = HeatmapCodec(image_size)
    keypoints = grid_keypoints(codec, (4, 16))
    heatmaps, _ = codec.encode(keypoints, np.ones((4, 16)))
    decoded, scores = codec.decode(heatmaps)
    np.testing.assert_allclose(decoded, keypoints, atol=PIXEL_TOLERANCE)
    np.testing.assert_allclose(scores, 1.0, atol=1e-5)


def test_round_trip_off_the_grid_within_a_quarter_heatmap_pixel():
    codec = HeatmapCodec((256, 256))
    keypoints = RNG.uniform(8, 248, (8, 16, 2)).astype(np.float32)
    heatmaps, _ = codec.encode(keypoints, np.ones((8, 16)))
    decoded, _ = codec.decode(heatmaps)
    error = np.abs(decoded.numpy() - keypoints) / 4.0  # in heatmap pixels
    assert error.max() <= 0.25 + 1e-5


def test_decode_quarter_shift_toward_the_higher_neighbour():
    codec = HeatmapCodec((32, 32))  # 8x8 heatmaps, stride 4
    heatmaps = np.zeros((8, 8, 3), np.float32)
    heatmaps[3, 5, 0] = 1.0
    heatmaps[3, 6, 0] = 0.5  # right neighbour higher: u = 5.25
    heatmaps[2, 5, 0] = 0.2  # upper neighbour higher: v = 2.75
    heatmaps[0, 4, 1] = 1.0  # on the border: no shift
    heatmaps[0, 5, 1] = 0.5
    heatmaps[4, 4, 2] = 0.7  # equal neighbours: no shift
    keypoints, scores = codec.decode(heatmaps)
    expected_uv = np.array([[5.25, 2.75], [4.0, 0.0], [4.0, 4.0]])
    np.testing.assert_allclose(keypoints, (expected_uv + 0.5) * 4 - 0.5)
    np.testing.assert_allclose(scores, [1.0, 1.0, 0.7])


def test_decode_keeps_leading_dimensions():
    codec = HeatmapCodec((64, 64))
    heatmaps = RNG.uniform(size=(2, 3, 16, 16, 4)).astype(np.float32)
    keypoints, scores = codec.decode(heatmaps)
    assert keypoints.shape == (2, 3, 4, 2) and scores.shape == (2, 3, 4)
    single, _ = codec.decode(heatmaps[1, 2])
    np.testing.assert_allclose(single, keypoints[1, 2])


def test_flipping_keypoints_is_flipping_heatmaps():
    codec = HeatmapCodec((256, 256), flip_index=MPII.flip_index)
    keypoints = RNG.uniform(0, 255, (3, 16, 2)).astype(np.float32)
    heatmaps, _ = codec.encode(keypoints, np.ones((3, 16)))
    mirrored, _ = codec.encode(flip_keypoints(keypoints, 256, MPII.flip_index), np.ones((3, 16)))
    np.testing.assert_allclose(codec.flip_heatmaps(mirrored), heatmaps, atol=1e-5)
    np.testing.assert_allclose(codec.flip_heatmaps(codec.flip_heatmaps(heatmaps)), heatmaps)
    np.testing.assert_allclose(
        flip_keypoints(flip_keypoints(keypoints, 256, MPII.flip_index), 256, MPII.flip_index), keypoints,
        atol=PIXEL_TOLERANCE
    )


def test_flip_test_of_a_perfect_predictor_is_its_prediction():
    codec = HeatmapCodec((64, 64), flip_index=MPII.flip_index)
    images = RNG.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    keypoints = RNG.uniform(0, 63, (2, 16, 2)).astype(np.float32)
    truth, _ = codec.encode(keypoints, np.ones((2, 16)))
    mirrored_truth, _ = codec.encode(flip_keypoints(keypoints, 64, MPII.flip_index), np.ones((2, 16)))

    def oracle(x):  # knows the answer for the images and for their mirror images, both in its one batch
        assert np.array_equal(x[:2], images) and np.array_equal(x[2:], images[:, :, ::-1])
        return np.concatenate([truth, mirrored_truth])

    np.testing.assert_allclose(codec.flip_test(oracle, images), truth, atol=1e-5)
    # A predictor that ignores left and right is corrected only halfway.
    halfway = codec.flip_test(lambda x: np.concatenate([truth, truth]), images)
    assert np.abs(halfway - truth).max() > 0.1


def test_same_results_inside_tf_data_and_tf_function():
    codec = HeatmapCodec((64, 64), flip_index=MPII.flip_index)
    keypoints = RNG.uniform(0, 63, (5, 16, 2)).astype(np.float32)
    annotated = RNG.uniform(size=(5, 16)) > 0.2
    eager, eager_weights = codec.encode(keypoints, annotated)
    dataset = tf.data.Dataset.from_tensor_slices((keypoints, annotated)).map(codec.encode).batch(5)
    mapped, mapped_weights = next(iter(dataset))
    np.testing.assert_allclose(mapped, eager, atol=1e-5)  # heatmaps in [0, 1]
    np.testing.assert_array_equal(mapped_weights, eager_weights)
    decoded = tf.function(codec.decode)(tf.constant(eager.numpy()))
    np.testing.assert_allclose(decoded[0], codec.decode(eager)[0])
    unknown = tf.function(codec.decode, input_signature=[tf.TensorSpec([None, None, None, 16])])
    np.testing.assert_allclose(unknown(eager)[0], codec.decode(eager)[0])


def test_config_round_trip():
    codec = HeatmapCodec((128, 96), sigma=1.5, flip_index=MPII.flip_index)
    clone = HeatmapCodec.from_config(codec.get_config())
    assert clone.get_config() == codec.get_config()
    assert clone.heatmap_size == (32, 24)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=(255, 256)), "not divisible by 4; pass heatmap_size"),
        (dict(image_size=(0, 256)), "image_size must be"),
        (dict(image_size=256), "image_size must be"),
        (dict(heatmap_size=(512, 512)), "must not exceed image_size"),
        (dict(sigma=0), "sigma must be a positive number"),
        (dict(sigma="1"), "sigma must be a positive number"),
        (dict(flip_index=[0, 0, 1]), "flip_index must be a permutation"),
    ],
)
def test_bad_codec_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HeatmapCodec(**kwargs)


def test_bad_call_arguments():
    codec = HeatmapCodec((64, 64))
    with pytest.raises(ValueError, match=r"keypoints must have shape \[..., num_keypoints, 2\]"):
        codec.encode(np.zeros((4, 3)), np.ones(4))
    with pytest.raises(ValueError, match="annotated must have shape"):
        codec.encode(np.zeros((4, 2)), np.ones(5))
    with pytest.raises(ValueError, match=r"heatmap_size \(16, 16\)"):
        codec.decode(np.zeros((8, 8, 4)))
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        codec.decode(np.zeros((16, 16)))
    with pytest.raises(ValueError, match="no flip_index"):
        codec.flip_heatmaps(np.zeros((16, 16, 16)))
    with pytest.raises(ValueError, match="4 channels but flip_index has 16"):
        HeatmapCodec((64, 64), flip_index=MPII.flip_index).flip_heatmaps(np.zeros((16, 16, 4)))


def test_taylor_refinement_is_exact_for_gaussians():
    codec = HeatmapCodec((64, 64), sigma=2.0, refine="taylor")
    points = np.random.default_rng(5).uniform(6, 58, (20, 16, 2)).astype(np.float32)
    heatmaps, _ = codec.encode(points, np.ones((20, 16), bool))
    keypoints, scores = codec.decode(heatmaps)
    interior = np.all((codec.image_to_heatmap(points).numpy() >= 1) & (codec.image_to_heatmap(points).numpy() <= 14), -1)
    np.testing.assert_allclose(keypoints.numpy()[interior], points[interior], atol=1e-3)
    quarter, _ = HeatmapCodec((64, 64), sigma=2.0).decode(heatmaps)
    assert np.abs(quarter.numpy() - points).max() > 0.5  # the reference shift is coarser
    assert HeatmapCodec.from_config(codec.get_config()).refine == "taylor"
    with pytest.raises(ValueError, match="refine"):
        HeatmapCodec((64, 64), refine="soft")
