"""One entry point from (data set, annotation file) to `PoseRecords`.

The loader is chosen by the data set and the file's extension:

| data set    | file                     | loader                                   |
| ----------- | ------------------------ | ---------------------------------------- |
| `mpii`      | `.h5`                    | `keras_hourglass.data.mpii.load_mpii_h5`             |
| `mpii`      | `.json`                  | `keras_hourglass.data.mpii.load_mpii_json`           |
| `mpii`      | `.mat` (official release)| `keras_hourglass.data.mpii.load_mpii_release`        |
| `mpii`      | `detections_our_format.mat` | `keras_hourglass.data.mpii.load_mpii_detections` (scoring only) |
| `flic`      | `.h5`                    | `keras_hourglass.data.flic.load_flic_h5`             |
| `flic`      | `.mat` (`examples.mat`)  | `keras_hourglass.data.flic.load_flic_mat`            |
| `coco`      | `.json` (COCO keypoints) | `keras_hourglass.data.coco.load_coco`                |
| `synthetic` | `.h5` (MPII layout)      | `keras_hourglass.data.mpii.load_mpii_h5`             |

`split` picks the rows of files that hold several splits: `train` or `test`
(FLIC's `examples.mat`), `train` (the MPII release's training people).
"""

from __future__ import annotations

import os

import scipy.io

from keras_hourglass.data.coco import load_coco
from keras_hourglass.data.flic import load_flic_h5, load_flic_mat
from keras_hourglass.data.mpii import load_mpii_detections, load_mpii_h5, load_mpii_json, load_mpii_release
from keras_hourglass.data.records import PoseRecords
from keras_hourglass.joints import DATASETS


def _mat_fields(path) -> set:
    try:
        return {name for name, _, _ in scipy.io.whosmat(path)}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable MATLAB file ({error}).") from None


_LOADERS = {
    ("mpii", ".h5"): lambda path, image_dir, split: load_mpii_h5(path, image_dir),
    ("mpii", ".json"): lambda path, image_dir, split: load_mpii_json(path, image_dir),
    ("mpii", ".mat"): lambda path, image_dir, split: (
        load_mpii_detections(path) if "pos_gt_src" in _mat_fields(path)
        else load_mpii_release(path, image_dir, split or "train")),
    ("synthetic", ".h5"): lambda path, image_dir, split: load_mpii_h5(path, image_dir),
    ("flic", ".h5"): lambda path, image_dir, split: load_flic_h5(path, image_dir),
    ("flic", ".mat"): lambda path, image_dir, split: load_flic_mat(path, image_dir, split or "test"),
    ("coco", ".json"): lambda path, image_dir, split, normalizer_joints=None: load_coco(
        path, image_dir, normalizer_joints=normalizer_joints),
}


def load_records(dataset: str, path: str, image_dir: str | None = None, split: str | None = None,
                 normalizer_joints=None) -> PoseRecords:
    """Loads an annotation file of `dataset` with the loader for its extension.

    `normalizer_joints` (two joint names) sets the PCK normaliser of COCO
    files (default: the person box size); other formats carry their own.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {', '.join(DATASETS)}.")
    extension = os.path.splitext(str(path))[1].lower()
    loader = _LOADERS.get((dataset, extension))
    if loader is None:
        known = sorted(ext for name, ext in _LOADERS if name == dataset)
        raise ValueError(f"{path}: no {dataset} loader for {extension or 'files without an extension'!r} files; "
                         f"expected one of {', '.join(known)}.")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: annotation file not found.")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path}: annotation file not readable (permission denied).")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: annotation file is empty (0 bytes).")
    if image_dir is not None and not os.path.isdir(image_dir):
        raise ValueError(f"{image_dir}: image directory not found.")
    if normalizer_joints is not None:
        if len(tuple(normalizer_joints)) != 2:
            raise ValueError(f"normalizer joints must be two joint names, 'a,b'; got {list(normalizer_joints)}.")
        if dataset != "coco":
            raise ValueError(f"normalizer_joints applies to coco files only; {dataset} carries its own normaliser.")
        return loader(path, image_dir, split, normalizer_joints=tuple(normalizer_joints))
    return loader(path, image_dir, split)
