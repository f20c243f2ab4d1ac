"""Data: annotation files to `PoseRecords` (one loader per format), the synthetic set, and `tf.data` batches.

The flow is annotation file -> `PoseRecords` (`records`, with a loader per
format in `mpii`, `flic`, `coco`, chosen by `loaders.load_records`) ->
examples and batches (`pipeline`). `synthetic` generates a procedural data
set in MPII's HDF5 layout.
"""

from keras_hourglass.data.coco import load_coco
from keras_hourglass.data.flic import load_flic_h5, load_flic_mat
from keras_hourglass.data.loaders import DATASETS, load_records
from keras_hourglass.data.mpii import (
    load_mpii_detections,
    load_mpii_h5,
    load_mpii_json,
    load_mpii_release,
    split_by_reference,
)
from keras_hourglass.data.pipeline import NO_AUGMENTATION, Augmentation, build_dataset, build_eval_dataset
from keras_hourglass.data.records import PoseRecords
from keras_hourglass.data.synthetic import generate as generate_synthetic

__all__ = [
    "DATASETS",
    "NO_AUGMENTATION",
    "Augmentation",
    "PoseRecords",
    "build_dataset",
    "build_eval_dataset",
    "generate_synthetic",
    "load_coco",
    "load_flic_h5",
    "load_flic_mat",
    "load_mpii_detections",
    "load_mpii_h5",
    "load_mpii_json",
    "load_mpii_release",
    "load_records",
    "split_by_reference",
]
