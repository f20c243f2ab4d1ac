"""From records to batches with `tf.data`: read, crop and augment in one warp, encode targets.

Each step is a small function over a feature dict, usable eagerly and inside
`Dataset.map`:

1. `records_dataset`: one dict per person (`image_path`, `keypoints`,
   `annotated`, `center`, `scale`, `normalizer`, `index`).
2. `sample_augmentation`: draws `rotation` (degrees), `zoom` and `flip` from a
   per-example seed (identity in evaluation). The distributions follow the
   reference training code (pose-hg-train): rotation in `±rotation` degrees
   for 40% of the examples and none for the rest, the box scaled by a factor
   in `scale_range`, a horizontal flip half of the time. The reference draws
   clamped Gaussians; this draws uniformly within the same bounds.
3. `crop_example`: reads the file, decodes only the window of the JPEG that
   the crop needs, and samples the crop with one affine warp
   (`keras_hourglass.transforms`) that does centre, scale, rotation and
   flip at once; keypoints go through the same matrix and swap left/right
   when flipped. `transform` (crop -> original pixels) travels with it.
4. `color_jitter`: each channel multiplied by a factor in `color_range`.
5. `encode_targets`: heatmaps and per-joint weights through the codec; the
   weights are 0 for joints not annotated or pushed out of the crop.

`build_dataset` chains them for training (`(images, heatmaps per stack,
weights per stack)` batches for `model.fit`) and `build_eval_dataset` for
evaluation (dict batches with the inverse transform).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from keras_hourglass.data.records import PoseRecords
from keras_hourglass.codec import HeatmapCodec
from keras_hourglass.transforms import apply_affine, crop_matrix, invert_affine, source_window, warp_image

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The paper's augmentation: rotation ±30°, scale 0.75–1.25, flips, colour.

    Attributes:
        rotation: largest rotation in degrees.
        rotation_probability: share of examples that are rotated at all.
        scale_range: factor range applied to the person box.
        flip_probability: share of examples mirrored left-right.
        color_range: per-channel multiplicative range.
    """

    rotation: float = 30.0
    rotation_probability: float = 0.4
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip_probability: float = 0.5
    color_range: tuple[float, float] = (0.8, 1.2)

    def __post_init__(self):
        for name in ("rotation_probability", "flip_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Augmentation.{name} must be within [0, 1], got {getattr(self, name)}.")
        for name in ("scale_range", "color_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"Augmentation.{name} must be (low, high) with 0 < low <= high, got {(low, high)}.")
        if self.rotation < 0:
            raise ValueError(f"Augmentation.rotation must be non-negative degrees, got {self.rotation}.")


NO_AUGMENTATION = Augmentation(rotation=0.0, rotation_probability=0.0, scale_range=(1.0, 1.0),
                               flip_probability=0.0, color_range=(1.0, 1.0))


def records_dataset(records: PoseRecords) -> tf.data.Dataset:
    """One feature dict per person."""
    return tf.data.Dataset.from_tensor_slices(
        {
            "image_path": np.asarray(records.image_path, dtype=str),
            "keypoints": records.keypoints,
            "annotated": records.annotated,
            "center": records.center,
            "scale": records.scale,
            "normalizer": records.normalizer,
            "index": np.arange(len(records), dtype=np.int64),
        }
    )


def sample_augmentation(example, seed, augmentation: Augmentation):
    """Adds `rotation`, `zoom` and `flip` drawn with stateless ops from `seed` (`[2]` int)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    uniform = lambda i, low=0.0, high=1.0: tf.random.stateless_uniform([], seeds[i], low, high)  # noqa: E731
    rotate = uniform(0) < augmentation.rotation_probability
    example = dict(example)
    example["rotation"] = tf.where(rotate, uniform(1, -augmentation.rotation, augmentation.rotation), 0.0)
    example["zoom"] = uniform(2, *augmentation.scale_range)
    example["flip"] = uniform(3) < augmentation.flip_probability
    example["color"] = tf.random.stateless_uniform([3], seeds[4], *augmentation.color_range)
    return example


def identity_augmentation(example):
    example = dict(example)
    example.update(rotation=tf.constant(0.0), zoom=tf.constant(1.0), flip=tf.constant(False),
                   color=tf.ones([3]))
    return example


def _read_window(path, matrix, image_size):
    """Decodes the part of the image a crop needs; returns (pixels, (x, y) offset)."""
    contents = tf.io.read_file(path)
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, 2), b"\xff\xd8")

    def jpeg():
        window = source_window(matrix, image_size, tf.io.extract_jpeg_shape(contents))
        pixels = tf.io.decode_and_crop_jpeg(contents, window, channels=3, dct_method="INTEGER_FAST")
        return pixels, tf.cast(tf.stack([window[1], window[0]]), tf.float32)

    def other():  # PNG, BMP, GIF: decode whole, then take the window
        pixels = tf.io.decode_image(contents, channels=3, expand_animations=False)
        window = source_window(matrix, image_size, tf.shape(pixels))
        pixels = pixels[window[0]: window[0] + window[2], window[1]: window[1] + window[3]]
        return pixels, tf.cast(tf.stack([window[1], window[0]]), tf.float32)

    return tf.cond(is_jpeg, jpeg, other)


def crop_example(example, image_size, flip_index):
    """Reads and crops the image; moves keypoints into crop pixels.

    Adds `image` (`[height, width, 3]` float32 in `[0, 1]`) and
    `transform` (`[2, 3]`, crop pixels -> original pixels); replaces
    `keypoints` and `annotated` with their crop versions.
    """
    example = dict(example)
    matrix = crop_matrix(example["center"], example["scale"] * example["zoom"], image_size,
                         rotation=example["rotation"], flip=example["flip"])
    pixels, offset = _read_window(example["image_path"], matrix, image_size)
    image = warp_image(pixels, matrix, image_size, offset) / 255.0
    image.set_shape([*image_size, 3])
    keypoints = apply_affine(matrix, example["keypoints"])
    flip_index = tf.constant(np.asarray(flip_index, np.int32))
    example["keypoints"] = tf.where(example["flip"], tf.gather(keypoints, flip_index), keypoints)
    example["annotated"] = tf.where(example["flip"], tf.gather(example["annotated"], flip_index), example["annotated"])
    example["image"] = image
    example["transform"] = invert_affine(matrix)
    return example


def color_jitter(example):
    example = dict(example)
    example["image"] = tf.clip_by_value(example["image"] * example["color"], 0.0, 1.0)
    return example


def encode_targets(example, codec: HeatmapCodec, num_stacks: int):
    """`(image, targets, weights)` for `model.fit`: one copy per stack (a lone tensor for one stack)."""
    heatmaps, weights = codec.encode(example["keypoints"], example["annotated"])
    if num_stacks == 1:
        return example["image"], heatmaps, weights
    return example["image"], (heatmaps,) * num_stacks, (weights,) * num_stacks


def _check(records, codec, batch_size, num_stacks):
    if not isinstance(records, PoseRecords):
        raise ValueError(f"records must be PoseRecords, got {type(records).__name__}.")
    if len(records) == 0:
        raise ValueError(f"{records.source}: no records to build a dataset from.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(num_stacks, int) or num_stacks < 1:
        raise ValueError(f"num_stacks must be a positive integer, got {num_stacks!r}.")
    if codec.flip_index is not None and len(codec.flip_index) != records.spec.num_keypoints:
        raise ValueError(
            f"codec.flip_index has {len(codec.flip_index)} joints but {records.spec.name} has {records.spec.num_keypoints}."
        )


def build_dataset(
    records: PoseRecords,
    codec: HeatmapCodec,
    batch_size: int = 16,
    num_stacks: int = 2,
    training: bool = True,
    augmentation: Augmentation = Augmentation(),
    seed: int | None = None,
    check_images: bool = True,
    shard: tuple[int, int] = (1, 0),
) -> tf.data.Dataset:
    """Training batches `(images, heatmaps per stack, weights per stack)`.

    Args:
        records: the people to use.
        codec: sets input size, heatmap size and sigma.
        batch_size: examples per batch (a partial last batch is dropped
            when training).
        num_stacks: number of model outputs to repeat the targets for.
        training: shuffle and augment (each epoch differently) when True.
        augmentation: the augmentation's ranges.
        seed: makes shuffling and augmentation reproducible.
        check_images: first check that every image exists and is complete
            (reads a few bytes of each), so a bad file fails with its name.
        shard: `(count, index)`: this input pipeline reads only the people
            whose position in `records` is `index` modulo `count`, before
            shuffling, so that `count` pipelines (one per worker of a
            multi-worker run) share no person within an epoch. Each shard
            draws its own augmentation (the seed is offset by `index`).
    """
    _check(records, codec, batch_size, num_stacks)
    count, index = shard
    if not (isinstance(count, int) and isinstance(index, int) and 0 <= index < count):
        raise ValueError(f"shard must be (count, index) with 0 <= index < count, got {shard!r}.")
    if check_images:
        records.check_images()
    if training and len(records) // count < batch_size:
        raise ValueError(f"{records.source}: {len(records)} people over {count} shard(s) make no full batch "
                         f"of {batch_size}.")
    flip_index = records.spec.flip_index
    dataset = records_dataset(records).shard(count, index)
    if training:
        shard_seed = None if seed is None else seed + index
        dataset = dataset.shuffle(-(-len(records) // count), seed=shard_seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=shard_seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda example, s: sample_augmentation(example, s, augmentation), num_parallel_calls=AUTOTUNE
        )
    else:
        dataset = dataset.map(identity_augmentation, num_parallel_calls=AUTOTUNE)

    def load(example):
        example = color_jitter(crop_example(example, codec.image_size, flip_index))
        return encode_targets(example, codec, num_stacks)

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)


def build_eval_dataset(records: PoseRecords, image_size, batch_size: int = 16, check_images: bool = True):
    """Evaluation batches: dicts with `image`, `transform` (crop -> original pixels) and `index`.

    The same warp as training, without augmentation, in the records' order.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if len(records) == 0:
        raise ValueError(f"{records.source}: no records to evaluate.")
    if check_images:
        records.check_images()
    flip_index = records.spec.flip_index

    def load(example):
        example = crop_example(identity_augmentation(example), tuple(image_size), flip_index)
        return {key: example[key] for key in ("image", "transform", "index", "keypoints", "annotated")}

    dataset = records_dataset(records).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
