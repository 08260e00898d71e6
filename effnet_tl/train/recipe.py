"""The two-phase fine-tuning recipe behind :func:`effnet_tl.fit`.

Phase 1, ``"head"``: the backbone is frozen (BatchNorm in inference mode), so its output for
an un-augmented image never changes. By default the backbone runs ONCE over the training and
validation images and the head (extra blocks, pooling, dropout, Dense) trains on those cached
features: each head epoch costs a few milliseconds instead of a full forward pass.

Phase 2, ``"finetune"``: the top N whole backbone blocks (plus ``top_conv``) are unfrozen,
every BatchNormalization stays in inference mode, augmentation is on, and AdamW follows a
linear warm-up + cosine schedule at a much lower peak rate than the head's. The frozen layers
below the unfrozen blocks run once per view of the training set (plain, then augmented
copies) and the epochs cycle through those cached outputs (:mod:`effnet_tl.train.feature_cache`),
so an epoch costs the unfrozen blocks' forward and backward pass only.

Robustness: the best model by validation accuracy is checkpointed (``model.keras``); each
phase backs up its state every epoch, so rerunning the same call after a kill continues from
the last finished epoch (finished phases are skipped); early stopping; a NaN/Inf loss stops
cleanly and keeps the last good model; pixels that look like [0, 1] are rescaled with a
warning; imbalanced classes get "balanced" class weights.

Everything (model, optimizer, datasets) is built inside one ``strategy.scope()``; the training
step is :class:`~effnet_tl.train.step.SharedStepModel`'s, the same one
:func:`~effnet_tl.train.step.distributed_fit` runs for multi-worker training.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from effnet_tl.classifier import (
    build_classifier,
    feature_model,
    finetune_boundary,
    freeze_backbone,
    frozen_bottom,
    head_model,
    set_finetune_trainable,
    target_loss,
)
from effnet_tl.models import get_variant
from effnet_tl.train.callbacks import read_history, resume_callbacks, summarize_stop
from effnet_tl.train.feature_cache import (
    batched,
    inference_function,
    run_over,
    views_dataset,
    views_that_fit,
)
from effnet_tl.train.run import (
    UNIT_RANGE_MESSAGE,
    FitResult,
    RunPaths,
    default_run_name,
    looks_unit_range,
    read_json,
    write_json,
)
from effnet_tl.train.schedules import WarmupCosine
from effnet_tl.train.strategy import get_strategy, mixed_precision_policy_for

__all__ = ["FitSettings", "fit", "resolve_settings"]

AUTO = "auto"
# Settings that may differ between a killed call and its rerun without changing the run.
_RESUME_NEUTRAL = {"verbose", "tensorboard", "overwrite"}


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Every knob of :func:`fit`, after the ``"auto"`` defaults are resolved (``config.json``)."""

    variant: str
    weights: str | None
    image_size: tuple[int, int]
    batch_size: int
    head_epochs: int
    finetune_epochs: int
    unfreeze_blocks: int | str
    head_lr: float
    finetune_lr: float
    warmup_fraction: float
    weight_decay: float
    label_smoothing: float
    dropout_rate: float
    drop_path_rate: float
    extra_blocks: int
    augment: Any
    resize: str
    cache_features: bool
    finetune_views: int | str
    val_fraction: float
    seed: int
    patience: int | None
    monitor: str
    class_weight: dict | None
    mixed_precision: str
    fix_pixel_range: bool | str

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        if self.class_weight is not None:
            out["class_weight"] = {str(k): v for k, v in self.class_weight.items()}
        augment = self.augment
        if hasattr(augment, "to_dict"):
            out["augment"] = {"spec": augment.to_dict()}
        elif not isinstance(augment, (str, type(None))):
            out["augment"] = repr(augment)
        return out


# --------------------------------------------------------------------------- defaults


def default_batch_size(num_train: int, replicas: int = 1) -> int:
    """32 per replica (16 for tiny datasets, so an epoch still has several steps)."""
    per_replica = 16 if num_train < 320 else 32
    return per_replica * max(1, replicas)


def default_finetune_epochs(num_train: int) -> int:
    """More passes over small datasets, fewer over large ones (about 2-12)."""
    if num_train <= 1_000:
        return 12
    if num_train <= 5_000:
        return 8
    if num_train <= 50_000:
        return 5
    return 3


def default_unfreeze_blocks(num_train: int, num_blocks: int) -> int:
    """Top fraction of blocks to unfreeze: an eighth below 2k images, a quarter, half above 20k.

    Small datasets overfit when much is unfrozen, and every unfrozen block costs a backward
    pass (on CPU a 5x5 depthwise filter gradient costs ~7x its forward pass). Measured on
    digits (1.3k images, Lite0, 64 px, 4+4 epochs): 2 instead of 6 blocks gave about one
    point less test accuracy in two thirds of the time. Large datasets gain from adapting more.
    """
    if num_train < 2_000:
        fraction = 0.125
    elif num_train < 20_000:
        fraction = 0.25
    else:
        fraction = 0.5
    return max(1, min(num_blocks, math.ceil(fraction * num_blocks)))


def default_finetune_views(settings: FitSettings) -> int:
    """Views of the training set that cached fine-tuning cycles through: see feature_cache.

    Half the fine-tuning epochs, at least 2 (the plain images and one augmented copy).
    """
    return max(2, math.ceil(settings.finetune_epochs / 2))


def resolve_settings(*, num_train: int, num_blocks: int, replicas: int, strategy, **given) -> FitSettings:
    """Fill every ``None``/``"auto"`` knob from the dataset size and variant."""
    spec = get_variant(given["variant"])
    image_size = given["image_size"]
    if image_size is None:
        image_size = (spec.resolution, spec.resolution)
    elif isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = tuple(int(v) for v in image_size)
    batch_size = given["batch_size"] or default_batch_size(num_train, replicas)
    cache = given["cache_features"]
    extra = given["extra_blocks"]
    if cache == AUTO:
        # Pooled features are a few KB per image; feature maps (extra blocks) can be large.
        per_image = (spec_top_filters(spec) * 4) if not extra else (
            spec_top_filters(spec) * 4 * math.ceil(image_size[0] / 32) * math.ceil(image_size[1] / 32))
        cache = num_train * per_image < 2**30
    unfreeze = given["unfreeze_blocks"]
    if unfreeze == AUTO:
        unfreeze = default_unfreeze_blocks(num_train, num_blocks)
    head_epochs = given["head_epochs"]
    if head_epochs is None:
        # On cached features an epoch costs milliseconds: aim at ~400 head steps.
        steps = max(1, math.ceil(num_train / batch_size))
        head_epochs = min(60, max(10, math.ceil(400 / steps))) if cache else 3
    finetune_epochs = given["finetune_epochs"]
    if finetune_epochs is None:
        finetune_epochs = default_finetune_epochs(num_train)
    scale = batch_size / 32  # linear learning-rate scaling with the global batch
    head_lr = given["head_lr"] or 2e-3 * scale
    finetune_lr = given["finetune_lr"] or 1e-4 * scale
    mixed = given["mixed_precision"]
    if mixed == AUTO:
        mixed = mixed_precision_policy_for(strategy)
    elif mixed is True:
        mixed = mixed_precision_policy_for(strategy)
    elif mixed in (False, None):
        mixed = "float32"
    patience = given["patience"]
    if patience == AUTO:
        patience = max(3, finetune_epochs // 3)
    return FitSettings(
        variant=spec.name,
        weights=given["weights"],
        image_size=image_size,
        batch_size=int(batch_size),
        head_epochs=int(head_epochs),
        finetune_epochs=int(finetune_epochs),
        unfreeze_blocks=unfreeze,
        head_lr=float(head_lr),
        finetune_lr=float(finetune_lr),
        warmup_fraction=float(given["warmup_fraction"]),
        weight_decay=float(given["weight_decay"]),
        label_smoothing=float(given["label_smoothing"]),
        dropout_rate=float(spec.dropout_rate if given["dropout_rate"] is None else given["dropout_rate"]),
        drop_path_rate=float(given["drop_path_rate"]),
        extra_blocks=int(extra),
        augment=given["augment"],
        resize=given["resize"],
        cache_features=bool(cache),
        finetune_views=given["finetune_views"],
        val_fraction=float(given["val_fraction"]),
        seed=int(given["seed"]),
        patience=patience,
        monitor=given["monitor"],
        class_weight=None,
        mixed_precision=str(mixed),
        fix_pixel_range=given["fix_pixel_range"],
    )


def spec_top_filters(spec) -> int:
    from effnet_tl.models.scaling import round_filters

    if not spec.scale_stem_and_top:
        return spec.top_filters
    return round_filters(spec.top_filters, spec.width, keep_within_10_percent=spec.family != "v2")


# --------------------------------------------------------------------------- data


def _load_source(dataset, *, num_classes, val_fraction, seed, verbose):
    """Resolve + doctor the source; a wrong ``num_classes`` raises here, before any training."""
    from effnet_tl.data import DatasetSource, scan
    from effnet_tl.data.sources import resolve_source

    if isinstance(dataset, DatasetSource):
        from effnet_tl.data.classes import check_num_classes

        check_num_classes(dataset.class_names, num_classes, what=f"the {dataset.kind} source")
        resolved = dataset
    else:
        resolved = resolve_source(dataset, val_fraction=val_fraction, seed=seed, num_classes=num_classes)
    report = scan(resolved)
    if report.skipped and verbose:
        print(f"effnet_tl: skipping {len(report.skipped)} unusable files "
              f"(first: {report.skipped[0].path}: {report.skipped[0].reason})", flush=True)
    source = report.source
    if source.val is None:
        raise ValueError(
            "fit needs a validation split: the source has none and val_fraction="
            f"{val_fraction!r}; pass val_fraction > 0 or add a val/ folder."
        )
    return source, report


def _labels_of(examples) -> np.ndarray | None:
    labels = getattr(examples, "labels", None)
    return None if labels is None else np.asarray(labels)


def inference_batch_size(settings: FitSettings) -> int:
    """Batch for passes that train nothing (cached features, evaluation): bigger is faster.

    About 2 megapixels per batch (256 images at 64 px: 1.7x the images/s of batch 32 for
    Lite0 on 2 CPU cores), never below the training batch.
    """
    height, width = settings.image_size
    fit_pixels = 2 ** max(0, math.floor(math.log2(max(1, 2**21 // (height * width)))))
    return max(settings.batch_size, min(256, fit_pixels))


def _make(examples, settings: FitSettings, *, training: bool, shuffle: bool, cache="auto",
          batch_size: int | None = None, drop_remainder: bool = False):
    from effnet_tl.data import make_dataset

    return make_dataset(
        examples, image_size=settings.image_size, batch_size=batch_size or settings.batch_size,
        training=training, shuffle=shuffle, resize=settings.resize, seed=settings.seed,
        cache=cache, drop_remainder=drop_remainder,
    )


def _pixel_guard(dataset, fix: bool | str):
    """Check the first batch; pixels in [0, 1] are rescaled (``fix=True``) or only warned about."""
    if fix is False:
        return dataset, None
    images, _ = next(iter(dataset.take(1)))
    if not looks_unit_range(images.numpy()):
        return dataset, None
    if fix == "warn":
        warnings.warn(UNIT_RANGE_MESSAGE.format(action="Pass images in [0, 255]."), stacklevel=3)
        return dataset, "warned"
    warnings.warn(
        UNIT_RANGE_MESSAGE.format(action="Multiplying them by 255 (fix_pixel_range=False keeps "
                                  "them as they are)."),
        stacklevel=3,
    )
    return dataset.map(lambda x, y: (x * 255.0, y)), "rescaled"


def _rescale(dataset, action):
    return dataset.map(lambda x, y: (x * 255.0, y)) if action == "rescaled" else dataset


def _augmented(dataset, settings: FitSettings, placement: str, *, images_read: int):
    """Augment a training dataset that will yield ``images_read`` images in all."""
    from effnet_tl.augment import augment_dataset

    if settings.augment in (None, "none", False):
        return dataset
    # XLA-compiling the fused augmentation costs 2-4 s once, then runs it 2-4x faster
    # (measured, 2 CPU cores: 1.6 ms/image saved at 224 px): worth it above ~1e8 pixels.
    pixels = images_read * settings.image_size[0] * settings.image_size[1]
    return augment_dataset(dataset, settings.augment, seed=settings.seed, placement=placement,
                           jit_compile=pixels >= 1e8)


def _image_training_data(examples, settings: FitSettings, pixel_action, placement, *, epochs,
                         whole_batches):
    """Shuffled, augmented training images for a phase that runs the whole network."""
    images = _rescale(_make(examples, settings, training=True, shuffle=True,
                            drop_remainder=whole_batches), pixel_action)
    return _augmented(images, settings, placement, images_read=_count(examples) * epochs)


def _augmented_pass(examples, settings: FitSettings, pixel_action, view: int):
    """The training set once, in order, augmented with view ``view``'s own seed."""
    seeded = dataclasses.replace(settings, seed=settings.seed + view)
    images = _make(examples, seeded, training=True, shuffle=False,
                   batch_size=inference_batch_size(settings))
    return _augmented(_rescale(images, pixel_action), seeded, "dataset",
                      images_read=_count(examples))


def _above(function, arrays, batch_size):
    """``function`` over cached ``(x, y)`` arrays (``None``: they are already its output)."""
    return arrays if function is None else run_over(function, batched(arrays, batch_size))


def _finetune_views(settings: FitSettings, model, boundary, input_block, num_train, num_val,
                    budget: int | None = None) -> int:
    """How many views of the training set fine-tuning caches below ``boundary`` (0: none).

    No cache when features are not cached at all, when the unfrozen part starts at the
    input (nothing frozen to skip), or when augmentation runs inside the model (on an
    accelerator: the cached pass would miss it). Otherwise the requested views (``"auto"``:
    :func:`default_finetune_views`), as many as fit in memory; none when augmentation is on
    but only the plain view fits.
    """
    if not settings.cache_features or input_block is not None:
        return 0
    if boundary == model.get_layer("backbone").layers[1].name:
        return 0
    wanted = settings.finetune_views
    if wanted == AUTO:
        wanted = default_finetune_views(settings)
    if settings.augment in (None, "none", False):
        wanted = min(wanted, 1)  # un-augmented views are all the same
    bottom = frozen_bottom(model, boundary)
    fits = views_that_fit(int(wanted), shape=bottom.output.shape[1:], num_train=num_train,
                          num_val=num_val, budget=budget)
    # One cached view is the plain images alone: fine-tuning would lose its augmentation.
    return fits if fits >= min(int(wanted), 2) else 0


# --------------------------------------------------------------------------- callbacks


class _SaveFullModel(keras.callbacks.ModelCheckpoint):
    """The best-model checkpoint of a phase trained on cached features: saves the classifier.

    Such a phase trains a model over cached features that shares its layers with the
    classifier; the run folder's ``model.keras`` must still be the whole classifier. Writing a
    whole ``.keras`` file at every improving epoch cost more than training the head, so the
    best weights of the small trained model go to ``best_weights`` (a ``.npz`` file, read back
    when a killed phase resumes) and the classifier is written once, when the phase ends.
    ``restored`` says the best weights are back in the model (no need to read the file).
    """

    def __init__(self, classifier, *, best_weights: Path, **kwargs):
        super().__init__(**kwargs)
        self._classifier = classifier
        self._best_weights_path = Path(best_weights)
        self._best_weights = None
        self.restored = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # A resumed phase: its best epoch so far may be one the killed run never wrote out.
        if self._best_weights_path.exists():
            with np.load(self._best_weights_path) as stored:
                arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
            if [a.shape for a in arrays] == [tuple(w.shape) for w in self.model.weights]:
                self._best_weights = arrays

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):  # also updates self.best
            self._best_weights = [np.array(w) for w in self.model.weights]
            self._best_weights_path.parent.mkdir(parents=True, exist_ok=True)
            partial = self._best_weights_path.with_suffix(".partial.npz")
            np.savez(partial, *self._best_weights)
            os.replace(partial, self._best_weights_path)  # a kill never leaves half a file

    def on_train_end(self, logs=None):
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            self._classifier.save(self.filepath, overwrite=True)
            self.restored = True


def _phase_callbacks(paths: RunPaths, *, phase, settings, classifier=None, tensorboard=False):
    callbacks = resume_callbacks(
        paths.root, phase=phase, monitor=settings.monitor, patience=settings.patience,
    )
    if classifier is not None:
        for index, callback in enumerate(callbacks):
            if isinstance(callback, keras.callbacks.ModelCheckpoint):
                callbacks[index] = _SaveFullModel(
                    classifier, best_weights=paths.root / "backup" / f"{phase}-best.npz",
                    filepath=callback.filepath, monitor=callback.monitor,
                    mode=callback.mode, save_best_only=True,
                    initial_value_threshold=callback.best,  # the resumed run's bar
                )
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths.tensorboard / phase)))
    return callbacks


def _optimizer(peak_lr, steps_per_epoch, epochs, settings, *, weight_decay):
    total = max(1, steps_per_epoch * max(epochs, 1))
    schedule = WarmupCosine(
        peak_lr=peak_lr, total_steps=total,
        warmup_steps=min(total, int(round(settings.warmup_fraction * total))),
        final_lr_fraction=0.01,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)


def _steps(num_examples: int, batch_size: int, whole_batches: bool = False) -> int:
    if whole_batches:
        return max(1, num_examples // batch_size)
    return max(1, math.ceil(num_examples / batch_size))


def validation_batch_size(batch_size: int, num_val: int, replicas: int) -> int:
    """Batch of the per-epoch validation: whole batches that split evenly over replicas.

    With several replicas, a partial last batch gives some replica an empty or uneven share:
    Keras' first-batch build needs even shares, and oneDNN's CPU convolution returns the wrong
    shape for an empty batch (TF 2.21; fine with TF_ENABLE_ONEDNN_OPTS=0).

    Example:
        >>> validation_batch_size(32, 9, 1), validation_batch_size(32, 9, 2)
        (32, 8)
    """
    if replicas <= 1:
        return batch_size
    fitting = min(batch_size, replicas * (num_val // replicas))
    if fitting < replicas:
        raise ValueError(f"the validation split has {num_val} images, fewer than the {replicas} "
                         "replicas that each need one; use a larger val_fraction or a val/ folder")
    return fitting


# --------------------------------------------------------------------------- fit


def fit(
    dataset_dir,
    num_classes: int,
    *,
    variant: str = "b0",
    weights: str | None = "imagenet",
    image_size: int | Sequence[int] | None = None,
    run_dir: str | os.PathLike | None = None,
    runs_root: str | os.PathLike = "runs",
    name: str | None = None,
    batch_size: int | None = None,
    head_epochs: int | None = None,
    finetune_epochs: int | None = None,
    unfreeze_blocks: int | str = AUTO,
    head_lr: float | None = None,
    finetune_lr: float | None = None,
    warmup_fraction: float = 0.1,
    weight_decay: float = 1e-2,
    label_smoothing: float = 0.1,
    dropout_rate: float | None = None,
    drop_path_rate: float = 0.2,
    extra_blocks: int = 0,
    augment: Any = "medium",
    resize: str = "center_crop",
    cache_features: bool | str = AUTO,
    finetune_views: int | str = AUTO,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_weight: str | dict | None = AUTO,
    patience: int | str | None = AUTO,
    monitor: str = "val_accuracy",
    strategy: str | tf.distribute.Strategy | None = None,
    mixed_precision: str | bool = AUTO,
    fix_pixel_range: bool | str = True,
    top_k: Sequence[int] = (3, 5),
    tensorboard: bool = False,
    overwrite: bool = False,
    verbose: int = 1,
) -> FitResult:
    """Fine-tune an ImageNet EfficientNet on a dataset; write a run folder; return the result.

    Args:
        dataset_dir: Anything :func:`effnet_tl.data.resolve_source` accepts: a folder of class
            folders (or ``train/ val/ test/`` split folders), a CSV, a DataFrame,
            ``"tfds:NAME"``, ``(images, labels)`` arrays, a ``tf.data.Dataset``, or a
            :class:`~effnet_tl.data.DatasetSource`.
        num_classes: Number of classes; checked against the source before any training.
        variant: Backbone (``"b0"``... ``"lite0"``...); ``weights``: ``"imagenet"``, ``None`` or a
            file (offline, ImageNet weights exist for ``lite0``-``lite2`` only).
        image_size: Input side; default: the variant's resolution.
        run_dir: The run folder; default ``runs_root/name`` with ``name`` from the dataset and
            variant. Rerunning the same call resumes there; different settings raise unless
            ``overwrite=True`` (which starts afresh).
        batch_size: Global batch; default 32 per replica (16 below 320 images).
        head_epochs: Head-phase epochs; default ~400 steps (10-60 epochs) on cached
            features, else 3.
        finetune_epochs: Fine-tuning epochs; default 12 (≤1k images) ... 3 (>50k); 0 skips.
        unfreeze_blocks: Top backbone blocks to fine-tune: a count, a block name (``"block6a"``),
            ``"all"`` or ``"auto"`` (an eighth of the blocks below 2k images, a quarter below
            20k, else half).
        head_lr, finetune_lr: Peak AdamW learning rates; default 2e-3 and 1e-4 x batch/32.
        warmup_fraction: Linear warm-up share of each phase's steps before the cosine decay.
        weight_decay: AdamW decoupled weight decay.
        label_smoothing: Of the categorical crossentropy target block.
        dropout_rate: Before the Dense layer; default the variant's.
        drop_path_rate: Stochastic depth of the backbone's last block.
        extra_blocks: Extra MBConv blocks on top of the pretrained backbone (trained from scratch).
        augment: Fine-tuning augmentation: a preset (``"none"``, ``"light"``, ``"medium"``,
            ``"heavy"``), an :class:`~effnet_tl.augment.AugmentSpec`, Keras layers or an
            albumentations pipeline (see :func:`effnet_tl.augment.augment_dataset`).
        resize: How images reach ``image_size`` (:data:`effnet_tl.data.RESIZE_POLICIES`).
        cache_features: Run frozen layers once and train on their cached output: the whole
            backbone for the head phase, the layers below the unfrozen blocks for
            fine-tuning (``"auto"``: when the head's features fit in 1 GiB).
        finetune_views: Copies of the training set (the plain images, then augmented ones)
            whose frozen-layer output fine-tuning caches and cycles through, one per epoch;
            ``"auto"``: half the fine-tuning epochs, at least 2; as many as fit in a quarter
            of free memory (at most 1 GiB). When not even two fit (augmentation on), or with
            ``0``, fine-tuning runs the whole network on freshly augmented images every
            epoch. ``finetune_views=finetune_epochs`` gives every epoch its own copy.
        val_fraction: Share of each class held out for validation when the source has no
            validation split; ``seed`` seeds that split, the shuffle and the augmentation.
        class_weight: ``"auto"`` (balanced weights when the largest/smallest train class ratio
            exceeds 3), ``None``, or a ``{class index: weight}`` dict.
        patience: Early-stopping patience in epochs per phase (``None`` disables it).
        monitor: Metric for the best checkpoint and early stopping.
        strategy: A ``tf.distribute.Strategy`` or a kind for :func:`effnet_tl.train.strategy.get_strategy`.
        mixed_precision: ``"auto"`` (float32 on CPU, mixed_float16 on GPU, mixed_bfloat16 on
            TPU), a Keras policy name, or ``False``.
        fix_pixel_range: ``True`` rescales inputs that look like [0, 1] (with a warning),
            ``"warn"`` only warns, ``False`` skips the check.
        top_k: k values for the report's top-k accuracy.
        tensorboard: Also log to ``run_dir/tensorboard``.
        overwrite: Delete an existing run folder with other settings and start afresh.
        verbose: 0 silent, 1 Keras progress bars, 2 one line per epoch.

    Returns:
        A :class:`~effnet_tl.train.run.FitResult`.

    Example (not run here: it trains):
        >>> result = fit("data/flowers", 5, variant="lite0")            # doctest: +SKIP
        >>> result.metrics["val"]["accuracy"], result.paths.model       # doctest: +SKIP
        >>> labels, probabilities = result.predict(["a.jpg", "b.jpg"])  # doctest: +SKIP
    """
    started = time.perf_counter()
    given = dict(
        variant=variant, weights=weights, image_size=image_size, batch_size=batch_size,
        head_epochs=head_epochs, finetune_epochs=finetune_epochs,
        unfreeze_blocks=unfreeze_blocks, head_lr=head_lr, finetune_lr=finetune_lr,
        warmup_fraction=warmup_fraction, weight_decay=weight_decay,
        label_smoothing=label_smoothing, dropout_rate=dropout_rate,
        drop_path_rate=drop_path_rate, extra_blocks=extra_blocks, augment=augment,
        resize=resize, cache_features=cache_features, finetune_views=finetune_views,
        val_fraction=val_fraction, seed=seed,
        patience=patience, monitor=monitor, mixed_precision=mixed_precision,
        fix_pixel_range=fix_pixel_range,
    )
    _check_arguments(given, class_weight)

    # 1. Data first: a wrong num_classes or an empty split fails here, in seconds.
    source, scan_report = _load_source(
        dataset_dir, num_classes=num_classes, val_fraction=val_fraction, seed=seed, verbose=verbose
    )
    class_names = tuple(source.class_names)
    num_train = _count(source.train)
    spec = get_variant(variant)

    if isinstance(strategy, tf.distribute.Strategy):
        dist = strategy
    else:
        dist = get_strategy(strategy or "auto")
    settings = resolve_settings(
        num_train=num_train, num_blocks=_num_blocks(spec), replicas=dist.num_replicas_in_sync,
        strategy=dist, **given,
    )
    settings = dataclasses.replace(
        settings, class_weight=_resolve_class_weight(class_weight, source, scan_report, num_classes)
    )
    if settings.class_weight is not None and verbose:
        ratio = scan_report.imbalance_ratio
        print(f"effnet_tl: classes are imbalanced (largest/smallest = {ratio}); training with "
              f"class weights {_rounded(settings.class_weight)}", flush=True)

    paths = RunPaths(Path(run_dir) if run_dir is not None
                     else Path(runs_root) / (name or default_run_name(dataset_dir, spec.name)))
    config = _config_dict(settings, source, num_classes, class_names, dataset_dir, dist)
    _prepare_run_dir(paths, config, overwrite=overwrite)

    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(settings.mixed_precision)
    try:
        result = _train_and_report(
            paths, settings, source, class_names, dist, config, top_k=top_k,
            tensorboard=tensorboard, verbose=verbose, started=started,
        )
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    result.metrics["seconds"] = round(time.perf_counter() - started, 2)
    write_json(paths.report, result.metrics)
    return result


def _finish_phase(model, paths, phases, timings, name, *, epochs, started, stopped) -> None:
    """Mark a phase done in phases.json (so a rerun skips it) with its epochs and seconds."""
    phases[name] = {"done": True, "epochs": epochs}
    timings[name] = round(time.perf_counter() - started, 2)
    phases["seconds"] = timings
    if stopped:
        phases["stopped"] = stopped
    _ensure_checkpoint(model, paths)
    write_json(paths.phases, phases)


def _train_and_report(paths, settings, source, class_names, dist, config, *, top_k, tensorboard,
                      verbose, started) -> FitResult:
    from effnet_tl.augment import choose_placement
    from effnet_tl.data import write_labels

    write_labels(paths.root, class_names)
    phases = read_json(paths.phases) or {}
    placement = choose_placement(dist)
    num_classes = len(class_names)
    num_train, num_val = _count(source.train), _count(source.val)
    timings: dict[str, float] = dict(phases.get("seconds", {}))

    with dist.scope():
        input_block = None
        if placement == "model" and settings.augment not in (None, "none", False):
            from effnet_tl.augment import build_augmenter

            input_block = build_augmenter(settings.augment, seed=settings.seed)
        model = build_classifier(
            num_classes, variant=settings.variant, weights=settings.weights,
            image_size=settings.image_size, dropout_rate=settings.dropout_rate,
            drop_path_rate=settings.drop_path_rate, extra_blocks=settings.extra_blocks,
            input_block=input_block,
        )
        # Datasets: deterministic (un-augmented) views for features and evaluation.
        big_batch = inference_batch_size(settings)
        plain_train = _make(source.train, settings, training=False, shuffle=False, batch_size=big_batch)
        val_ds = _make(source.val, settings, training=False, shuffle=False, batch_size=big_batch)
        plain_train, pixel_action = _pixel_guard(plain_train, settings.fix_pixel_range)
        val_ds = _rescale(val_ds, pixel_action)
        config["pixel_range_action"] = pixel_action
        write_json(paths.config, config)

        stopped = phases.get("stopped")
        epochs_done = int(phases.get("head", {}).get("epochs", 0))

        # Several replicas: whole global batches only (see validation_batch_size).
        replicas = dist.num_replicas_in_sync
        whole = replicas > 1
        val_batch = validation_batch_size(settings.batch_size, num_val, replicas)
        steps = _steps(num_train, settings.batch_size, whole)
        if whole and verbose:
            print(f"effnet_tl: {replicas} replicas: every epoch trains on {steps} whole batches "
                  f"of {settings.batch_size} ({num_train - steps * settings.batch_size} of the "
                  f"{num_train} images sit out, different ones each epoch) and validates on "
                  f"{val_batch * (num_val // val_batch)} of {num_val} images; report.json "
                  "evaluates every image", flush=True)

        # What the frozen layers output never changes: compute it once (feature_cache).
        boundary = finetune_boundary(model, settings.unfreeze_blocks)
        finetune_pending = (not phases.get("finetune", {}).get("done")
                            and settings.finetune_epochs > 0 and not stopped)
        views = _finetune_views(settings, model, boundary, input_block, num_train, num_val) \
            if finetune_pending else 0
        bottom = frozen_bottom(model, boundary) if views else None
        run_bottom = inference_function(bottom) if views else None
        below: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def below_boundary(split, dataset):
            if split not in below:
                below[split] = run_over(run_bottom, dataset)
            return below[split]

        # Data check, model build, pipelines: from the call until training starts.
        timings["setup"] = round(time.perf_counter() - started, 2)
        callbacks: list = []
        # ---------------------------------------------------------------- phase 1: head
        if not phases.get("head", {}).get("done") and settings.head_epochs > 0 and not stopped:
            phase_start = time.perf_counter()
            freeze_backbone(model)
            if settings.cache_features:
                if verbose:
                    print(f"effnet_tl: computing frozen-backbone features once "
                          f"({num_train} train + {num_val} val images)", flush=True)
                if views:  # the head's input from the cached maps below the boundary
                    to_head = inference_function(feature_model(model, boundary)) \
                        if boundary else None
                    train_x, train_y = _above(to_head, below_boundary("train", plain_train),
                                              big_batch)
                    val_x, val_y = _above(to_head, below_boundary("val", val_ds), big_batch)
                else:
                    pooled = inference_function(frozen_bottom(model, None))
                    train_x, train_y = run_over(pooled, plain_train)
                    val_x, val_y = run_over(pooled, val_ds)
                trainee = head_model(model)
                train_data = (
                    tf.data.Dataset.from_tensor_slices((train_x, train_y))
                    .shuffle(len(train_x), seed=settings.seed, reshuffle_each_iteration=True)
                    .batch(settings.batch_size, drop_remainder=whole).prefetch(tf.data.AUTOTUNE)
                )
                val_data = batched((val_x, val_y), val_batch, drop_remainder=whole)
                timings["feature_extraction"] = round(time.perf_counter() - phase_start, 2)
            else:
                trainee = model
                train_data = _image_training_data(source.train, settings, pixel_action, placement,
                                                  epochs=settings.head_epochs, whole_batches=whole)
                val_data = val_ds.rebatch(val_batch, drop_remainder=whole)
            trainee.compile(
                optimizer=_optimizer(settings.head_lr, steps,
                                     settings.head_epochs, settings, weight_decay=settings.weight_decay),
                loss=target_loss(settings.label_smoothing), metrics=["accuracy"],
            )
            callbacks = _phase_callbacks(
                paths, phase="head", settings=settings,
                classifier=model if trainee is not model else None, tensorboard=tensorboard,
            )
            _announce_resume(callbacks, "head", verbose)
            trainee.fit(
                train_data, validation_data=val_data, epochs=settings.head_epochs,
                callbacks=callbacks, class_weight=settings.class_weight, verbose=verbose, shuffle=False,
            )
            stopped = summarize_stop(callbacks)
            epochs_done = _epochs_recorded(paths)
            _finish_phase(model, paths, phases, timings, "head", epochs=epochs_done,
                          started=phase_start, stopped=stopped)
        _restore_best(model, paths, callbacks)

        # ---------------------------------------------------------------- phase 2: fine-tune
        if finetune_pending and not stopped:
            phase_start = time.perf_counter()
            unfrozen = set_finetune_trainable(model, settings.unfreeze_blocks)
            if verbose:
                print(f"effnet_tl: fine-tuning {len(unfrozen)} backbone layers "
                      f"({unfrozen[0] if unfrozen else '-'} and above; BatchNorm frozen)"
                      + (f" on the cached output of the frozen layers below, for {views} "
                         f"view(s) of the training set (1 plain + {views - 1} augmented)"
                         if views else ""), flush=True)
            callbacks = _phase_callbacks(paths, phase="finetune", settings=settings,
                                         classifier=model if views else None,
                                         tensorboard=tensorboard)
            _announce_resume(callbacks, "finetune", verbose, offset=epochs_done)
            if views:
                trainee = head_model(model, boundary)
                view_data = [below_boundary("train", plain_train)] + [
                    run_over(run_bottom, _augmented_pass(source.train, settings, pixel_action, view))
                    for view in range(1, views)
                ]
                train_data = views_dataset(
                    view_data, batch_size=settings.batch_size, seed=settings.seed,
                    skip_epochs=max(0, callbacks[0].resume_epoch - epochs_done),
                    drop_remainder=whole)
                val_data = batched(below_boundary("val", val_ds), val_batch, drop_remainder=whole)
                timings["finetune_features"] = round(time.perf_counter() - phase_start, 2)
                phases["finetune_cache"] = {
                    "views": views, "boundary": boundary,
                    "feature_shape": list(bottom.output.shape[1:]),
                    "megabytes": round(sum(x.nbytes for x, _ in [*view_data, below["val"]]) / 2**20, 1),
                }
            else:
                trainee = model
                train_data = _image_training_data(source.train, settings, pixel_action, placement,
                                                  epochs=settings.finetune_epochs,
                                                  whole_batches=whole)
                val_data = val_ds.rebatch(val_batch, drop_remainder=whole)
            trainee.compile(
                optimizer=_optimizer(settings.finetune_lr, steps, settings.finetune_epochs,
                                     settings, weight_decay=settings.weight_decay),
                loss=target_loss(settings.label_smoothing), metrics=["accuracy"],
            )
            trainee.fit(
                train_data, validation_data=val_data, initial_epoch=epochs_done,
                epochs=epochs_done + settings.finetune_epochs, callbacks=callbacks,
                steps_per_epoch=steps if views else None,
                class_weight=settings.class_weight, verbose=verbose, shuffle=False,
            )
            below.clear()
            stopped = summarize_stop(callbacks)
            _finish_phase(model, paths, phases, timings, "finetune",
                          epochs=_epochs_recorded(paths) - epochs_done, started=phase_start,
                          stopped=stopped)
            _restore_best(model, paths, callbacks)

        if stopped and verbose:
            print(f"effnet_tl: training stopped early: {stopped['message']}", flush=True)

        # ---------------------------------------------------------------- report
        report_start = time.perf_counter()
        model.trainable = False  # inference only from here
        metrics: dict[str, Any] = {"class_names": list(class_names)}
        test_ds = None
        if source.test is not None:
            test_ds = _rescale(_make(source.test, settings, training=False, shuffle=False,
                                     batch_size=big_batch), pixel_action)
        predict = inference_function(model)
        metrics["val"], val_mistakes = _evaluate(predict, val_ds, class_names, top_k)
        metrics["test"], test_mistakes = (None, None)
        if test_ds is not None:
            metrics["test"], test_mistakes = _evaluate(predict, test_ds, class_names, top_k)
        metrics["stopped"] = stopped
        metrics["phase_seconds"] = timings
        metrics["epochs"] = {"head": phases.get("head", {}).get("epochs", 0),
                             "finetune": phases.get("finetune", {}).get("epochs", 0)}
        _plots(paths, metrics, test_mistakes or val_mistakes, class_names)
        timings["report"] = round(time.perf_counter() - report_start, 2)
        write_json(paths.report, metrics)

    return FitResult(
        model=model, class_names=class_names, metrics=metrics, paths=paths, config=config,
        history=read_history(paths.history), stopped=stopped,
    )


# --------------------------------------------------------------------------- helpers


def _check_arguments(given: dict, class_weight) -> None:
    for key in ("head_epochs", "finetune_epochs", "batch_size"):
        value = given[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0
                                  or (key == "batch_size" and value < 1)):
            raise ValueError(f"{key} must be a non-negative integer (batch_size >= 1). "
                             f"Received: {key}={value!r}")
    for key in ("head_lr", "finetune_lr"):
        value = given[key]
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{key} must be a number > 0. Received: {key}={value!r}")
    if not 0 <= given["warmup_fraction"] <= 1:
        raise ValueError(f"warmup_fraction must be in [0, 1]. Received: {given['warmup_fraction']!r}")
    views = given["finetune_views"]
    if views != AUTO and (isinstance(views, bool) or not isinstance(views, int) or views < 0):
        raise ValueError(f"finetune_views must be 'auto' or an integer >= 0 (0: no cache). "
                         f"Received: finetune_views={views!r}")
    if given["fix_pixel_range"] not in (True, False, "warn"):
        raise ValueError(f"fix_pixel_range must be True, False or 'warn'. "
                         f"Received: {given['fix_pixel_range']!r}")
    if not (class_weight in (AUTO, None) or isinstance(class_weight, dict)):
        raise ValueError(f"class_weight must be 'auto', None or a dict. Received: {class_weight!r}")
    get_variant(given["variant"])  # unknown variant: fail now


def _count(examples) -> int:
    if examples is None:
        return 0
    try:
        return len(examples)
    except TypeError:
        return 0


def _num_blocks(spec) -> int:
    from effnet_tl.models.efficientnet import scaled_stage_layout

    return len(scaled_stage_layout(spec))


def _resolve_class_weight(class_weight, source, scan_report, num_classes):
    if class_weight is None:
        return None
    if isinstance(class_weight, dict):
        return {int(k): float(v) for k, v in class_weight.items()}
    labels = _labels_of(source.train)
    if labels is None or not scan_report.imbalanced:
        return None
    from effnet_tl.data import class_weights

    return class_weights(labels, num_classes)


def _rounded(weights: dict) -> dict:
    return {k: round(v, 3) for k, v in weights.items()}


def _config_dict(settings, source, num_classes, class_names, dataset_dir, dist) -> dict:
    return {
        "settings": settings.to_dict(),
        "num_classes": num_classes,
        "class_names": list(class_names),
        "source": {
            "kind": source.kind,
            "dataset": str(dataset_dir) if isinstance(dataset_dir, (str, os.PathLike)) else
            type(dataset_dir).__name__,
            "num_train": _count(source.train),
            "num_val": _count(source.val),
            "num_test": _count(source.test),
            "notes": list(source.notes),
        },
        "strategy": type(dist).__name__,
        "replicas": dist.num_replicas_in_sync,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": sys.version.split()[0]},
    }


def _prepare_run_dir(paths: RunPaths, config: dict, *, overwrite: bool) -> None:
    previous = read_json(paths.config)
    if previous is not None and previous.get("settings") != config["settings"]:
        if not overwrite:
            changed = sorted(
                key for key in set(previous.get("settings", {})) | set(config["settings"])
                if previous.get("settings", {}).get(key) != config["settings"].get(key)
            )
            raise ValueError(
                f"{paths.root} holds a run with other settings (changed: {changed}); pass "
                "overwrite=True to start afresh, or another name/run_dir."
            )
    if previous is not None and (overwrite and previous.get("settings") != config["settings"]):
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True, exist_ok=True)
    write_json(paths.config, config)


def _epochs_recorded(paths: RunPaths) -> int:
    return max((row["epoch"] for row in read_history(paths.history)), default=-1) + 1


def _announce_resume(callbacks, phase, verbose, offset=0) -> None:
    backup = callbacks[0]
    epoch = getattr(backup, "resume_epoch", 0)
    if epoch and verbose:
        print(f"effnet_tl: resuming phase {phase!r} after epoch {epoch} (from {backup.backup_dir})",
              flush=True)


def _ensure_checkpoint(model, paths: RunPaths) -> None:
    # No epoch improved on the threshold (e.g. a NaN in the very first epoch): keep the
    # current (restored, last good) weights so the folder still holds a model.
    if not paths.model.exists():
        model.save(paths.model)


def _restore_best(model, paths: RunPaths, callbacks=()) -> None:
    """Put the best checkpoint's weights in ``model`` (unless a callback already did)."""
    if any(getattr(callback, "restored", False) for callback in callbacks):
        return
    if paths.model.exists():
        model.load_weights(paths.model)


def _evaluate(predict, dataset, class_names, top_k):
    """Predict a split once: the report dict and the most confident mistakes (images kept)."""
    from effnet_tl.report import classification_report

    labels, probabilities = [], []
    mistakes: list = []  # min-heap of (confidence, counter, image, true, probs)
    counter = 0
    for images, batch_labels in dataset:
        probs = predict(images).numpy().astype("float64")
        truth = batch_labels.numpy().argmax(axis=1)
        labels.append(truth)
        probabilities.append(probs)
        wrong = np.flatnonzero(probs.argmax(axis=1) != truth)
        for index in wrong:
            item = (float(probs[index].max()), counter, images[index].numpy(), int(truth[index]),
                    probs[index])
            counter += 1
            if len(mistakes) < 16:
                heapq.heappush(mistakes, item)
            else:
                heapq.heappushpop(mistakes, item)
    y_true = np.concatenate(labels) if labels else np.zeros(0, "int64")
    y_prob = np.concatenate(probabilities) if probabilities else np.zeros((0, len(class_names)))
    report = classification_report(y_true, y_prob, class_names, top_k=top_k)
    return report, sorted(mistakes, reverse=True)


def _plots(paths: RunPaths, metrics, mistakes, class_names) -> None:
    from effnet_tl.report import plot_confident_mistakes, plot_confusion_matrix, plot_history

    paths.plots.mkdir(parents=True, exist_ok=True)
    if paths.history.exists() and read_history(paths.history):
        plot_history(paths.history, paths.history_plot)
    split = metrics["test"] or metrics["val"]
    plot_confusion_matrix(split["confusion_matrix"], class_names, paths.confusion_plot)
    if mistakes:
        images = np.stack([m[2] for m in mistakes])
        y_true = np.array([m[3] for m in mistakes])
        y_prob = np.stack([m[4] for m in mistakes])
    else:
        size = (8, 8, 3)
        images, y_true, y_prob = np.zeros((0, *size)), np.zeros(0, "int64"), \
            np.zeros((0, len(class_names)))
    plot_confident_mistakes(images, y_true, y_prob, class_names, paths.mistakes_plot)
