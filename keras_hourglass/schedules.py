"""Learning-rate schedule: linear warm-up, then step decay (the paper drops the rate when validation plateaus)."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_hourglass")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`values[i]` from step `boundaries[i - 1]` on, times a linear warm-up over the first `warmup_steps`.

    A function of the optimizer's step count, which is saved with the
    optimizer, so a resumed run continues on the same schedule.

    Args:
        values: learning rates, one more than `boundaries`.
        boundaries: increasing step numbers where the rate changes.
        warmup_steps: the rate ramps from `values[0] / warmup_steps` to
            `values[0]` over these first steps (0: no warm-up).
    """

    def __init__(self, values: Sequence[float], boundaries: Sequence[int] = (), warmup_steps: int = 0):
        self.values = [float(v) for v in values]
        self.boundaries = [int(b) for b in boundaries]
        self.warmup_steps = int(warmup_steps)
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"values must have one more entry than boundaries, got {len(self.values)} values "
                             f"and {len(self.boundaries)} boundaries.")
        if any(v <= 0 for v in self.values):
            raise ValueError(f"learning rates must be positive, got {self.values}.")
        if self.boundaries != sorted(set(self.boundaries)) or any(b < 1 for b in self.boundaries):
            raise ValueError(f"boundaries must be increasing positive steps, got {self.boundaries}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}.")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.values[0], "float32")
        for boundary, value in zip(self.boundaries, self.values[1:]):
            rate = ops.where(step >= boundary, value, rate)
        if self.warmup_steps:
            rate = rate * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {"values": self.values, "boundaries": self.boundaries, "warmup_steps": self.warmup_steps}
