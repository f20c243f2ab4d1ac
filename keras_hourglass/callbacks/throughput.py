"""`Throughput`: training images per second of each epoch's steps, printed after the epoch."""

from __future__ import annotations

import time

import keras


class Throughput(keras.callbacks.Callback):
    """Prints `epoch N: S steps of B images in T s: R images/s` after each epoch.

    The time runs from the start of the epoch's first step to the end of its
    last one, so the evaluation and checkpoints at the end of an epoch are
    not in it (Keras's own `s/step` includes them). The first epoch also
    holds the tracing of the step. `batch_size` is the global batch.
    """

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.rates: list[float] = []
        self._start = self._end = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._end, self._steps = None, None, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._end = time.perf_counter()
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if not self._steps:
            return
        seconds = self._end - self._start
        self.rates.append(self._steps * self.batch_size / seconds)
        print(f"epoch {epoch + 1}: {self._steps} steps of {self.batch_size} images in {seconds:.1f} s: "
              f"{self.rates[-1]:.1f} images/s", flush=True)
