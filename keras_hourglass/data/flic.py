"""FLIC loaders: the original `examples.mat` and the HDF5 layout.

FLIC has 11 joints here (`keras_hourglass.joints.FLIC`), taken from the 29
columns of the original `coords` (MODEC order, 0-based: l_shoulder 0,
l_elbow 1, l_wrist 2, r_shoulder 3, r_elbow 4, r_wrist 5, l_hip 6, r_hip 9,
l_eye 12, r_eye 13, nose 16).

Left and right. The original labels are person-centric (anatomical); the
usual training files are observer-centric: left and right follow the image,
so for the people facing away (left shoulder left of the right shoulder in
the image) the labels are mirrored. Observer-centric labels are easier to
learn and are what the standard numbers use; `person_centric=True` keeps the
anatomical labels. The metric's torso size `||r_shoulder - l_hip||` is always
anatomical (the HDF5 files store the same `normalize` in both layouts).

Coordinates are MATLAB pixels, shifted by -1 on reading as for MPII. The
person box of the usual files: centre x at the torso box's centre, centre y
at the image's middle row, scale 2.2 (a 440-pixel box for FLIC's 480-row
images).
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from keras_hourglass.data.records import MATLAB_OFFSET, PoseRecords, join_image_dir, read_h5
from keras_hourglass.joints import FLIC
from keras_hourglass.metrics import torso_normalizer

FLIC_SCALE = 2.2
# Columns of the original 29-joint `coords` for FLIC's 11 joints.
MODEC_COLUMNS = (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16)


def facing_away(keypoints) -> np.ndarray:
    """`[N]` bool: the left shoulder is left of the right shoulder in the image."""
    keypoints = np.asarray(keypoints)
    return keypoints[:, FLIC.index("l_shoulder"), 0] < keypoints[:, FLIC.index("r_shoulder"), 0]


def to_observer_centric(keypoints) -> np.ndarray:
    """Swaps left and right joints of the people facing away (`[N, 11, 2]`)."""
    keypoints = np.array(keypoints)
    away = facing_away(keypoints)
    keypoints[away] = keypoints[away][:, FLIC.flip_index]
    return keypoints


def load_flic_h5(path, image_dir=None, person_centric=None) -> PoseRecords:
    """Loads the HDF5 layout (`imgname`, `center`, `scale`, `part`, `visible`, `normalize`).

    Args:
        path: e.g. `valid.h5` (observer-centric) or `valid_personcentric.h5`.
        image_dir: folder of the images.
        person_centric: None keeps the file's labels; True or False converts
            observer-centric labels (the conversion from observer- to
            person-centric is not possible: use the person-centric file).
    """
    path = os.fspath(path)
    data = read_h5(path, ("imgname", "center", "scale", "part", "normalize"), "FLIC")
    part = np.asarray(data["part"], np.float64)
    if part.ndim != 3 or part.shape[1:] != (FLIC.num_keypoints, 2):
        raise ValueError(f"{path}: field 'part' must have shape [N, 11, 2], got {part.shape}.")
    if person_centric is False:
        part = to_observer_centric(part)
    elif person_centric is True and not facing_away(part).any():
        raise ValueError(
            f"{path}: these labels look observer-centric (nobody faces away); person-centric labels "
            "cannot be recovered from them: load the *_personcentric.h5 file instead."
        )
    annotated = np.isfinite(part).all(-1)
    return PoseRecords(
        spec=FLIC,
        image_path=join_image_dir(data["imgname"], image_dir),
        keypoints=np.where(annotated[..., None], part - MATLAB_OFFSET, 0),
        annotated=annotated,
        visible=np.asarray(data.get("visible", annotated)) > 0,
        center=np.asarray(data["center"], np.float64) - MATLAB_OFFSET,
        scale=data["scale"],
        normalizer=data["normalize"],
        id=[f"{os.path.basename(path)}:{row}" for row in range(len(part))],
        source=path,
        coordinate_offset=MATLAB_OFFSET,
    )


def load_flic_mat(path, image_dir=None, split="test", person_centric=False) -> PoseRecords:
    """Loads the original `examples.mat` (`coords` 2x29 with NaN, `filepath`, `istrain`, `istest`, `torsobox`).

    Args:
        path: `examples.mat`.
        image_dir: folder of the images (FLIC's `images/`).
        split: `"train"` (`istrain`) or `"test"` (`istest`).
        person_centric: False (default, the standard) mirrors the labels of
            people facing away; True keeps the anatomical labels.
    """
    path = os.fspath(path)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    try:
        examples = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["examples"]
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"{path}: not a FLIC examples.mat file (variable 'examples'): {error}") from None
    examples = list(np.atleast_1d(examples).ravel())
    rows, keypoints, centers, names = [], [], [], []
    for row, example in enumerate(examples):
        try:
            if not bool(getattr(example, "istrain" if split == "train" else "istest")):
                continue
            coords = np.asarray(example.coords, np.float64)
            torsobox = np.asarray(example.torsobox, np.float64).ravel()
            image_height = float(np.asarray(example.imgdims).ravel()[0])
            filepath = str(example.filepath)
        except AttributeError as error:
            raise ValueError(f"{path}: example {row} lacks a field ({error}).") from None
        if coords.shape != (2, 29) or torsobox.shape != (4,):
            raise ValueError(
                f"{path}: example {row} ({filepath}): coords must be 2x29 and torsobox 4 values, "
                f"got {coords.shape} and {torsobox.shape}."
            )
        rows.append(row)
        keypoints.append(coords.T[list(MODEC_COLUMNS)])
        centers.append([(torsobox[0] + torsobox[2]) / 2, image_height / 2])
        names.append(filepath)
    keypoints = np.asarray(keypoints, np.float64).reshape(-1, FLIC.num_keypoints, 2)
    annotated = np.isfinite(keypoints).all(-1)
    normalizer = torso_normalizer(np.nan_to_num(keypoints), FLIC)  # anatomical labels
    normalizer[~annotated[:, list(FLIC.indices(FLIC.torso))].all(-1)] = np.nan
    if not person_centric:
        keypoints = to_observer_centric(keypoints)
        annotated = np.isfinite(keypoints).all(-1)
    return PoseRecords(
        spec=FLIC,
        image_path=join_image_dir(names, image_dir),
        keypoints=np.where(annotated[..., None], np.nan_to_num(keypoints) - MATLAB_OFFSET, 0),
        annotated=annotated,
        visible=annotated,
        center=np.asarray(centers, np.float64).reshape(-1, 2) - MATLAB_OFFSET,
        scale=np.full(len(rows), FLIC_SCALE),
        normalizer=normalizer,
        id=[f"{os.path.basename(path)}:{row}" for row in rows],
        source=path,
        coordinate_offset=MATLAB_OFFSET,
    )
