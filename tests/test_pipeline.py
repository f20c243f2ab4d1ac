import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_hourglass.data.pipeline import (
    NO_AUGMENTATION,
    Augmentation,
    build_dataset,
    build_eval_dataset,
    color_jitter,
    crop_example,
    records_dataset,
    sample_augmentation,
)
from keras_hourglass.data.records import PoseRecords
from keras_hourglass.codec import HeatmapCodec, flip_keypoints
from keras_hourglass.joints import JointSpec
from tests.conftest import GREY_LEVEL, PIXEL_TOLERANCE

SPEC = JointSpec("dots", ("l_a", "r_a", "c"), flip_partners=(("l_a", "r_a"),))
DOTS = np.array([[40.0, 30.0], [80.0, 35.0], [60.0, 70.0]])


@pytest.fixture(scope="module")
def dot_records(tmp_path_factory):
    """A PNG with a bright blob on each joint, so warped pixels can be checked against warped keypoints."""
    folder = tmp_path_factory.mktemp("dots")
    image = np.zeros((100, 120, 3), np.uint8)
    yy, xx = np.mgrid[:100, :120]
    for x, y in DOTS:
        image[..., 1] = np.maximum(image[..., 1], (255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)).astype(np.uint8))
    cv2.imwrite(str(folder / "dots.png"), image)
    cv2.imwrite(str(folder / "dots.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    return PoseRecords(
        spec=SPEC, image_path=[str(folder / "dots.png"), str(folder / "dots.jpg")],
        keypoints=[DOTS, DOTS], annotated=[[1, 1, 1], [1, 1, 0]], visible=[[1, 1, 1]] * 2,
        center=[[60.0, 50.0]] * 2, scale=[0.5, 0.5], normalizer=[10.0, 10.0], id=["a", "b"], source="dots",
    )


def first_example(records):
    return next(iter(records_dataset(records)))


def augmented(example, seed, augmentation=Augmentation(rotation_probability=1.0)):
    return color_jitter(crop_example(sample_augmentation(example, seed, augmentation), (64, 64), SPEC.flip_index))


def blob_centre(image, point, radius=4):
    x, y = int(round(point[0])), int(round(point[1]))
    window = image[max(0, y - radius): y + radius + 1, max(0, x - radius): x + radius + 1, 1]
    ys, xs = np.mgrid[max(0, y - radius): y + radius + 1, max(0, x - radius): x + radius + 1]
    ys, xs = ys[: window.shape[0], : window.shape[1]], xs[: window.shape[0], : window.shape[1]]
    weights = window ** 4
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


@pytest.mark.parametrize("seed", [[1, 2], [3, 4], [5, 6], [7, 8]])
def test_warped_keypoints_land_on_the_warped_image(dot_records, seed):
    example = augmented(first_example(dot_records), tf.constant(seed))
    image, keypoints = example["image"].numpy(), example["keypoints"].numpy()
    for point in keypoints:
        if 3 < point[0] < 60 and 3 < point[1] < 60:
            assert np.linalg.norm(blob_centre(image, point) - point) < 1.0


def test_eager_and_dataset_map_agree(dot_records):
    eager = augmented(first_example(dot_records), tf.constant([1, 2]))
    mapped = next(iter(records_dataset(dot_records).map(lambda e: augmented(e, tf.constant([1, 2])))))
    np.testing.assert_allclose(eager["image"], mapped["image"], atol=0.01 * GREY_LEVEL)
    for key in ("keypoints", "annotated", "transform"):
        np.testing.assert_allclose(eager[key], mapped[key], atol=PIXEL_TOLERANCE)


def test_flip_moves_image_and_swaps_joints(dot_records):
    example = first_example(dot_records)
    plain = crop_example(sample_augmentation(example, [0, 0], NO_AUGMENTATION), (64, 64), SPEC.flip_index)
    mirror_only = Augmentation(rotation_probability=0.0, scale_range=(1, 1), flip_probability=1.0, color_range=(1, 1))
    flipped = crop_example(sample_augmentation(example, [0, 0], mirror_only), (64, 64), SPEC.flip_index)
    np.testing.assert_allclose(flipped["image"], plain["image"].numpy()[:, ::-1], atol=0.01 * GREY_LEVEL)
    np.testing.assert_allclose(flipped["keypoints"], flip_keypoints(plain["keypoints"], 64, SPEC.flip_index),
                               atol=PIXEL_TOLERANCE)
    twice = flip_keypoints(flipped["keypoints"], 64, SPEC.flip_index)
    np.testing.assert_allclose(twice, plain["keypoints"], atol=PIXEL_TOLERANCE)


def test_unaugmented_crop_maps_back_to_original_pixels(dot_records):
    # A 100-pixel box (scale 0.5) centred on a pixel corner into a 100-pixel
    # crop: columns 10..109 copied one to one.
    records = PoseRecords(**{**dot_records.__dict__, "center": [[59.5, 49.5]] * 2})
    dataset = build_eval_dataset(records.select([0]), (100, 100), batch_size=1)
    batch = next(iter(dataset))
    original = cv2.imread(dot_records.image_path[0])[:, :, ::-1] / 255.0
    np.testing.assert_allclose(batch["image"][0], original[:, 10:110], atol=0.01 * GREY_LEVEL)
    back = batch["transform"][0].numpy()
    np.testing.assert_allclose(batch["keypoints"][0] @ back[:, :2].T + back[:, 2], DOTS, atol=PIXEL_TOLERANCE)


def test_training_batches_weights_and_determinism(dot_records):
    codec = HeatmapCodec((64, 64), flip_index=SPEC.flip_index)
    dataset = build_dataset(dot_records, codec, batch_size=2, num_stacks=3, seed=7)
    images, targets, weights = next(iter(dataset))
    assert images.shape == (2, 64, 64, 3) and len(targets) == 3 and targets[0].shape == (2, 16, 16, 3)
    again = next(iter(build_dataset(dot_records, codec, batch_size=2, num_stacks=3, seed=7)))
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(weights[0], again[2][0])
    epochs = [next(iter(dataset))[0].numpy() for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])  # each epoch draws new augmentations
    # The jpg record's joint "c" is not annotated: zero weight wherever the flip put it.
    assert weights[0].numpy().sum() == 5
    single = next(iter(build_dataset(dot_records, codec, batch_size=2, num_stacks=1, seed=7)))
    assert single[1].shape == (2, 16, 16, 3)


def test_joints_pushed_out_of_the_crop_get_zero_weight(dot_records):
    codec = HeatmapCodec((64, 64), flip_index=SPEC.flip_index)
    shifted = PoseRecords(**{**dot_records.__dict__, "center": [[30.0, 30.0]] * 2, "scale": [0.2, 0.2]})
    _, _, weights = next(iter(build_dataset(shifted, codec, batch_size=2, num_stacks=1, training=False)))
    np.testing.assert_array_equal(weights, [[1, 0, 0], [1, 0, 0]])  # only l_a stays in the 40-pixel box


def test_bad_inputs_get_clear_errors(dot_records, tmp_path):
    codec = HeatmapCodec((64, 64))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        build_dataset(dot_records, codec, batch_size=0)
    with pytest.raises(ValueError, match="num_stacks must be a positive integer"):
        build_dataset(dot_records, codec, num_stacks=0)
    with pytest.raises(ValueError, match="codec.flip_index has 16 joints but dots has 3"):
        build_dataset(dot_records, HeatmapCodec((64, 64), flip_index=list(range(16))))
    with pytest.raises(ValueError, match="no records"):
        build_dataset(dot_records.select([]), codec)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        build_eval_dataset(dot_records, (64, 64), batch_size=-1)
    with pytest.raises(ValueError, match="scale_range must be"):
        Augmentation(scale_range=(1.2, 0.8))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    broken = PoseRecords(**{**dot_records.__dict__, "image_path": [str(corrupt), str(tmp_path / "missing.jpg")]})
    with pytest.raises(ValueError, match=r"dots: record a \(row 0, image .*corrupt.jpg\): JPEG file .* truncated"):
        build_dataset(broken, codec)


def test_ground_truth_through_crop_codec_and_back_scores_full_marks(tmp_path):
    """Loader -> eval crop -> encode -> decode -> inverse transform -> PCKh: every joint within a quarter heatmap pixel."""
    from keras_hourglass.data.mpii import load_mpii_h5
    from keras_hourglass.data.synthetic import generate_split
    from keras_hourglass.metrics import PCKH_THRESHOLD, evaluate_pck
    from keras_hourglass.transforms import apply_affine

    records = load_mpii_h5(generate_split(tmp_path, "valid", 12, image_size=(96, 128)), tmp_path / "images")
    codec = HeatmapCodec((128, 128))
    predictions = np.zeros(records.keypoints.shape)
    for batch in build_eval_dataset(records, codec.image_size, batch_size=5):
        heatmaps, _ = codec.encode(batch["keypoints"], batch["annotated"])
        keypoints, _ = codec.decode(heatmaps)
        predictions[batch["index"].numpy()] = apply_affine(batch["transform"], keypoints).numpy()
    result = evaluate_pck(predictions, records.keypoints, records.annotated, records.normalizer, records.spec,
                          PCKH_THRESHOLD, "PCKh")
    assert result.mean == 100.0
    box_pixels_per_crop_pixel = records.scale * 200 / 128
    error = np.linalg.norm(predictions - records.keypoints, axis=-1)
    assert np.all(error <= np.sqrt(2) * 0.25 * 4 * box_pixels_per_crop_pixel[:, None] + 1e-3)
