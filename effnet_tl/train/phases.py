"""The training phases of :func:`effnet_tl.fit`, each one object with one small interface.

A :class:`Phase` says what trains (the head on a frozen backbone, or the top N whole blocks
with BatchNorm frozen), for how many epochs, at what peak learning rate.
:func:`run_phase` runs any phase the same way: make its part trainable, get its data
(:class:`~effnet_tl.train.phase_data.PhaseData`), compile AdamW with warm-up + cosine,
train with the run folder's callbacks, and return a :class:`PhaseOutcome`. Every phase
resumes after a kill from ``backup/<phase>/`` and keeps the run's best epoch
(:mod:`effnet_tl.train.selection`), so the next phase starts from the best model so far.

Example:
    >>> from effnet_tl.train.settings import FitOptions
    >>> from effnet_tl.train.defaults import DataFacts, resolve
    >>> settings = resolve(FitOptions.from_kwargs(variant="lite0"), DataFacts(500, 100))
    >>> [(p.name, p.epochs, p.unfreeze_blocks) for p in plan(settings)]  # None: after the head
    [('head', 25, 0), ('finetune', None, None)]
"""

from __future__ import annotations

import dataclasses
import time

import keras
import tensorflow as tf

from effnet_tl import compat
from effnet_tl.classifier import target_loss
from effnet_tl.train.callbacks import read_history, summarize_stop
from effnet_tl.train.cluster import is_multi_worker
from effnet_tl.train.defaults import warmup_epochs
from effnet_tl.train.distributed import distributed_fit
from effnet_tl.train.schedules import WarmupCosine
from effnet_tl.train.selection import StopAtDeadline, StopWhenStalled, resume_callbacks
from effnet_tl.train.step import SharedStepModel
from effnet_tl.train.surgery import freeze_backbone, set_finetune_trainable
from effnet_tl.train.tpu import steps_per_execution

__all__ = ["Phase", "PhaseOutcome", "plan", "run_phase"]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase: ``unfreeze_blocks=0`` trains the head on a frozen backbone; ``None``: how
    many blocks fine-tuning unfreezes is decided after the head (:mod:`~.adaptive`);
    ``train_batch_norm``: the unfrozen BatchNorm layers train (a backbone from scratch)."""

    name: str
    epochs: int | None
    peak_lr: float | None
    unfreeze_blocks: int | None = 0
    train_batch_norm: bool = False

    def make_trainable(self, model: keras.Model) -> list[str]:
        """Freeze what this phase does not train; the backbone layers left trainable."""
        if self.unfreeze_blocks == 0:
            freeze_backbone(model)
            return []
        return set_finetune_trainable(model, self.unfreeze_blocks,
                                      freeze_batch_norm=not self.train_batch_norm)

    def inputs(self, model, data, *, placement: str, epochs_trained: int):
        if self.unfreeze_blocks == 0:
            return data.head(model, placement=placement)
        return data.finetune(model, placement=placement, epochs_trained=epochs_trained)

    def describe(self, unfrozen: list[str], data) -> str:
        if self.unfreeze_blocks == 0:
            return ("training the head on the frozen backbone"
                    + (" (its output computed once)" if data.settings.recipe.cache_features else ""))
        cached = (f" on the cached output of the frozen layers below, {data.views} view(s) of "
                  f"the training set (1 plain + {data.views - 1} augmented)" if data.views else "")
        batch_norm = "BatchNorm trains" if self.train_batch_norm else "BatchNorm frozen"
        return (f"fine-tuning the top {self.unfreeze_blocks} blocks ("
                f"{unfrozen[0] if unfrozen else '-'} and every layer above it; {batch_norm})"
                f"{cached}")


def plan(settings) -> list[Phase]:
    """The phases of resolved ``settings``: the head, then fine-tuning (0 epochs, or 0 blocks
    to unfreeze: skipped; ``None`` epochs: decided with the depth after the head)."""
    recipe = settings.recipe
    phases = [Phase("head", recipe.head_epochs, recipe.head_lr),
              Phase("finetune", recipe.finetune_epochs, recipe.finetune_lr, recipe.unfreeze_blocks,
                    # No pretrained statistics to keep: BatchNorm must learn them.
                    train_batch_norm=settings.model.weights is None)]
    return [phase for phase in phases if (phase.epochs is None or phase.epochs > 0)
            and (phase.name == "head" or phase.unfreeze_blocks != 0)]


@dataclasses.dataclass
class PhaseOutcome:
    """What a phase did: epochs run, seconds, and why it stopped early (if it did)."""

    name: str
    epochs: int
    seconds: float
    nonfinite: dict | None = None   # the NaN/Inf stop record (epoch, batch, loss, message)
    stopped_early: dict | None = None  # {"epoch", "reason"} (epochs 1-based, as Keras prints)
    improved: bool = False          # this phase produced the kept epoch

    def to_dict(self) -> dict:
        return {"done": True, "epochs": self.epochs, "seconds": self.seconds,
                "stopped_early": self.stopped_early, "nonfinite": self.nonfinite,
                "improved": self.improved}


def optimizer(peak_lr: float, steps_per_epoch: int, epochs: int, recipe):
    """AdamW with linear warm-up + cosine decay over the phase's steps."""
    total = max(1, steps_per_epoch * max(epochs, 1))
    schedule = WarmupCosine(peak_lr=peak_lr, total_steps=total,
                            warmup_steps=min(total, int(round(recipe.warmup_fraction * total))),
                            final_lr_fraction=0.01)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=recipe.weight_decay)


def run_phase(phase: Phase, model, data, *, paths, settings, first_epoch: int, placement: str,
              verbose: int, tensorboard: bool = False, deadline: float | None = None
              ) -> PhaseOutcome:
    """Train ``phase`` of the classifier ``model``; epochs continue from ``first_epoch``.

    ``deadline`` (a ``time.time()``): stop after the last epoch that ends before it.
    """
    started = time.perf_counter()
    unfrozen = phase.make_trainable(model)
    recipe = settings.recipe
    callbacks = resume_callbacks(
        paths.root, phase=phase.name, monitor=recipe.monitor, classifier=model,
        patience=recipe.patience if recipe.early_stopping else None, first_epoch=first_epoch,
        warmup_epochs=warmup_epochs(phase.epochs, recipe.warmup_fraction))
    backup, keep = callbacks[0], callbacks[2]
    if deadline is not None:
        callbacks.insert(-1, StopAtDeadline(deadline))
    stoppers = [c for c in callbacks if isinstance(c, (StopWhenStalled, StopAtDeadline))]
    epochs_trained = max(0, backup.resume_epoch - first_epoch)
    if verbose:
        # Epochs are numbered across the run (as history.csv and "kept epoch" count them).
        first, last = first_epoch + 1, first_epoch + phase.epochs
        span = f"epoch {first}" if first == last else f"epochs {first}-{last}"
        print(f"effnet_tl: {phase.name} phase, {span} of the run: "
              f"{phase.describe(unfrozen, data)}", flush=True)
        if epochs_trained:
            print(f"effnet_tl: resuming the {phase.name} phase after epoch "
                  f"{backup.resume_epoch} (from {paths.backup / phase.name})", flush=True)
    inputs = phase.inputs(model, data, placement=placement, epochs_trained=epochs_trained)
    trainee = SharedStepModel.wrap(inputs.trainee)
    strategy = tf.distribute.get_strategy()
    trainee.compile(optimizer=optimizer(phase.peak_lr, data.steps, phase.epochs, settings.recipe),
                    loss=target_loss(settings.recipe.label_smoothing), metrics=["accuracy"],
                    steps_per_execution=steps_per_execution(strategy, data.steps))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths.tensorboard / phase.name)))
    class_weight = settings.data.class_weight
    class_weight = class_weight if isinstance(class_weight, dict) else None
    if is_multi_worker(strategy):  # Keras' fit fails under it (keras#20585): the custom loop
        distributed_fit(trainee, strategy=strategy, train_dataset=inputs.train,
                        validation_dataset=inputs.val, initial_epoch=first_epoch,
                        epochs=first_epoch + phase.epochs, steps_per_epoch=inputs.steps,
                        validation_steps=inputs.val_steps, metrics=["accuracy"],
                        callbacks=callbacks, class_weight=class_weight,
                        per_worker_datasets=data.sharded, verbose=verbose)
    else:
        compat.build_for_training(trainee, inputs.train.element_spec)  # else traced twice
        trainee.fit(inputs.train, validation_data=inputs.val, initial_epoch=first_epoch,
                    epochs=first_epoch + phase.epochs, steps_per_epoch=inputs.steps,
                    validation_steps=inputs.val_steps, callbacks=callbacks,
                    class_weight=class_weight, verbose=verbose, shuffle=False)
    epochs = sum(1 for row in read_history(paths.history) if row.get("phase") == phase.name)
    outcome = PhaseOutcome(phase.name, epochs, round(time.perf_counter() - started, 2),
                           improved=keep.improved)
    outcome.nonfinite = summarize_stop(callbacks)
    stall = next((c for c in stoppers if c.stopped_epoch is not None), None)
    if stall is not None:
        outcome.stopped_early = {"epoch": stall.stopped_epoch + 1, "reason": stall.reason}
        if verbose:
            kept = keep.best
            print(f"effnet_tl: {phase.name} phase stopped early after epoch "
                  f"{stall.stopped_epoch + 1} of {first_epoch + phase.epochs}: {stall.reason}; "
                  + (f"keeping epoch {kept['epoch'] + 1} ({keep.ranking.describe(kept)})"
                     if kept else "no epoch to keep"), flush=True)
    return outcome
