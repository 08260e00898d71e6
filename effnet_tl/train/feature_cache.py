"""Outputs of a classifier's frozen layers, computed once and trained on for many epochs.

A frozen layer (BatchNorm in inference mode) gives the same output for the same image every
epoch, and no gradient reaches it. So :func:`effnet_tl.fit` runs the frozen part once:

* head phase: the whole backbone is frozen; the head trains on its pooled output for the
  un-augmented training images.
* fine-tuning: the blocks from :func:`~effnet_tl.classifier.finetune_boundary` up train; the
  layers below run once per *view* of the training set (view 0: the un-augmented images,
  views 1..K-1: augmented copies, each with its own seed) and epoch ``e`` of the phase trains
  on view ``e mod K``. An epoch then costs the unfrozen top's forward and backward pass only.

With K equal to the number of epochs every epoch reads its own copy, as uncached training
does (one copy un-augmented, and the frozen layers' stochastic depth off, as at inference);
smaller K trades augmentation variety for time.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> views = [(np.full((3, 2), v, "float32"), np.eye(3, dtype="float32")) for v in (0, 1)]
    >>> ds = views_dataset(views, batch_size=3, seed=0)
    >>> [float(x[0, 0]) for x, _ in ds.take(4)]  # epoch e reads view e mod 2
    [0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from effnet_tl.data.pipeline import available_memory

__all__ = [
    "CACHE_LIMIT_BYTES",
    "batched",
    "feature_bytes",
    "inference_function",
    "run_over",
    "views_dataset",
    "views_that_fit",
]

#: In-memory feature arrays become constants of the tf.data graph, which must stay far below
#: protobuf's 2 GiB; above this a phase trains on images instead.
CACHE_LIMIT_BYTES = 2**30


def inference_function(model):
    """``model(x, training=False)`` as a ``tf.function`` traced once for every batch size.

    Build it once per model and pass it to :func:`run_over` for every dataset: each new
    trace of a backbone costs about a second.
    """
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def run_over(function, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(function(images), labels)`` over a dataset of ``(images, labels)``, in order.

    ``function`` comes from :func:`inference_function`.
    """
    dtype = function.input_signature[0].dtype
    outputs, labels = [], []
    for images, batch_labels in dataset:
        # float32 whatever the policy: the next model's Input is float32 (mixed precision
        # casts again inside), and feature_bytes counts 4 bytes per value.
        outputs.append(function(tf.cast(images, dtype)).numpy().astype(np.float32, copy=False))
        labels.append(batch_labels.numpy())
    if not outputs:
        raise ValueError("run_over got an empty dataset")
    return np.concatenate(outputs), np.concatenate(labels)


def batched(arrays: tuple[np.ndarray, np.ndarray], batch_size: int, *,
            drop_remainder: bool = False) -> tf.data.Dataset:
    """In-memory ``(x, y)`` arrays as an unshuffled batched dataset (for evaluation)."""
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=drop_remainder)


def views_dataset(views, *, batch_size: int, seed: int, skip_epochs: int = 0,
                  drop_remainder: bool = False, steps: int | None = None) -> tf.data.Dataset:
    """An endless dataset whose epoch ``e`` is view ``e mod len(views)``, reshuffled each time.

    Fit it with ``steps_per_epoch = ceil(len(view) / batch_size)`` (``floor`` with
    ``drop_remainder``); no batch mixes two views.

    Args:
        views: ``[(features, labels), ...]``, each covering the training set once.
        batch_size: Examples per batch.
        seed: Shuffle seed (view ``k`` shuffles with ``seed + k``).
        skip_epochs: Epochs already trained (a resumed run continues with the right view).
        drop_remainder: Whole batches only (several replicas); reshuffling leaves out other
            examples each epoch.
        steps: Batches per epoch when every view must give exactly that many (several
            workers, whose shards differ by an image, run equal epochs); default: all.
    """
    sizes = {len(x) for x, _ in views}
    if len(sizes) != 1:
        raise ValueError(f"every view must hold the same examples; sizes: {sorted(sizes)}")
    size = sizes.pop()
    if drop_remainder and size < batch_size:
        raise ValueError(f"drop_remainder with {size} examples per view and batch_size="
                         f"{batch_size} leaves no batch")
    datasets = [
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed + k, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=drop_remainder)
        .take(-1 if steps is None else steps)
        for k, (x, y) in enumerate(views)
    ]
    dataset = functools.reduce(tf.data.Dataset.concatenate, datasets).repeat()
    if skip_epochs:
        if steps is None:
            steps = size // batch_size if drop_remainder else math.ceil(size / batch_size)
        dataset = dataset.skip(skip_epochs * steps)
    return dataset.prefetch(tf.data.AUTOTUNE)


def feature_bytes(shape, count: int) -> int:
    """Bytes of ``count`` float32 feature arrays of ``shape`` (batch dimension excluded)."""
    return 4 * count * math.prod(int(d) for d in shape)


def views_that_fit(wanted: int, *, shape, num_train: int, num_val: int,
                   budget: int | None = None) -> int:
    """The most views (≤ ``wanted``) whose features, with the validation set's, fit ``budget``.

    ``budget`` defaults to a quarter of the memory available now, at most
    :data:`CACHE_LIMIT_BYTES`. 0 means not even one view fits: train on images.

    Example:
        >>> views_that_fit(4, shape=(4, 4, 112), num_train=1000, num_val=100, budget=2**23)
        1
    """
    if budget is None:
        budget = min(CACHE_LIMIT_BYTES, available_memory() // 4)
    per_view = feature_bytes(shape, num_train)
    room = budget - feature_bytes(shape, num_val)
    return max(0, min(wanted, room // per_view if per_view else wanted))
