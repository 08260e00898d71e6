"""What each training phase reads: image pipelines, or the cached output of frozen layers.

:class:`PhaseData` owns the datasets of one ``fit`` call:

* the un-augmented training and validation images (big inference batches), checked once for
  [0, 1] pixels (rescaled or warned about, as ``pixel_range`` says);
* for the head phase, the frozen backbone's output computed once (``cache_features``), or
  augmented images through the whole network;
* for fine-tuning, the output of the frozen layers below the unfrozen blocks for a few
  *views* of the training set (the plain images, then augmented copies; epoch ``e`` reads
  view ``e mod K``, see :mod:`effnet_tl.train.feature_cache`), or augmented images.

With several replicas every epoch trains and validates on whole global batches
(:func:`~effnet_tl.train.defaults.validation_batch_size` says why). With several workers
(:mod:`~effnet_tl.train.cluster`) each one reads, caches and trains on its own files only,
in per-replica batches, for the same number of steps as every other worker; the decisions and
the report still see the whole validation split.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from effnet_tl.augment import augment_dataset, augmentation_off
from effnet_tl.data import make_dataset
from effnet_tl.data.examples import known_count
from effnet_tl.train.cluster import Worker, shard_examples, steps_per_worker
from effnet_tl.train.defaults import (
    default_finetune_views,
    inference_batch_size,
    validation_batch_size,
)
from effnet_tl.train.feature_cache import (
    batched,
    inference_function,
    run_over,
    views_dataset,
    views_that_fit,
)
from effnet_tl.train.run import UNIT_RANGE_MESSAGE, looks_unit_range
from effnet_tl.train.surgery import feature_model, finetune_boundary, frozen_bottom, head_model

__all__ = ["PhaseData", "PhaseInputs", "finetune_views"]


@dataclasses.dataclass
class PhaseInputs:
    """The model a phase trains and its data (``steps``, ``val_steps``: per epoch, for the
    endless datasets made from files)."""

    trainee: keras.Model
    train: tf.data.Dataset
    val: tf.data.Dataset
    steps: int | None = None
    val_steps: int | None = None


def finetune_views(settings, model, boundary: str | None, *, num_train: int, num_val: int,
                   in_model_augment: bool = False, budget: int | None = None) -> int:
    """How many views of the training set fine-tuning caches below ``boundary`` (0: none).

    None when features are not cached at all, when the unfrozen part starts at the input
    (nothing frozen to skip), or when augmentation runs inside the model (the cached pass
    would miss it). Otherwise the requested views (``None``: half the epochs, at least 2),
    as many as fit ``budget`` (default: a quarter of free memory, at most 1 GiB); none when
    augmentation is on but only the plain view fits (one plain view would lose it).
    """
    recipe = settings.recipe
    if not recipe.cache_features or in_model_augment or boundary is None:
        return 0
    if boundary == model.get_layer("backbone").layers[1].name:
        return 0
    wanted = recipe.finetune_views
    if wanted is None:
        wanted = default_finetune_views(recipe.finetune_epochs)
    if augmentation_off(settings.data.augment):
        wanted = min(wanted, 1)  # un-augmented views are all the same
    shape = frozen_bottom(model, boundary).output.shape[1:]
    fits = views_that_fit(int(wanted), shape=shape, num_train=num_train, num_val=num_val,
                          budget=budget)
    return fits if fits >= min(int(wanted), 2) else 0


class PhaseData:
    """The datasets of one ``fit`` call, built inside the strategy's scope.

    Args:
        source: The doctored :class:`~effnet_tl.data.DatasetSource`.
        settings: Resolved :class:`~effnet_tl.train.settings.FitOptions`.
        model: The classifier (read only: where fine-tuning cuts it).
        replicas: Replicas in sync (several: whole global batches only).
        worker: This process's place among several workers: it trains on its own shard of
            the files (``Worker()``: one process reads everything).
        in_model_augment: Augmentation runs inside the model (accelerator placement); the
            cached passes would miss it, so fine-tuning trains on images.
        finetune_pending: Fine-tuning will run in this call (decides its cache up front, so
            the head phase can reuse the same frozen-layer pass when the boundary is known).
    """

    def __init__(self, source, settings, *, model, replicas: int, in_model_augment: bool,
                 finetune_pending: bool, worker: Worker = Worker()):
        self.source, self.settings = source, settings
        data = settings.data
        self.image_size = settings.model.image_size
        self.num_train, self.num_val = known_count(source.train), known_count(source.val)
        self.whole = replicas > 1
        self.batch_size = data.batch_size
        self.big_batch = inference_batch_size(data.batch_size, self.image_size)
        self.val_batch = validation_batch_size(data.batch_size, self.num_val, replicas)
        self.val_steps = self.num_val // self.val_batch if self.whole else \
            math.ceil(self.num_val / self.val_batch)
        self.steps = max(1, self.num_train // self.batch_size) if self.whole else \
            max(1, math.ceil(self.num_train / self.batch_size))
        # What this process's training datasets hold: everything in global batches, or (several
        # workers) its own files in per-replica batches, which the strategy gathers per step.
        self.sharded = worker.count > 1
        self.train_examples = shard_examples(source.train, worker)
        self.train_batch, self.epoch_val_batch = self.batch_size, self.val_batch
        if self.sharded:
            self.train_batch = self.batch_size // replicas
            self.epoch_val_batch = self.val_batch // replicas
            local_replicas = replicas // worker.count
            self.steps = steps_per_worker(num_examples=self.num_train, workers=worker.count,
                                          per_worker_batch=self.train_batch * local_replicas)
            self.val_steps = steps_per_worker(
                num_examples=self.num_val, workers=worker.count,
                per_worker_batch=self.epoch_val_batch * local_replicas)
        # The probe reads one batch of an uncached pipeline: a partly read cache is discarded
        # (with a TensorFlow warning) and would be filled again anyway.
        self.pixel_action = self._check_pixels(
            self._images(self.train_examples, training=False, cache=None))
        self.plain_train = self._rescaled(
            self._images(self.train_examples, training=False, batch_size=self.big_batch))
        # The whole validation split: the data's decisions and the report read it.
        self.val_images = self._rescaled(
            self._images(source.val, training=False, batch_size=self.big_batch))
        # What the per-epoch validation reads: this worker's share.
        self.epoch_val_images = self._rescaled(self._images(
            shard_examples(source.val, worker), training=False, batch_size=self.big_batch)) \
            if self.sharded else self.val_images
        self.in_model_augment = in_model_augment
        self._below: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_megabytes: float | None = None
        self.timings: dict[str, float] = {}  # seconds spent computing cached features
        self.retarget(settings, model, finetune_pending=finetune_pending)

    def retarget(self, settings, model, *, finetune_pending: bool = True) -> None:
        """Aim fine-tuning's cache at ``settings`` (e.g. once the data's decisions are known).

        Before ``unfreeze_blocks`` is decided there is no boundary: the head phase runs on
        the whole frozen backbone's output, and fine-tuning's cache is computed afterwards.
        """
        self.settings = settings
        unfreeze = settings.recipe.unfreeze_blocks
        self.boundary = None if unfreeze is None else finetune_boundary(model, unfreeze)
        self.views = finetune_views(settings, model, self.boundary, num_train=self.num_train,
                                    num_val=self.num_val, in_model_augment=self.in_model_augment) \
            if finetune_pending else 0
        self._bottom = frozen_bottom(model, self.boundary) if self.views else None
        self._run_bottom = inference_function(self._bottom) if self.views else None
        self._below.clear()

    # ------------------------------------------------------------------ image pipelines

    def _images(self, examples, *, training, batch_size=None, shuffle=False, seed=None,
                drop_remainder=False, cache="auto"):
        return make_dataset(
            examples, image_size=self.image_size, batch_size=batch_size or self.batch_size,
            training=training, shuffle=shuffle, resize=self.settings.data.resize,
            seed=self.settings.data.seed if seed is None else seed, cache=cache,
            drop_remainder=drop_remainder)

    def _check_pixels(self, dataset) -> str | None:
        """``"rescaled"``, ``"warned"`` or ``None``: what the [0, 1] pixel check did."""
        policy = self.settings.data.pixel_range
        if policy == "ignore":
            return None
        images, _ = next(iter(dataset.take(1)))
        if not looks_unit_range(images.numpy()):
            return None
        if policy == "warn":
            warnings.warn(UNIT_RANGE_MESSAGE.format(action="Pass images in [0, 255]."),
                          stacklevel=4)
            return "warned"
        warnings.warn(UNIT_RANGE_MESSAGE.format(
            action="Multiplying them by 255 (pixel_range='ignore' keeps them as they are)."),
            stacklevel=4)
        return "rescaled"

    def _rescaled(self, dataset):
        if self.pixel_action != "rescaled":
            return dataset
        return dataset.map(lambda x, y: (x * 255.0, y))

    def _augmented(self, dataset, *, images_read: int, seed: int, placement: str = "dataset"):
        augment = self.settings.data.augment
        if augmentation_off(augment):
            return dataset
        # XLA-compiling the fused augmentation costs 2-4 s once, then runs it 2-4x faster
        # (measured, 2 CPU cores: 1.6 ms/image saved at 224 px): worth it above ~1e8 pixels.
        pixels = images_read * self.image_size[0] * self.image_size[1]
        return augment_dataset(dataset, augment, seed=seed, placement=placement,
                               jit_compile=pixels >= 1e8)

    def validation_images(self):
        """Per-epoch validation on images: endless, ``self.val_steps`` batches an epoch."""
        return self.epoch_val_images.rebatch(self.epoch_val_batch,
                                             drop_remainder=self.whole).repeat()

    def evaluation_images(self, examples):
        """Un-augmented, centre-cropped batches of another split (the report's test set)."""
        return self._rescaled(self._images(examples, training=False, batch_size=self.big_batch))

    def training_images(self, *, epochs: int, placement: str):
        """Shuffled, augmented training images for a phase that runs the whole network.

        Endless (fit with ``steps_per_epoch=self.steps``): the file pipeline's cardinality is
        unknown (it skips a file that fails to decode rather than stopping the epoch), and
        Keras warns "ran out of data" at the end of the first epoch of such a dataset.
        """
        images = self._rescaled(self._images(self.train_examples, training=True, shuffle=True,
                                             batch_size=self.train_batch,
                                             drop_remainder=self.whole))
        return self._augmented(images, images_read=self.num_train * epochs,
                               seed=self.settings.data.seed, placement=placement).repeat()

    def _augmented_pass(self, view: int):
        """The training set once, in order, augmented with view ``view``'s own seed."""
        seed = self.settings.data.seed + view
        images = self._images(self.train_examples, training=True, batch_size=self.big_batch,
                              seed=seed)
        return self._augmented(self._rescaled(images), images_read=self.num_train, seed=seed)

    # ------------------------------------------------------------------ feature cache

    def _below_boundary(self, split: str):
        if split not in self._below:
            dataset = self.plain_train if split == "train" else self.epoch_val_images
            self._below[split] = run_over(self._run_bottom, dataset)
        return self._below[split]

    def cache_summary(self) -> dict | None:
        """For ``phases.json``: the fine-tuning cache's views, boundary and size."""
        if self._cache_megabytes is None:
            return None
        return {"views": self.views, "boundary": self.boundary,
                "feature_shape": list(self._bottom.output.shape[1:]),
                "megabytes": self._cache_megabytes}

    def release(self) -> None:
        """Free the cached arrays (they can be a large share of memory)."""
        self._below.clear()

    # ------------------------------------------------------------------ per phase

    def head(self, model, *, placement: str) -> PhaseInputs:
        """The head phase: cached backbone output, or augmented images through the model."""
        if not self.settings.recipe.cache_features:
            return PhaseInputs(model, self.training_images(
                epochs=self.settings.recipe.head_epochs, placement=placement),
                self.validation_images(), self.steps, self.val_steps)
        started = time.perf_counter()
        if self.views:  # reuse the fine-tuning cache: the head's input from the cached maps
            to_head = inference_function(feature_model(model, self.boundary))
            train = run_over(to_head, batched(self._below_boundary("train"), self.big_batch))
            val = run_over(to_head, batched(self._below_boundary("val"), self.big_batch))
        else:
            pooled = inference_function(frozen_bottom(model, None))
            train = run_over(pooled, self.plain_train)
            val = run_over(pooled, self.epoch_val_images)
        self.timings["feature_extraction"] = round(time.perf_counter() - started, 2)
        seed = self.settings.data.seed
        train_data = (tf.data.Dataset.from_tensor_slices(train)
                      .shuffle(len(train[0]), seed=seed, reshuffle_each_iteration=True)
                      .batch(self.train_batch, drop_remainder=self.whole))
        val_data = batched(val, self.epoch_val_batch, drop_remainder=self.whole)
        if self.sharded:  # every worker runs the same steps: endless, counted epochs
            return PhaseInputs(head_model(model), train_data.repeat().prefetch(tf.data.AUTOTUNE),
                               val_data.repeat(), self.steps, self.val_steps)
        return PhaseInputs(head_model(model), train_data.prefetch(tf.data.AUTOTUNE), val_data)

    def finetune(self, model, *, placement: str, epochs_trained: int) -> PhaseInputs:
        """Fine-tuning: cached views below the boundary, or augmented images.

        ``epochs_trained``: epochs of this phase a killed run already finished (the views
        continue where it was).
        """
        if not self.views:
            return PhaseInputs(model, self.training_images(
                epochs=self.settings.recipe.finetune_epochs, placement=placement),
                self.validation_images(), self.steps, self.val_steps)
        started = time.perf_counter()
        views = [self._below_boundary("train")] + [
            run_over(self._run_bottom, self._augmented_pass(view)) for view in range(1, self.views)]
        train = views_dataset(views, batch_size=self.train_batch, seed=self.settings.data.seed,
                              skip_epochs=epochs_trained, drop_remainder=self.whole,
                              steps=self.steps if self.sharded else None)
        cached_val = self._below_boundary("val")
        self.timings["finetune_features"] = round(time.perf_counter() - started, 2)
        self._cache_megabytes = round(sum(x.nbytes for x, _ in [*views, cached_val]) / 2**20, 1)
        val = batched(cached_val, self.epoch_val_batch, drop_remainder=self.whole)
        if self.sharded:
            return PhaseInputs(head_model(model, self.boundary), train, val.repeat(),
                               self.steps, self.val_steps)
        return PhaseInputs(head_model(model, self.boundary), train, val, steps=self.steps)
