"""The record every loader returns: a columnar table of annotated people.

One row per person. Coordinates are 0-based pixels with pixel centres at
integers (the project's convention, see `keras_hourglass.codec`); loaders of
MATLAB-made annotations (MPII, FLIC) subtract 1 on reading, and
`to_source_pixels` adds it back when predictions are written in the source's
layout. `scale` is in units of 200 pixels with the x1.25 margin applied, and
`center` is the adjusted person centre: each loader applies the usual
adjustments exactly once, whatever its source.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import h5py
import numpy as np

from keras_hourglass.joints import JointSpec

# MATLAB-made annotations (MPII, FLIC) number the first pixel 1.
MATLAB_OFFSET = 1.0

# Fields of a record table: (name, dtype, trailing shape given num_keypoints K).
FIELDS = ("image_path", "keypoints", "annotated", "visible", "center", "scale", "normalizer", "id")


@dataclasses.dataclass
class PoseRecords:
    """Annotated people of one split.

    Attributes:
        spec: joint metadata.
        image_path: `[N]` str, absolute or relative to the working directory.
        keypoints: `[N, K, 2]` float32 `(x, y)` pixels; 0 where not annotated.
        annotated: `[N, K]` bool, the joint has a ground-truth position.
        visible: `[N, K]` bool, the source's visibility flag (MPII's
            occlusion flag; equal to `annotated` where the source has none).
        center: `[N, 2]` float32 person centre.
        scale: `[N]` float32 box size in units of 200 pixels.
        normalizer: `[N]` float32 metric normaliser (head or torso size).
        id: `[N]` str, e.g. `"annotations.json:3"`.
        source: the annotation file, for error messages.
        coordinate_offset: what `to_source_pixels` adds back (1 for MATLAB
            sources).
    """

    spec: JointSpec
    image_path: np.ndarray
    keypoints: np.ndarray
    annotated: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    normalizer: np.ndarray
    id: np.ndarray
    source: str = ""
    coordinate_offset: float = 0.0

    def __post_init__(self):
        n, k = len(self.image_path), self.spec.num_keypoints
        self.image_path = np.asarray(self.image_path, dtype=object)
        self.id = np.asarray(self.id, dtype=object)
        self.keypoints = np.asarray(self.keypoints, np.float32).reshape(n, k, 2)
        self.annotated = np.asarray(self.annotated, bool).reshape(n, k)
        self.visible = np.asarray(self.visible, bool).reshape(n, k)
        self.center = np.asarray(self.center, np.float32).reshape(n, 2)
        self.scale = np.asarray(self.scale, np.float32).reshape(n)
        self.normalizer = np.asarray(self.normalizer, np.float32).reshape(n)
        if self.id.shape != (n,):
            raise ValueError(f"{self.source}: id must have {n} entries, got {self.id.shape}.")
        self.validate()

    def __len__(self) -> int:
        return len(self.image_path)

    def _where(self, row: int) -> str:
        return f"{self.source}: record {self.id[row]} (row {row}, image {self.image_path[row]})"

    def validate(self) -> None:
        """Raises a ValueError naming the file and the first bad record."""
        bad = ~np.isfinite(self.keypoints).all(-1) & self.annotated
        if bad.any():
            row, joint = np.argwhere(bad)[0]
            raise ValueError(
                f"{self._where(row)}: annotated joint {self.spec.names[joint]!r} has non-finite "
                f"coordinates {self.keypoints[row, joint].tolist()}."
            )
        bad = ~(np.isfinite(self.scale) & (self.scale > 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{self._where(row)}: scale must be positive, got {self.scale[row]}.")
        bad = ~np.isfinite(self.center).all(-1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{self._where(row)}: center must be finite, got {self.center[row].tolist()}.")
        # NaN means unknown (e.g. MPII's JSON layout has no head boxes).
        bad = self.annotated.any(-1) & ~(np.isnan(self.normalizer) | (np.isfinite(self.normalizer) & (self.normalizer > 0)))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{self._where(row)}: normalizer must be positive (or NaN if unknown), got {self.normalizer[row]}.")
        self.keypoints[~self.annotated] = 0.0

    def check_normalizers(self) -> None:
        """Raises a ValueError naming the first annotated person without a PCK normaliser.

        Records that will be scored need one for every person: a split whose
        file gives none (an MPII JSON without head boxes, COCO people lacking
        one of the normaliser joints) is refused when it is loaded for
        evaluation, not found as NaN after the first epoch.
        """
        bad = self.annotated.any(-1) & ~np.isfinite(self.normalizer)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{self._where(row)}: no PCK normaliser for this person ({int(bad.sum())} of {len(self)} "
                             "people lack one: MPII needs head boxes, COCO --normalizer-joints both annotated), so the "
                             "split cannot be scored.")

    def select(self, rows) -> "PoseRecords":
        """A subset of rows (indices or a boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype != bool:
            rows = rows.astype(np.int64)
        return dataclasses.replace(
            self,
            **{name: getattr(self, name)[rows] for name in FIELDS},
        )

    def to_source_pixels(self, keypoints) -> np.ndarray:
        """Converts `[..., 2]` pixels of this project back to the source's convention."""
        return np.asarray(keypoints, np.float64) + self.coordinate_offset

    def check_images(self, threads: int | None = None) -> dict:
        """Checks that every image exists and decodes, before any training or evaluation starts.

        Each distinct file is decoded by TensorFlow's own decoder, the one the
        pipeline uses (JPEGs at 1/8 scale, which still reads every byte of
        the compressed data), so a corrupt body is found here with its name
        rather than as a traceback in the middle of an epoch.

        Returns:
            A dict: ``images``, the number of distinct images checked.

        Raises:
            ValueError: naming the first bad image, its record, and how many
                other images are bad.
        """
        from concurrent.futures import ThreadPoolExecutor

        first_row = {}
        for row, path in enumerate(self.image_path):
            first_row.setdefault(path, row)
        from keras_hourglass.fileio import quiet_stderr

        # libjpeg prints its own warnings for damaged files; each problem is reported below, by name.
        with quiet_stderr(), ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            problems = [(row, problem) for row, problem in zip(first_row.values(), pool.map(image_file_problem, first_row))
                        if problem]
        if problems:
            row, problem = problems[0]
            more = f" ({len(problems) - 1} more bad images, e.g. {self.image_path[problems[1][0]]})" if len(problems) > 1 else ""
            raise ValueError(f"{self._where(row)}: {problem}{more}.")
        return {"images": len(first_row)}


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START = b"\x89PNG\r\n\x1a\n"
BMP_START = b"BM"
MIN_PHOTO_SIDE = 16  # pixels: smaller images cannot show a person the model could find


def image_file_problem(path: str) -> str | None:
    """What is wrong with an image file, or None: a JPEG (with its end marker), PNG or BMP that decodes.

    JPEGs are decoded at 1/8 scale, which still reads every byte of the compressed data.
    """
    return read_image(path, ratio=8)[1]


def read_image(path: str, ratio: int = 1):
    """`(RGB uint8 array [height, width, 3], None)`, or `(None, what is wrong)`, decoded by TensorFlow.

    The decoder is the one the pipeline uses, so a file it reads here is one training can read.
    `ratio` (1, 2, 4 or 8) scales a JPEG down while decoding.
    """
    data, problem = read_image_file(path)
    return (None, problem) if problem else decode_image(data, path, ratio)


MAX_IMAGE_FILE_BYTES = 256 * 2**20  # a 64-megapixel photo is about 30 MB as a JPEG
MAX_IMAGE_PIXELS = 64 * 2**20  # decoded pixels of one image (as the server's budget per request)


def read_image_file(path: str) -> tuple[bytes | None, str | None]:
    """`(the bytes of an image file, None)`, or `(None, what is wrong)`: a regular file of at most
    `MAX_IMAGE_FILE_BYTES` (not a device, a pipe or a folder, which could be read forever or block)."""
    try:
        if not os.path.isfile(path):
            return None, (f"image file not found: {path}" if not os.path.exists(path)
                          else f"{path} is not a regular file (a folder, a device or a pipe)")
        size = os.path.getsize(path)
        if size > MAX_IMAGE_FILE_BYTES:
            return None, f"image file {path} is {size / 2**20:.0f} MiB, over {MAX_IMAGE_FILE_BYTES // 2**20} MiB"
        with open(path, "rb") as f:
            return f.read(MAX_IMAGE_FILE_BYTES + 1), None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the name
        return None, f"cannot read image file {path!r}: {error}"


def decode_image(data: bytes, name: str, ratio: int = 1):
    """`read_image` for the bytes of a file; `name` (a path, or a request's field) names it in the problem."""
    jpeg = data.startswith(JPEG_START)
    if jpeg and JPEG_END not in data[-16:]:  # some writers pad after the end-of-image marker
        return None, f"JPEG file {name} is truncated (no end-of-image marker)"
    if not (jpeg or data.startswith(PNG_START) or data.startswith(BMP_START)):
        return None, f"{name} is neither a JPEG, a PNG nor a BMP file"
    size = encoded_image_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:  # a small file can declare a huge picture
        return None, (f"image file {name} declares {size[1]}x{size[0]} pixels, over {MAX_IMAGE_PIXELS // 2**20} "
                      "megapixels")
    import tensorflow as tf

    try:
        if jpeg:
            image = tf.io.decode_jpeg(data, channels=3, ratio=ratio)
        else:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
        reason = error.message.splitlines()[0].split("} ")[-1].strip()
        return None, f"image file {name} cannot be decoded ({reason})"
    return image.numpy(), None


def encoded_image_size(data: bytes) -> tuple[int, int] | None:
    """`(height, width)` read from a JPEG, PNG or BMP file's header without decoding it, or None if unreadable.

    A server checks it before decoding: a file of a few kilobytes can declare a picture of gigabytes.
    """
    import struct

    if data.startswith(PNG_START) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data.startswith(BMP_START) and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(height), width
    if data.startswith(JPEG_START):
        import tensorflow as tf

        try:
            height, width, _ = tf.io.extract_jpeg_shape(data).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
            return None
        return int(height), int(width)
    return None


def decode_photo(data: bytes, name: str, min_side: int = MIN_PHOTO_SIDE, quiet: bool = True):
    """`(RGB uint8 image, None)`, or `(None, what is wrong)`: a photo for prediction, from its file's bytes.

    TensorFlow's decoder checks the whole file (as the data check does); the pixels are OpenCV's, as a
    client of the `serving_default` signature would read them. Images smaller than `min_side` pixels a
    side cannot show a person the model could find, and are refused. `quiet` silences libjpeg's own
    warnings (the problem is reported by name, in one line) by redirecting file descriptor 2 for the
    whole process, which a multi-threaded caller (the server) should not do.
    """
    import contextlib

    import cv2

    from keras_hourglass.fileio import quiet_stderr

    with quiet_stderr() if quiet else contextlib.nullcontext():
        problem = decode_image(data, name, ratio=8)[1]
        image = None if problem else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if problem or image is None:
        return None, problem or f"{name}: cannot decode the image"
    if min(image.shape[:2]) < min_side:
        return None, (f"{name}: the image is {image.shape[1]}x{image.shape[0]} pixels, too small to hold a person "
                      f"(at least {min_side} pixels a side)")
    return image[..., ::-1], None


def read_h5(path: str, required: Sequence[str], kind: str) -> dict:
    """Reads every field of an HDF5 annotation file, naming the file and the missing fields."""
    if os.path.isdir(path):
        raise ValueError(f"{path}: a folder, not an HDF5 annotation file.")
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in required if key not in f]
            if missing:
                raise ValueError(f"{path}: not a {kind} HDF5 annotation file, missing fields {missing}.")
            return {key: f[key][()] for key in f.keys()}
    except OSError as error:
        reason = str(error).splitlines()[0].split(" (file read failed")[0]
        raise ValueError(f"{path}: cannot read as HDF5 ({reason}).") from None


def join_image_dir(names, image_dir) -> list[str]:
    """Image names (str or bytes) joined to `image_dir` when one is given."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [os.path.join(os.fspath(image_dir), n) for n in names] if image_dir is not None else names
