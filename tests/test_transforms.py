import numpy as np
import tensorflow as tf

from keras_hourglass.transforms import apply_affine, crop_matrix, invert_affine, source_window, warp_image
from tests.conftest import GREY_LEVEL, PIXEL_TOLERANCE

RNG = np.random.default_rng(0)


def test_box_edges_map_to_pixel_edges():
    matrix = crop_matrix([100.0, 50.0], 1.0, (256, 256))  # a 200-pixel box
    np.testing.assert_allclose(apply_affine(matrix, [[0.0, -50.0], [200.0, 150.0], [100.0, 50.0]]),
                               [[-0.5, -0.5], [255.5, 255.5], [127.5, 127.5]], atol=PIXEL_TOLERANCE)


def test_unrotated_unscaled_crop_is_the_original_pixels():
    image = RNG.uniform(0, 255, (40, 60, 3)).astype(np.float32)
    # A 32-pixel box centred at (24.5, 19.5): its edges are x 8.5..40.5 and
    # y 3.5..35.5, so it holds columns 9..40 and rows 4..35.
    matrix = crop_matrix([24.5, 19.5], 32 / 200, (32, 32))
    crop = warp_image(image, matrix, (32, 32))
    np.testing.assert_allclose(crop, image[4:36, 9:41], atol=1e-3)


def test_flip_and_rotation_match_numpy():
    image = RNG.uniform(size=(16, 16, 3)).astype(np.float32)
    centre, scale = [7.5, 7.5], 16 / 200
    np.testing.assert_allclose(warp_image(image, crop_matrix(centre, scale, (16, 16), flip=True), (16, 16)),
                               image[:, ::-1], atol=0.01 * GREY_LEVEL)
    np.testing.assert_allclose(warp_image(image, crop_matrix(centre, scale, (16, 16), rotation=90.0), (16, 16)),
                               np.rot90(image), atol=0.01 * GREY_LEVEL)


def test_inverse_and_batching():
    matrix = crop_matrix(RNG.uniform(0, 100, (4, 2)), RNG.uniform(0.5, 2, 4), (64, 48),
                         rotation=RNG.uniform(-30, 30, 4), flip=[True, False, True, False])
    points = RNG.uniform(0, 100, (4, 7, 2))
    back = apply_affine(invert_affine(matrix), apply_affine(matrix, points))
    np.testing.assert_allclose(back, points, atol=1e-3)


def test_window_offset_gives_the_same_crop():
    image = RNG.uniform(size=(50, 70, 3)).astype(np.float32)
    matrix = crop_matrix([40.0, 20.0], 0.2, (16, 16), rotation=20.0)
    window = source_window(matrix, (16, 16), image.shape).numpy()
    y, x, h, w = window
    part = image[y:y + h, x:x + w]
    np.testing.assert_allclose(warp_image(part, matrix, (16, 16), (x, y)), warp_image(image, matrix, (16, 16)),
                               atol=0.01 * GREY_LEVEL)
    assert 0 <= x and x + w <= 70 and 0 <= y and y + h <= 50


def test_inside_tf_function():
    fn = tf.function(lambda c, s: crop_matrix(c, s, (8, 8), rotation=10.0))
    np.testing.assert_allclose(fn(tf.constant([3.0, 4.0]), tf.constant(0.5)),
                               crop_matrix([3.0, 4.0], 0.5, (8, 8), rotation=10.0))


def test_warp_image_batch_equals_one_by_one():
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (3, 20, 24, 3)).astype(np.float32)
    matrices = crop_matrix(rng.uniform(5, 15, (3, 2)), rng.uniform(0.05, 0.1, 3), (8, 8),
                           rotation=rng.uniform(-30, 30, 3), flip=np.array([True, False, True]))
    batch = warp_image(images, matrices, (8, 8))
    # Batched and single warps sum in different orders on different vector units (3e-4 apart on
    # some CPUs); what matters is that they agree to a small fraction of one grey level.
    for i in range(3):
        np.testing.assert_allclose(batch[i], warp_image(images[i], matrices[i], (8, 8)), rtol=0, atol=0.01)
