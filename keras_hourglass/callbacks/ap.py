"""`KeypointAPCallback`: COCO keypoint AP of a multi-person model in the epoch's logs, by pycocotools."""

from __future__ import annotations

import math
import time

import keras

from keras_hourglass.data.people import PeopleImages

AP_LOGS = {"val_ap": "AP", "val_ap50": "AP .5", "val_ap75": "AP .75", "val_ar": "AR"}


class KeypointAPCallback(keras.callbacks.Callback):
    """Scores the network on the validation images every `every` epochs (and after the last), as `evaluate.py`
    scores a multi-person SavedModel (`keras_hourglass.coco_ap.evaluate_people`).

    The entries of `AP_LOGS` go into the epoch's logs (NaN on epochs without
    an evaluation, as `PCKCallback` does), so the checkpoint after it keeps
    the best `val_ap`. Put it before the checkpoints in the callback list.

    Args:
        people: the validation images (`load_people(..., with_keypoints=False)`).
        every: evaluate after every `every`-th epoch and after the last.
        flip_test: with the mirrored image, as the reference tests.
        network: the network whose stacks output heatmaps then tags, when it is not the fitted model itself
            (`AssociativeEmbeddingTrainer` wraps it).
        codec: the `AssociativeEmbeddingCodec` (default: the reference's settings).
    """

    monitor = "val_ap"

    def __init__(self, people: PeopleImages, every: int = 1, flip_test: bool = True, network=None, codec=None,
                 verbose: int = 1):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every!r}.")
        self.people, self.every, self.flip_test = people, every, flip_test
        self.network, self.codec, self.verbose = network, codec, verbose
        self.last_stats = None
        self._model = None

    def evaluate(self) -> dict:
        from keras_hourglass.coco_ap import evaluate_people
        from keras_hourglass.multiperson import multi_person_model_from_keras

        if self._model is None:  # one traced function for the run, not one per evaluation
            self._model = multi_person_model_from_keras(self.network or self.model, self.people.spec)
        stats, _ = evaluate_people(self._model, self.people, self.codec, self.flip_test)
        return stats

    def on_train_begin(self, logs=None):
        self._model = None  # the model may have been rebuilt since the last fit

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") == epoch + 1
        if (epoch + 1) % self.every and not last:
            if logs is not None:
                logs.update({key: math.nan for key in AP_LOGS})
            return
        start = time.perf_counter()
        self.last_stats = self.evaluate()
        if logs is not None:
            logs.update({key: self.last_stats[name] for key, name in AP_LOGS.items()})
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: COCO keypoint AP {self.last_stats['AP']:.3f} (AP .5 "
                  f"{self.last_stats['AP .5']:.3f}, AR {self.last_stats['AR']:.3f}) on {len(self.people)} images, "
                  f"{time.perf_counter() - start:.1f} s")
