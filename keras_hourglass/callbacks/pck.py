"""`PCKCallback`: the data set's real metric (not a heatmap proxy) in the epoch's logs."""

from __future__ import annotations

import math
import time

import keras

from keras_hourglass.codec import HeatmapCodec
from keras_hourglass.data.records import PoseRecords
from keras_hourglass.evaluation import evaluate_model
from keras_hourglass.metrics import PCKResult, log_entries, standard_metric
from keras_hourglass.pose_model import pose_model_from_keras


class PCKCallback(keras.callbacks.Callback):
    """Evaluates the model on a validation split every `every` epochs.

    Runs the model on the validation crops (the same warp as training,
    without augmentation), decodes keypoints with the training codec,
    optionally with the flip test, maps them back to original image pixels
    and scores them against the records with the data set's standard
    metric: PCKh@0.5 for MPII, PCK@0.2 (torso) for FLIC, PCK at `threshold`
    of the records' own normaliser for other data. The mean and each joint
    group go into the epoch's logs (`val_pckh`, `val_pckh_wrist`, ... or
    `val_pck`, ...), so that callbacks after this one in the list
    (checkpoints, early stopping, `CSVLogger`, `TensorBoard`) and the
    progress bar see them. On epochs without an evaluation the entries are
    NaN (checkpoints skip them; `CSVLogger` needs every column from the first
    epoch on). Put it first in the callback list.

    Args:
        records: the validation people; their `normalizer` is the metric's.
        every: evaluate after every `every`-th epoch and after the last.
        flip_test: average with the mirrored crop's heatmaps.
        threshold: override the standard threshold.
        batch_size: evaluation batch size.
        codec: the training codec (its decoding is used); by default one
            with the model's sizes and the reference decoding.
        verbose: print the table after each evaluation.
        check_images: decode every image once when training starts (off
            where the caller has checked them).
    """

    def __init__(self, records: PoseRecords, every: int = 1, flip_test: bool = False,
                 threshold: float | None = None, batch_size: int = 16, codec: HeatmapCodec | None = None,
                 verbose: int = 1, check_images: bool = True):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every!r}.")
        self.records = records
        self.every = every
        self.flip_test = flip_test
        self.metric, self.threshold = standard_metric(records.spec, threshold)
        self.batch_size = batch_size
        self.codec = codec
        self.verbose = verbose
        self.check_images = check_images
        self.monitor = f"val_{self.metric.lower()}"
        self.log_keys = [self.monitor] + [f"{self.monitor}_{group.lower()}" for group in records.spec.groups]
        self.last_result: PCKResult | None = None
        self._pose_model = None

    def evaluate(self) -> PCKResult:
        """Scores the current weights with `keras_hourglass.evaluation.evaluate_model`; returns the table."""
        if self._pose_model is None:
            self._pose_model = pose_model_from_keras(self.model, self.records.spec.names,
                                                     self.records.spec.flip_index, self.codec)
        # The images were checked once, at the start of training.
        return evaluate_model(self._pose_model, self.records, self.flip_test, self.batch_size, self.threshold,
                              check_images=False).result

    def on_train_begin(self, logs=None):
        if self.check_images:
            self.records.check_images()
        self.records.check_normalizers()
        self._pose_model = None  # the model may have been rebuilt since the last fit

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") == epoch + 1
        if (epoch + 1) % self.every and not last:
            if logs is not None:  # NaN, not absent: CSVLogger fixes its columns at the first epoch
                logs.update({key: math.nan for key in self.log_keys})
            return
        start = time.perf_counter()
        self.last_result = self.evaluate()
        if logs is not None:
            logs.update(log_entries(self.last_result))
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: {self.last_result.format_table()}"
                  f"\n({len(self.records)} people, {time.perf_counter() - start:.1f} s)")
