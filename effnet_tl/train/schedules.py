"""Learning-rate schedules for fine-tuning: linear warm-up, then cosine decay.

Example:
    >>> import keras
    >>> from effnet_tl.train.schedules import WarmupCosine
    >>> schedule = WarmupCosine(peak_lr=1e-3, total_steps=100, warmup_steps=10)
    >>> round(float(schedule(9)), 6)  # the last warm-up step reaches the peak
    0.001
    >>> optimizer = keras.optimizers.AdamW(learning_rate=schedule)
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet_tl")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak_lr``, then half-cosine decay to ``min_lr`` at ``total_steps``.

    With ``w = warmup_steps`` and ``T = total_steps`` (the optimizer's ``iterations`` is ``step``):

    * ``step < w``: ``peak_lr * (step + 1) / w``. Counting from ``step + 1`` makes the very
      first update non-zero (a zero learning rate would waste a step) and the last warm-up
      step (``w - 1``) exactly ``peak_lr``.
    * ``w <= step <= T``: ``min_lr + (peak_lr - min_lr) * (1 + cos(pi * (step - w) / (T - w))) / 2``
      (``peak_lr`` at ``w``, ``min_lr`` at ``T``).
    * ``step > T``: ``min_lr`` (training longer than planned never raises the rate again).

    Args:
        peak_lr: Learning rate at the end of warm-up; > 0.
        total_steps: Step at which the decay reaches ``min_lr``; >= 1.
        warmup_steps: Number of warm-up steps, 0 <= warmup_steps <= total_steps.
        min_lr: Final learning rate, 0 <= min_lr <= peak_lr. Give this or
            ``final_lr_fraction``, not both.
        final_lr_fraction: Final learning rate as a fraction of ``peak_lr`` (0..1).
            When neither is given the decay ends at 0.

    Example:
        >>> schedule = WarmupCosine(peak_lr=1.0, total_steps=10, warmup_steps=0,
        ...                         final_lr_fraction=0.1)
        >>> round(float(schedule(5)), 4), round(float(schedule(10)), 4)
        (0.55, 0.1)
    """

    def __init__(
        self,
        *,
        peak_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr: float | None = None,
        final_lr_fraction: float | None = None,
    ):
        super().__init__()
        if not (isinstance(peak_lr, (int, float)) and peak_lr > 0 and math.isfinite(peak_lr)):
            raise ValueError(f"peak_lr must be a finite number > 0. Received: peak_lr={peak_lr!r}")
        if not (isinstance(total_steps, int) and total_steps >= 1):
            raise ValueError(
                f"total_steps must be an integer >= 1. Received: total_steps={total_steps!r}"
            )
        if not (isinstance(warmup_steps, int) and 0 <= warmup_steps <= total_steps):
            raise ValueError(
                "warmup_steps must be an integer with 0 <= warmup_steps <= total_steps "
                f"({total_steps}). Received: warmup_steps={warmup_steps!r}"
            )
        if min_lr is not None and final_lr_fraction is not None:
            raise ValueError(
                "Give min_lr or final_lr_fraction, not both. Received: "
                f"min_lr={min_lr!r}, final_lr_fraction={final_lr_fraction!r}"
            )
        if final_lr_fraction is not None:
            if not 0.0 <= final_lr_fraction <= 1.0:
                raise ValueError(
                    "final_lr_fraction must be in [0, 1]. "
                    f"Received: final_lr_fraction={final_lr_fraction!r}"
                )
            min_lr = peak_lr * final_lr_fraction
        min_lr = 0.0 if min_lr is None else min_lr
        if not 0.0 <= min_lr <= peak_lr:
            raise ValueError(
                f"min_lr must be in [0, peak_lr={peak_lr}]. Received: min_lr={min_lr!r}"
            )
        self.peak_lr = float(peak_lr)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warmup_lr = self.peak_lr * (step + 1.0) / warmup
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            # All warm-up, no decay: the rate drops to min_lr once total_steps is reached.
            progress = ops.where(step >= self.total_steps, 1.0, 0.0)
        else:
            progress = ops.clip((step - self.warmup_steps) / float(decay_steps), 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed_lr = self.min_lr + (self.peak_lr - self.min_lr) * cosine
        return ops.where(step < self.warmup_steps, warmup_lr, decayed_lr)

    def get_config(self) -> dict:
        # final_lr_fraction is folded into min_lr, so this dict rebuilds an identical schedule.
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_lr": self.min_lr,
        }
