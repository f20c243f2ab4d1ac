"""Checkpoints that survive `kill -9`: the best model as a SavedModel, and the state to resume from.

Everything is written into a temporary directory and then renamed into
place (`keras_hourglass.fileio.replace_directory`), so a reader or a resumed
run only ever finds complete checkpoints.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil

import keras

from keras_hourglass.codec import HeatmapCodec
from keras_hourglass.export import PoseEstimator, save_estimator
from keras_hourglass.fileio import partial_directory, replace_directory

RESUME_PATTERN = re.compile(r"epoch-(\d{4,})$")
WEIGHTS_FILE = "model.weights.h5"  # weights and optimizer state (Keras writes both)
STATE_FILE = "state.json"


class SavedModelCheckpoint(keras.callbacks.Callback):
    """Keeps the best model, by a monitored log entry, as a servable SavedModel.

    On an improvement of `monitor` (e.g. `val_pckh`, written by the
    `PCKCallback` earlier in the callback list) the model is exported to
    `directory/best` with `keras_hourglass.export_saved_model`: serving
    signatures that take images and return keypoints, scores and heatmaps.
    At the end of training the final weights go to `directory/last`. Epochs
    without the monitored entry (the metric is computed every N epochs) are
    skipped. The best value survives a resume through `get_state`/`set_state`.

    Args:
        directory: where `best/` and `last/` go.
        codec: the training codec (input size, heatmap size, flip partners);
            None with `make_estimator`.
        keypoint_names: one per heatmap channel.
        monitor: the log entry to watch.
        mode: `"max"` (PCK) or `"min"` (a loss).
        flip_test: export the signatures with the flip test.
        limbs: the skeleton (`JointSpec.limbs`), kept in the metadata.
        export_model: the model to export, when it is not the one being
            fitted (quantization-aware training fits a wrapper that shares
            the float model's weights; the float model is what is exported).
        make_estimator: `model -> estimator` (anything `save_estimator`
            writes) instead of a `PoseEstimator` with the codec: a
            multi-person run's `MultiPersonEstimator`.
    """

    def __init__(self, directory: str, codec: HeatmapCodec | None, keypoint_names, monitor: str = "val_pckh",
                 mode: str = "max", flip_test: bool = False, verbose: int = 1, limbs=(), export_model=None,
                 make_estimator=None):
        super().__init__()
        self.make_estimator = make_estimator or (lambda model: PoseEstimator(
            model, self.codec, self.keypoint_names, self.flip_test, self.limbs))
        self.export_model = export_model
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.directory = directory
        self.codec = codec
        self.keypoint_names = list(keypoint_names)
        self.monitor = monitor
        self.mode = mode
        self.flip_test = flip_test
        self.limbs = tuple(limbs)
        self.verbose = verbose
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = None
        self._last_epoch = None
        self._estimator = None

    @property
    def best_path(self) -> str:
        return os.path.join(self.directory, "best")

    @property
    def last_path(self) -> str:
        return os.path.join(self.directory, "last")

    def _improved(self, value) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def _export(self, path, epoch, value=None):
        if self._estimator is None:  # one estimator per run: later saves reuse its traced functions
            self._estimator = self.make_estimator(self.export_model or self.model)
        save_estimator(self._estimator, path,
                       {"checkpoint.json": {"epoch": epoch + 1, "monitor": self.monitor, "value": value}})

    def set_model(self, model):
        super().set_model(model)
        self._estimator = None

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        value = (logs or {}).get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        value = float(value)
        if not self._improved(value):
            return
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.4g} to {value:.4g}; "
                  f"saving SavedModel to {self.best_path}")
        self.best, self.best_epoch = value, epoch + 1
        self._export(self.best_path, epoch, value)

    def on_train_end(self, logs=None):
        if self._last_epoch is None:
            return
        if self.best_epoch == self._last_epoch + 1 and os.path.isdir(self.best_path):
            # The last epoch was the best: `best/` holds these very weights; a copy costs no second export.
            temporary = partial_directory(self.last_path)
            shutil.copytree(self.best_path, temporary, dirs_exist_ok=True)
            with open(os.path.join(temporary, "assets.extra", "checkpoint.json"), "w") as f:
                json.dump({"epoch": self._last_epoch + 1, "monitor": self.monitor, "value": None}, f, indent=2)
            replace_directory(temporary, self.last_path)
            return
        self._export(self.last_path, self._last_epoch)

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state: dict) -> None:
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves everything needed to continue training after each epoch.

    `directory/epoch-NNNN/` holds the weights with the optimizer state
    (`model.weights.h5`), the epoch, and the state of the callbacks given in
    `stateful` (e.g. the best value of a `SavedModelCheckpoint`). It is
    written as `epoch-NNNN.partial/` and renamed when complete; older
    checkpoints are deleted afterwards, so a kill at any moment leaves at
    least one complete checkpoint (after the first epoch). Use
    `latest_resume_state` and `restore` to continue.

    Args:
        directory: where the checkpoints go.
        stateful: `{name: callback}` with `get_state()`/`set_state()`.
        keep: how many complete checkpoints to keep.
    """

    def __init__(self, directory: str, stateful: dict | None = None, keep: int = 1):
        super().__init__()
        self.directory = directory
        self.stateful = dict(stateful or {})
        self.keep = keep

    def on_train_begin(self, logs=None):
        for stale in glob.glob(os.path.join(self.directory, "epoch-*.partial")):  # left by a kill mid-write
            shutil.rmtree(stale, ignore_errors=True)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, f"epoch-{epoch + 1:04d}")
        temporary = partial_directory(final)
        self.model.save_weights(os.path.join(temporary, WEIGHTS_FILE))
        state = {
            "epoch": epoch + 1,
            "logs": {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))},
            "callbacks": {name: cb.get_state() for name, cb in self.stateful.items()},
        }
        with open(os.path.join(temporary, STATE_FILE), "w") as f:
            json.dump(state, f, indent=2)
        replace_directory(temporary, final)
        for old in _complete_checkpoints(self.directory)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, path: str) -> int:
        """Loads weights, optimizer state and callback states from `path`; returns the epoch to start at."""
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(path, WEIGHTS_FILE))
        for name, callback in self.stateful.items():
            if name in state["callbacks"]:
                callback.set_state(state["callbacks"][name])
        return int(state["epoch"])


def _complete_checkpoints(directory: str) -> list[str]:
    found = []
    for path in glob.glob(os.path.join(directory, "epoch-*")):
        match = RESUME_PATTERN.search(path)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)) and os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_resume_state(directory: str) -> str | None:
    """The newest complete checkpoint under `directory`, or None."""
    complete = _complete_checkpoints(directory)
    return complete[-1] if complete else None
