"""Learning-rate range test ("LR finder"): sweep the rate exponentially, watch the loss.

Example:
    >>> import numpy as np, keras, tensorflow as tf
    >>> from effnet_tl.train.lr_finder import find_lr
    >>> x = np.random.default_rng(0).normal(size=(256, 2)).astype("float32")
    >>> y = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]
    >>> model = keras.Sequential([keras.Input((2,)),
    ...     keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros")])
    >>> model.compile(optimizer="sgd", loss="categorical_crossentropy")
    >>> data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=0).batch(32)
    >>> result = find_lr(model, data, min_lr=1e-5, max_lr=10.0, num_steps=60)
    >>> 1e-3 <= result.suggested_lr <= 10.0
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from effnet_tl.train.step import per_example_loss, replica_train_step

__all__ = ["LRFinderResult", "find_lr", "plot_lr_finder"]


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """Outcome of :func:`find_lr`.

    Attributes:
        lrs: Learning rate of each step that ran.
        losses: Bias-corrected exponential moving average of the training loss per step.
        raw_losses: The training loss of each step.
        suggested_lr: Rate at the steepest descent of the smoothed loss (see :func:`find_lr`).
        min_loss_lr: Rate at the lowest smoothed loss; ``min_loss_lr / 10`` is the other
            common rule of thumb.
        diverged: Whether the sweep stopped early because the loss blew up.
        plot_path: The PNG written, or ``None``.
    """

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggested_lr: float
    min_loss_lr: float
    diverged: bool
    plot_path: Path | None = None


def _fresh_optimizer(optimizer: keras.optimizers.Optimizer, learning_rate: float):
    # A new optimizer of the same kind and settings: the model's own optimizer (and its slots,
    # iteration count and schedule) is never touched by the sweep.
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        inner = _fresh_optimizer(optimizer.inner_optimizer, learning_rate)
        return keras.optimizers.LossScaleOptimizer(inner)
    config = dict(optimizer.get_config())
    config["learning_rate"] = learning_rate
    return type(optimizer).from_config(config)


def _suggest(lrs: np.ndarray, losses: np.ndarray, skip_start: int) -> float:
    """Steepest negative slope of the smoothed loss against log10(lr), before its minimum."""
    # The first steps are skipped: the smoothed curve is still noisy there and its minimum
    # or slope would be an artefact of the first few batches.
    start = min(skip_start, max(len(losses) - 3, 0))
    end = start + int(np.argmin(losses[start:])) + 1
    if end - start < 3:
        return float(lrs[end - 1] / 10)
    slopes = np.gradient(losses[start:end], np.log10(lrs[start:end]))
    return float(lrs[start + int(np.argmin(slopes))])


def find_lr(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_steps: int = 100,
    smoothing: float = 0.9,
    divergence_factor: float = 4.0,
    optimizer: keras.optimizers.Optimizer | None = None,
    loss=None,
    plot_path: str | os.PathLike | None = None,
) -> LRFinderResult:
    """Run a learning-rate range test and restore the model afterwards.

    The rate grows exponentially from ``min_lr`` to ``max_lr`` over ``num_steps`` training
    steps (the shared :func:`~effnet_tl.train.step.replica_train_step`) on a fresh copy of the
    optimizer. The sweep stops early when the smoothed loss exceeds ``divergence_factor`` x
    its minimum or turns non-finite.

    **Suggestion rule**: the rate where the smoothed loss falls fastest against log10(rate)
    (steepest negative gradient), searched from step 10 up to the minimum of the smoothed
    loss after step 10; ``min_loss_lr`` (whose tenth is the other usual rule) is returned as
    well. The default ``smoothing=0.9`` lags ~10 steps, which for 100 steps over 7 decades
    is well under one decade.

    The model's variables (weights, BatchNorm statistics, seed states) are restored exactly,
    and ``model.optimizer`` is never stepped, so its state is unchanged.

    Args:
        model: A built model; compiled unless ``optimizer`` and ``loss`` are given.
        dataset: Batches of ``(x, y)`` or ``(x, y, sample_weight)``; repeated if too short.
        min_lr: First rate (> 0).
        max_lr: Last rate (> min_lr).
        num_steps: Steps of the sweep (>= 5).
        smoothing: EMA factor for the loss curve, in [0, 1).
        divergence_factor: Stop when smoothed loss > this x the best smoothed loss.
        optimizer: Kind/settings of optimizer to sweep with; defaults to ``model.optimizer``.
        loss: Loss to use; defaults to the compiled loss.
        plot_path: Where to write a PNG of loss vs rate with the suggestion marked.

    Returns:
        An :class:`LRFinderResult`.
    """
    if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
        raise ValueError(
            f"Need 0 < min_lr < max_lr (finite). Received: min_lr={min_lr!r}, max_lr={max_lr!r}"
        )
    if not (isinstance(num_steps, int) and num_steps >= 5):
        raise ValueError(f"num_steps must be an integer >= 5. Received: num_steps={num_steps!r}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1). Received: smoothing={smoothing!r}")
    base_optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    loss = loss if loss is not None else getattr(model, "loss", None)
    if base_optimizer is None or loss is None:
        raise ValueError(
            f"Model {model.name!r} is not compiled; compile it or pass optimizer= and loss=."
        )
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; call it on a batch first.")

    lrs = min_lr * (max_lr / min_lr) ** (np.arange(num_steps) / (num_steps - 1))
    sweep_optimizer = _fresh_optimizer(base_optimizer, float(lrs[0]))
    loss_fn = per_example_loss(loss)
    saved_state = [np.array(v.numpy()) for v in model.variables]

    @tf.function(reduce_retracing=True)
    def step(batch):
        return replica_train_step(model, batch, optimizer=sweep_optimizer, loss_fn=loss_fn)

    raw, smoothed = [], []
    average, best, diverged = 0.0, math.inf, False
    try:
        for index, batch in enumerate(dataset.repeat().take(num_steps)):
            sweep_optimizer.learning_rate = float(lrs[index])
            value = float(step(batch))
            raw.append(value)
            if not math.isfinite(value):
                diverged = True
                break
            average = smoothing * average + (1 - smoothing) * value
            smooth = average / (1 - smoothing ** (index + 1))  # bias correction
            smoothed.append(smooth)
            best = min(best, smooth)
            if smooth > divergence_factor * best and index > 0:
                diverged = True
                break
    finally:
        for variable, value in zip(model.variables, saved_state):
            variable.assign(value)

    if len(smoothed) < 2:
        raise RuntimeError(
            f"The loss was non-finite or diverged within {len(raw)} steps from min_lr={min_lr}; "
            "lower min_lr or check the inputs for NaN/Inf values."
        )
    used = lrs[: len(smoothed)]
    losses = np.asarray(smoothed)
    result = LRFinderResult(
        lrs=used,
        losses=losses,
        raw_losses=np.asarray(raw[: len(smoothed)]),
        suggested_lr=_suggest(used, losses, skip_start=10),
        min_loss_lr=float(used[int(np.argmin(losses))]),
        diverged=diverged,
    )
    if plot_path is not None:
        result = dataclasses.replace(result, plot_path=plot_lr_finder(result, path=plot_path))
    return result


def plot_lr_finder(result: LRFinderResult, *, path: str | os.PathLike,
                   size_inches: tuple[float, float] = (6.0, 4.0), dpi: int = 100) -> Path:
    """Write loss vs learning rate (log x) with the suggested rate marked, as a PNG.

    The image is ``size_inches x dpi`` pixels. Uses a standalone ``Figure`` (no pyplot state),
    so it works in notebooks and headless runs alike.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=size_inches, dpi=dpi)
    axes = figure.subplots()
    axes.plot(result.lrs, result.raw_losses, color="0.8", linewidth=1, label="loss")
    axes.plot(result.lrs, result.losses, color="C0", label="smoothed loss")
    suggested_index = int(np.argmin(np.abs(np.log(result.lrs) - math.log(result.suggested_lr))))
    axes.axvline(result.suggested_lr, color="C3", linestyle="--", linewidth=1)
    axes.plot([result.suggested_lr], [result.losses[suggested_index]], "o", color="C3",
              label=f"suggested lr = {result.suggested_lr:.2e}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    top = np.percentile(result.losses, 95) * 1.5
    axes.set_ylim(bottom=max(0.0, float(result.losses.min()) * 0.9), top=float(top))
    axes.legend(loc="upper left")
    axes.set_title("Learning-rate range test")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path
