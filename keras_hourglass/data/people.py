"""Whole images with several people, for training and scoring a multi-person (Associative Embedding) model.

`load_people` reads a COCO keypoint file (the benchmark's
`person_keypoints_*.json`, or `keras_hourglass.data.synthetic.generate_scenes`'s)
into `PeopleImages`: per image its path, every person's 17 keypoints and
its crowd regions. The file is checked as pycocotools will read it, so a
malformed file is one error naming the field before anything runs.

`people_dataset` is pose-ae-train's training input (`data/coco_pose/dp.py`)
in `tf.data`:

* the whole image, its longer side filling the crop, centred on the image's
  middle, then rotated by up to ±30°, scaled by 0.75-1.25, shifted by up to a
  fifth of the crop's side and mirrored half of the time (joints swapped
  with their partners);
* the reference's colour jitter: hue ±0.2 of the circle, saturation x
  0.5-1.5, brightness ±0.3, contrast x 0.5-1.5 about each pixel's grey;
* targets at the heatmap size: each joint's heatmap is the maximum over the
  people of a Gaussian of `sigma` heatmap pixels (pose-ae-train: the
  heatmap side / 64) centred on the pixel that holds the joint and cut off
  beyond `3 sigma + 1` pixels, for joints labelled (v > 0) inside the map;
  `mask` is 0 on COCO's crowd regions (`iscrowd`, whose people carry no
  keypoints) and 1 elsewhere; `keypoints` `[MAX_PEOPLE, 17, 2]` holds each
  such joint's place in the flattened `[h, w, 17]` tag map with a 1, the
  input of `keras_hourglass.losses.tag_losses`.

The pixel that holds a joint: the reference truncates coordinates in which
pixel `i` spans `[i, i + 1)`; here pixel centres are at integers (pixel `i`
spans `[i - 0.5, i + 0.5)`), so it is `floor(x + 0.5)`, the same pixel.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_hourglass.data.coco import PERSON_CATEGORY, finite_number
from keras_hourglass.joints import COCO_PERSON, JointSpec

MAX_PEOPLE = 30  # pose-ae-train's `max_num_people`: people per image the grouping loss sees
MAX_ANNOTATIONS_BYTES = 2**30  # COCO's train2017 keypoint file is 238 MB


@dataclasses.dataclass
class PeopleImages:
    """Images with their people: what `load_people` reads.

    Attributes:
        source: the annotation file.
        image_ids, image_paths: `[N]` COCO image ids and their files.
        keypoints: `[total people, J, 3]` float32 COCO (x, y, v), 0-based pixels, image after image.
        first: `[N + 1]` each image's first row in `keypoints` (its people are `first[i]:first[i + 1]`).
        crowds: `{image index: (height, width, [segmentation, ...])}` of the images with crowd regions.
        spec: the joints.
    """

    source: str
    image_ids: np.ndarray
    image_paths: list
    keypoints: np.ndarray
    first: np.ndarray
    crowds: dict
    spec: JointSpec = COCO_PERSON

    def __len__(self) -> int:
        return len(self.image_ids)

    def crowd_mask(self, index: int) -> np.ndarray:
        """uint8 `[height, width]`, 1 on image `index`'s crowd regions (`[1, 1]` zeros where it has none)."""
        if int(index) not in self.crowds:
            return np.zeros((1, 1), np.uint8)
        import warnings

        from pycocotools import mask as coco_mask

        height, width, segmentations = self.crowds[int(index)]
        rles = []
        for segmentation in segmentations:
            found = coco_mask.frPyObjects(segmentation, height, width)
            rles += found if isinstance(found, list) else [found]
        with warnings.catch_warnings():  # pycocotools 2.0.x's decode warns under NumPy 2 about its own array copy
            warnings.simplefilter("ignore", DeprecationWarning)
            return coco_mask.decode(coco_mask.merge(rles)).astype(np.uint8)  # one [h, w] mask, however many parts

    def check_images(self) -> None:
        """Decodes every image as training will (`keras_hourglass.data.records.image_file_problem`, TensorFlow's
        decoder, in threads): a missing or damaged file is one error naming it and its image id, before training."""
        from concurrent.futures import ThreadPoolExecutor

        from keras_hourglass.data.records import image_file_problem
        from keras_hourglass.fileio import quiet_stderr

        with quiet_stderr(), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            problems = [(i, problem) for i, problem in enumerate(pool.map(image_file_problem, self.image_paths))
                        if problem]
        if problems:
            index, problem = problems[0]
            more = f" ({len(problems) - 1} more bad images)" if len(problems) > 1 else ""
            raise ValueError(f"{self.source}: image id {self.image_ids[index]}: {problem}{more}.")
        for index, (height, width, _) in self.crowds.items():  # a crowd mask is drawn at the size the file gives
            actual = _image_size(self.image_paths[index]) or (0, 0)
            if actual != (height, width):
                raise ValueError(f"{self.source}: image id {self.image_ids[index]}: images gives {width}x{height} "
                                 f"pixels but {self.image_paths[index]} is {actual[1]}x{actual[0]}; its crowd "
                                 "regions would be masked in the wrong place.")


def _image_size(path: str) -> tuple[int, int] | None:
    """`(height, width)` of an image file from its header (None where it cannot be read)."""
    from keras_hourglass.data.records import encoded_image_size, read_image_file

    data, problem = read_image_file(path)
    return None if problem else encoded_image_size(data)


def load_people(path: str, image_dir: str, spec: JointSpec = COCO_PERSON, with_keypoints: bool = True,
                max_people: int | None = MAX_PEOPLE) -> PeopleImages:
    """The images of a COCO keypoint file that have people (not crowds) annotated, in image id order.

    Args:
        path: the COCO keypoint JSON file.
        image_dir: the folder its `file_name` values are relative to.
        spec: the joints the file must name, in this order.
        with_keypoints: keep only images where a person has a labelled joint (what training reads, as
            pose-ae-train does); otherwise every image with a person annotated (what COCO AP scores).
        max_people: the most people an image may hold for training (None: any number); beyond it the file is
            refused, naming the image.
    """
    data = read_coco_json(path)
    images = {}
    for index, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and _is_int(image.get("id")) and isinstance(image.get("file_name"), str)):
            raise ValueError(f"{path}: images[{index}] must have an integer id (0 to 2^63 - 1) and a file_name.")
        if image["id"] in images:
            raise ValueError(f"{path}: images[{index}]: id {image['id']} is given twice; each image needs its own.")
        images[image["id"]] = image
    persons = [c for c in data["categories"] if isinstance(c, dict) and c.get("id") == PERSON_CATEGORY]
    if len(persons) != 1 or persons[0].get("keypoints") != list(spec.names):
        raise ValueError(f"{path}: categories must hold one person category (id {PERSON_CATEGORY}) with the model's "
                         f"{spec.num_keypoints} keypoint names in order ({', '.join(spec.names[:3])}, ...).")
    people, crowds = {}, {}
    for index, person in enumerate(data["annotations"]):
        where = f"{path}: annotations[{index}]"
        if not isinstance(person, dict):
            raise ValueError(f"{where} must be an object.")
        if person.get("category_id") != PERSON_CATEGORY:
            continue
        if not (_is_int(person.get("id")) and _is_int(person.get("image_id")) and person.get("iscrowd") in (0, 1)):
            raise ValueError(f"{where}: needs an integer id and image_id, and iscrowd 0 or 1.")
        image = images.get(person["image_id"])
        if image is None:
            raise ValueError(f"{where}: image_id {person['image_id']} is not in images.")
        keypoints = person.get("keypoints")
        if not (isinstance(keypoints, list) and len(keypoints) == 3 * spec.num_keypoints and _finite(keypoints)):
            raise ValueError(f"{where}: keypoints must be {3 * spec.num_keypoints} finite numbers (x, y, v per joint).")
        bbox, area = person.get("bbox"), person.get("area")
        if not (isinstance(bbox, list) and len(bbox) == 4 and _finite(bbox) and _finite([area])):
            raise ValueError(f"{where}: needs a bbox of 4 finite numbers and a finite area.")
        if person["iscrowd"]:
            if with_keypoints:  # training masks the crowds; COCO AP needs only their boxes
                    crowds.setdefault(image["id"], []).append(_checked_segmentation(person.get("segmentation"), image,
                                                                                where))
        else:
            people.setdefault(image["id"], []).append(np.asarray(keypoints, np.float32).reshape(-1, 3))
    kept = sorted(image_id for image_id, found in people.items()
                  if not with_keypoints or any((p[:, 2] > 0).any() for p in found))
    rows, first, crowd_regions = [], [0], {}
    for position, image_id in enumerate(kept):
        found = [p for p in people[image_id] if (p[:, 2] > 0).any()] if with_keypoints else people[image_id]
        if max_people is not None and len(found) > max_people:
            raise ValueError(f"{path}: image {image_id} has {len(found)} people; at most {max_people} are trained on "
                             "(pose-ae-train's limit).")
        rows += found
        first.append(len(rows))
        if image_id in crowds:
            image = images[image_id]
            crowd_regions[position] = (image["height"], image["width"], crowds[image_id])
    keypoints = np.stack(rows) if rows else np.zeros((0, spec.num_keypoints, 3), np.float32)
    paths = [os.path.join(image_dir, images[image_id]["file_name"]) for image_id in kept]
    return PeopleImages(path, np.asarray(kept, np.int64), paths, keypoints, np.asarray(first, np.int64),
                        crowd_regions, spec)


def read_coco_json(path: str) -> dict:
    """A COCO keypoint file's top level (`images`, `annotations`, `categories` lists); one error for anything else."""
    try:
        if not os.path.isfile(path):
            raise OSError("not a regular file" if os.path.exists(path) else "no such file")
        if os.path.getsize(path) > MAX_ANNOTATIONS_BYTES:
            raise OSError(f"{os.path.getsize(path) / 2**30:.1f} GiB, over {MAX_ANNOTATIONS_BYTES // 2**30} GiB")
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_ANNOTATIONS_BYTES + 1))
    except (OSError, ValueError, RecursionError) as error:
        raise ValueError(f"{path}: cannot read it as COCO keypoint JSON ({str(error)[:200]}).") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise ValueError(f"{path}: not a COCO keypoint file: expected an object with the lists images, "
                         "annotations and categories.")
    return data


MAX_MASK_PIXELS = 64 * 2**20  # a crowd mask is decoded at its image's size: at most 64 MB (COCO's are 0.3 MP)


MAX_POLYGONS = 1000  # polygons of one crowd region (COCO's have a few; each is rasterised on its own)


def _checked_segmentation(segmentation, image: dict, where: str):
    """A crowd's segmentation as pycocotools takes it: polygons `[[x, y, ...], ...]` inside the image (give or take
    its size), or an uncompressed RLE (list `counts`, as COCO's annotation files have) of the image's size."""
    height, width = image.get("height"), image.get("width")
    if not (_is_int(height) and _is_int(width) and height > 0 and width > 0 and height * width <= MAX_MASK_PIXELS):
        raise ValueError(f"{where}: a crowd region needs its image's height and width in images (positive "
                         f"integers, at most {MAX_MASK_PIXELS // 2**20} M pixels together).")
    reach = 2 * max(height, width)  # pycocotools rasterises in int32: far-away points overflow it
    if isinstance(segmentation, list) and 0 < len(segmentation) <= MAX_POLYGONS and all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and _finite(p)
            and all(-reach <= v <= reach for v in p) for p in segmentation):
        return segmentation
    if isinstance(segmentation, dict) and segmentation.get("size") == [height, width]:
        counts = segmentation.get("counts")
        if isinstance(counts, list) and all(_is_int(c) for c in counts) and sum(counts) == height * width:
            return segmentation
    raise ValueError(f"{where}: a crowd region's segmentation must be 1 to {MAX_POLYGONS} polygons [[x, y, x, y, "
                     f"...]] of 3 or more points within {reach} pixels of the image, or an uncompressed RLE "
                     f"{{'size': [{height}, {width}], 'counts': [...]}} covering the image.")


def _is_int(value) -> bool:
    """An id or a size: a JSON integer that fits in int64 (NumPy's and pycocotools' ids)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _finite(values) -> bool:
    return all(finite_number(v) is not None for v in values)


# tf.data ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PeopleAugmentation:
    """pose-ae-train's augmentation of whole images (`data/coco_pose/dp.py`); `PeopleAugmentation(0, ...)`
    with every range at its identity turns it off."""

    rotation: float = 30.0
    scale_range: tuple = (0.75, 1.25)
    shift: float = 0.2  # of the crop's side
    flip_probability: float = 0.5
    hue: float = 0.2
    saturation_range: tuple = (0.5, 1.5)
    brightness: float = 0.3
    contrast_range: tuple = (0.5, 1.5)


NO_PEOPLE_AUGMENTATION = PeopleAugmentation(0.0, (1.0, 1.0), 0.0, 0.0, 0.0, (1.0, 1.0), 0.0, (1.0, 1.0))


def people_dataset(people: PeopleImages, input_size, heatmap_size, batch_size: int, sigma: float,
                   augmentation: PeopleAugmentation = PeopleAugmentation(), seed: int = 0, shuffle: bool = True):
    """`(images [B, h, w, 3] in [0, 1], {"heatmaps" [B, h', w', J], "mask" [B, h', w'], "keypoints"
    [B, MAX_PEOPLE, J, 2] int32})` batches of `people`, one pass (repeat it for more); see the module's text."""
    import tensorflow as tf

    from keras_hourglass.transforms import SCALE_UNIT, apply_affine, crop_matrix, warp_image

    if len(people) < batch_size:
        raise ValueError(f"{people.source}: {len(people)} images make no full batch of {batch_size}.")
    joints = people.spec.num_keypoints
    flip_index = tf.constant(np.asarray(people.spec.flip_index, np.int32))
    height, width = heatmap_size
    reach = 3 * sigma + 1  # the reference's window: 6 sigma + 3 pixels wide around the joint's pixel
    keypoints = tf.RaggedTensor.from_row_splits(people.keypoints, people.first)
    source = tf.data.Dataset.from_tensor_slices({"path": np.asarray(people.image_paths, str),
                                                 "index": np.arange(len(people), dtype=np.int64),
                                                 "keypoints": keypoints})
    if shuffle:
        source = source.shuffle(len(people), seed=seed, reshuffle_each_iteration=True)

    def crowd_mask(index):
        return people.crowd_mask(int(index))

    def example(element, random_seed):
        seeds = tf.random.experimental.stateless_split(random_seed, 9)
        uniform = lambda i, low, high: tf.random.stateless_uniform([], seeds[i], low, high)  # noqa: E731
        image = tf.io.decode_image(tf.io.read_file(element["path"]), channels=3, expand_animations=False)
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.reduce_max(size) / SCALE_UNIT * uniform(0, *augmentation.scale_range)
        shift = tf.stack([uniform(1, -1.0, 1.0), uniform(2, -1.0, 1.0)]) * augmentation.shift * SCALE_UNIT * scale
        center = (size[::-1] - 1) / 2 + shift
        rotation = uniform(3, -augmentation.rotation, augmentation.rotation)
        flip = uniform(4, 0.0, 1.0) < augmentation.flip_probability
        to_input = crop_matrix(center, scale, input_size, rotation, flip)
        to_heatmap = crop_matrix(center, scale, heatmap_size, rotation, flip)
        crop = warp_image(image, to_input, input_size) / 255.0
        crop = tf.image.adjust_hue(crop, uniform(5, -augmentation.hue, augmentation.hue))
        crop = tf.clip_by_value(tf.image.adjust_saturation(crop, uniform(6, *augmentation.saturation_range)), 0, 1)
        crop = crop + uniform(7, -augmentation.brightness, augmentation.brightness)
        grey = tf.reduce_mean(crop, axis=-1, keepdims=True)
        crop = tf.clip_by_value((crop - grey) * uniform(8, *augmentation.contrast_range) + grey, 0.0, 1.0)
        crop.set_shape([*input_size, 3])
        crowd = tf.numpy_function(crowd_mask, [element["index"]], tf.uint8, stateful=False)
        crowd = warp_image(tf.ensure_shape(crowd, [None, None])[..., None], to_heatmap, heatmap_size)[..., 0]
        mask = tf.cast(crowd <= 0.5, tf.float32)
        found = element["keypoints"].to_tensor() if isinstance(element["keypoints"], tf.RaggedTensor) \
            else element["keypoints"]
        found = tf.reshape(found, [-1, joints, 3])
        points = apply_affine(to_heatmap, found[..., :2])
        labelled = found[..., 2] > 0
        points = tf.where(flip, tf.gather(points, flip_index, axis=1), points)
        labelled = tf.where(flip, tf.gather(labelled, flip_index, axis=1), labelled)
        pixel = tf.cast(tf.floor(points + 0.5), tf.int32)  # [P, J, 2]
        column, row = pixel[..., 0], pixel[..., 1]
        inside = labelled & (column >= 0) & (column < width) & (row >= 0) & (row < height)
        dx = tf.cast(tf.range(width)[None, None, :] - column[..., None], tf.float32)  # [P, J, w]
        dy = tf.cast(tf.range(height)[None, None, :] - row[..., None], tf.float32)  # [P, J, h]
        gx = tf.where(tf.abs(dx) <= reach, tf.exp(-tf.square(dx) / (2 * sigma**2)), 0.0)
        gy = tf.where(tf.abs(dy) <= reach, tf.exp(-tf.square(dy) / (2 * sigma**2)), 0.0)
        gaussians = gy[..., :, None] * gx[..., None, :] * tf.cast(inside, tf.float32)[..., None, None]
        heatmaps = tf.transpose(tf.reduce_max(tf.concat([gaussians, tf.zeros([1, joints, height, width])], 0), 0),
                                [1, 2, 0])
        index = (row * width + column) * joints + tf.range(joints)[None]
        refs = tf.stack([tf.where(inside, index, 0), tf.cast(inside, tf.int32)], axis=-1)[:MAX_PEOPLE]
        refs = tf.pad(refs, [[0, MAX_PEOPLE - tf.shape(refs)[0]], [0, 0], [0, 0]])
        refs.set_shape([MAX_PEOPLE, joints, 2])
        heatmaps.set_shape([height, width, joints])
        mask.set_shape([height, width])
        return crop, {"heatmaps": heatmaps, "mask": mask, "keypoints": refs}

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)  # a fresh stateless seed per example
    dataset = tf.data.Dataset.zip(source, seeds).map(
        lambda element, random_seed: example(element, tf.cast(random_seed, tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
