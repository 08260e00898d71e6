"""tf.data input pipeline: parallel decode, resize policy, cache, shuffle, one-hot, prefetch.

This module assembles the pipeline (:func:`make_dataset`) and the evaluation views built on it
(:func:`to_memory`, :func:`read_eval_images`); the per-image decode, crop and resize live in
:mod:`effnet_tl.data.transforms` and the cache choice in :mod:`effnet_tl.data.cache`, whose
public names (``RESIZE_POLICIES``, :func:`eval_resize`, :func:`available_memory`) are importable
from here too.

Files the doctor marked ``"jpeg"``/``"png"`` are decoded by TensorFlow's own op (one
``decode_image`` per file, centre-crop windows precomputed from the doctor's sizes); the few
that need conversion go through Pillow (:func:`effnet_tl.data.imagefile.decode_rgb`). Only files
the doctor accepted are fed, so an epoch never stops on a bad file.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from effnet_tl.data.cache import _cache, _cache_kind, _shuffle_cached, available_memory
from effnet_tl.data.examples import ArrayExamples, DatasetExamples, DatasetSource, FileExamples
from effnet_tl.data.transforms import (
    _DECODER_IDS,
    RESIZE_POLICIES,
    _center_windows,
    _eval_policy,
    _file_decoder,
    _policy,
    _tensor_transform,
    eval_resize,
)
from effnet_tl.sizes import image_size_pair

__all__ = [
    "RESIZE_POLICIES",
    "available_memory",
    "eval_resize",
    "make_dataset",
    "read_eval_images",
    "to_memory",
]

logger = logging.getLogger(__name__)


def make_dataset(
    examples,
    *,
    image_size: int | Sequence[int],
    batch_size: int,
    training: bool,
    resize: str = "crop",
    seed: int = 0,
    cache: bool | str | None = "auto",
    shuffle: bool | None = None,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = False,
    crop_area_range: tuple[float, float] = (0.08, 1.0),
    crop_aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
    memory_budget_bytes: int | None = None,
    jpeg_dct_scaling: bool = True,
):
    """Build a batched ``tf.data.Dataset`` of ``(images, one_hot_labels)``.

    Images are float32 ``(B, H, W, 3)`` with integer values in [0, 255], as Keras EfficientNet
    models expect (they rescale inside); labels are float32 one-hot ``(B, num_classes)``.

    Args:
        examples: :class:`FileExamples` (checked by the doctor, or checked here), ``ArrayExamples``,
            ``DatasetExamples`` (e.g. from :func:`from_tfrecords` or tfds), or a
            :class:`DatasetSource` (its train split).
        image_size: output size, ``224`` or ``(height, width)``.
        batch_size: examples per batch.
        training: shuffle, and take random-resized crops with ``resize="crop"``.
        resize: ``"crop"`` (random-resized crop when training, else the largest centred crop of
            the output's aspect ratio), ``"center_crop"``, ``"random_crop"``, ``"pad"`` (keep the
            aspect ratio, pad with black) or ``"stretch"``.
        seed: seeds the shuffle and the crops; the same seed gives the same batches.
        cache: ``"auto"`` (in memory when the cached data fits ``memory_budget_bytes``, else a
            disk cache in a temporary folder), ``"memory"``, ``"disk"``, a file path prefix for a
            disk cache, or ``None``/``False``. Deterministic policies cache resized uint8 images;
            random crops cache the encoded file bytes. A temporary folder (``"auto"``,
            ``"disk"``) is removed once the dataset is garbage-collected (at the latest when
            Python exits); a path prefix you give is yours to keep or delete.
        shuffle: defaults to ``training``.
        shuffle_buffer: buffer for shuffling decoded data; default: everything for a memory
            cache or arrays, 2,048 for a disk cache, 1,024 for a stream (file lists without a
            cache are always shuffled whole, before reading).
        drop_remainder: drop the last partial batch: static shapes for TPUs.
        crop_area_range, crop_aspect_range: random-resized crop ranges (fraction of the image
            area; width/height).
        memory_budget_bytes: the most ``cache="auto"`` keeps in memory (default: a quarter of
            the memory available now).
        jpeg_dct_scaling: decode JPEGs at 1/2, 1/4 or 1/8 scale inside libjpeg when the region
            used is still at least ``image_size`` after it (phone photos to 224 px: several
            times faster, and a better-filtered downscale than bilinear resizing alone).

    Returns:
        A prefetched ``tf.data.Dataset``.

    Example:
        >>> import numpy as np
        >>> from effnet_tl.data.sources import ArrayExamples
        >>> ex = ArrayExamples(np.full((5, 10, 20, 3), 200, np.uint8), [0, 1, 0, 1, 1], ("a", "b"))
        >>> ds = make_dataset(ex, image_size=8, batch_size=4, training=False)
        >>> images, labels = next(iter(ds))
        >>> images.shape, float(images[0, 0, 0, 0]), labels.numpy()[1].tolist()
        (TensorShape([4, 8, 8, 3]), 200.0, [0.0, 1.0])
    """
    import tensorflow as tf

    if isinstance(examples, DatasetSource):
        examples = examples.train
    height, width = image_size_pair(image_size)
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    policy = _policy(resize, training)
    shuffle = training if shuffle is None else shuffle
    num_classes = examples.num_classes

    def to_model_inputs(image, label):
        image = tf.cast(image, tf.float32)
        if label.shape.rank == 0:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, tf.cast(label, tf.float32)

    dataset, cached = _image_dataset(
        examples,
        height,
        width,
        policy,
        seed,
        shuffle,
        cache,
        shuffle_buffer,
        crop_area_range,
        crop_aspect_range,
        memory_budget_bytes,
        jpeg_dct_scaling,
        to_model_inputs,
    )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def to_memory(
    examples, *, image_size: int | Sequence[int], resize: str = "center_crop"
) -> ArrayExamples:
    """Decode and resize every example into one uint8 array: a TPU-safe in-memory dataset.

    Use the result with :func:`make_dataset` (``drop_remainder=True`` on a TPU): a dataset built
    from arrays needs no file system on the accelerator host.

    Example:
        >>> import numpy as np
        >>> from effnet_tl.data.sources import ArrayExamples
        >>> mem = to_memory(ArrayExamples(np.zeros((3, 9, 9, 1), np.uint8), [0, 1, 1], ("a", "b")),
        ...                 image_size=4, resize="stretch")
        >>> mem.images.shape, mem.images.dtype.name, mem.labels.tolist()
        ((3, 4, 4, 3), 'uint8', [0, 1, 1])
    """
    import tensorflow as tf

    height, width = image_size_pair(image_size)
    policy = _policy(resize, training=False)
    dataset = _evaluation_images(examples, height, width, policy,
                                 lambda image, label: (image, label))
    images, labels = [], []
    for image_batch, label_batch in dataset.batch(256):
        rounded = tf.floor(tf.cast(image_batch, tf.float32) + 0.5)  # as a cache rounds
        images.append(tf.cast(tf.clip_by_value(rounded, 0, 255), tf.uint8).numpy())
        label_batch = label_batch.numpy()
        labels.append(label_batch.argmax(-1) if label_batch.ndim == 2 else label_batch)
    if not images:
        return ArrayExamples(np.zeros((0, height, width, 3), np.uint8), [], examples.class_names)
    return ArrayExamples(np.concatenate(images), np.concatenate(labels), examples.class_names)


def read_eval_images(
    paths: Sequence[str | os.PathLike],
    image_size: int | Sequence[int],
    *,
    resize: str = "center_crop",
) -> np.ndarray:
    """Decode, crop and resize image files exactly as the evaluation pipeline does.

    The files go through the doctor (the same decoder choice, EXIF rotation, conversions) and
    the pipeline's own file decoder (TensorFlow's JPEG/PNG decoders, DCT-scaled decoding of large
    JPEGs, the same crop window): the pixels ``make_dataset(files, training=False,
    resize=resize, cache=None)`` yields, in the order given.

    Args:
        paths: image files.
        image_size: output size, ``224`` or ``(height, width)``.
        resize: an evaluation policy, as for :func:`eval_resize`.

    Returns:
        float32 ``(len(paths), height, width, 3)``.

    Raises:
        ValueError: a file is not a usable image (each is listed with the doctor's reason).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
        >>> Image.new("RGB", (30, 20), (255, 0, 0)).save(path)
        >>> images = read_eval_images([path], 8)
        >>> images.shape, images[0, 4, 4].tolist()
        ((1, 8, 8, 3), [255.0, 0.0, 0.0])
    """
    import tensorflow as tf

    from effnet_tl.data.doctor import check_examples

    height, width = image_size_pair(image_size)
    paths = tuple(os.fspath(p) for p in paths)
    if not paths:
        return np.zeros((0, height, width, 3), np.float32)
    examples = FileExamples(paths, np.zeros(len(paths), np.int64), ("?",))
    checked, skipped = check_examples(examples)
    if skipped:
        listed = "; ".join(f"{issue.path}: {issue.reason}" for issue in skipped)
        raise ValueError(f"{len(skipped)} of {len(paths)} files are not usable images: {listed}")
    dataset = _evaluation_images(checked, height, width, _eval_policy(resize),
                                 lambda image, label: (tf.cast(image, tf.float32), label))
    images = [batch.numpy() for batch, _ in dataset.batch(64)]
    out = np.concatenate(images) if images else np.zeros((0, height, width, 3), np.float32)
    if len(out) != len(paths):
        raise ValueError(
            f"TensorFlow could not decode {len(paths) - len(out)} of {len(paths)} files that "
            f"the doctor accepted: {list(paths)}"
        )
    return out


# ----------------------------------------------------------------------------- internals


def _evaluation_images(examples, height, width, policy, to_outputs):
    """Unbatched, in order, uncached, no random crop: what evaluation and prediction read."""
    dataset, _ = _image_dataset(examples, height, width, policy, 0, False, None, None,
                                (0.08, 1.0), (0.75, 4 / 3), None, True, to_outputs)
    return dataset


def _image_dataset(
    examples,
    height,
    width,
    policy,
    seed,
    shuffle,
    cache,
    shuffle_buffer,
    area_range,
    aspect_range,
    memory_budget,
    dct_scaling,
    to_model_inputs,
):
    """Unbatched (float32 image (H, W, 3), one-hot label); returns (dataset, cache kind).

    ``to_model_inputs`` (cast to float32, one-hot) is fused into the last map stage: a separate
    map stage of its own measured 35% slower on 2 cores (tf.data splits the cores between them).
    """
    import tensorflow as tf

    random_crop = policy == "random_crop"
    if isinstance(examples, FileExamples):
        if not examples.checked:
            from effnet_tl.data.doctor import check_examples

            examples, skipped = check_examples(examples)
            if skipped:
                listed = "; ".join(f"{i.path}: {i.kind}" for i in skipped[:10])
                logger.warning(
                    "skipping %d bad files (run scan() for the report): %s", len(skipped), listed
                )
        n = len(examples)
        decoder_ids = np.asarray([_DECODER_IDS[d] for d in examples.decoders], np.int32)
        needs_pillow = bool((decoder_ids == 2).any())
        # Per-file geometry known from the doctor: centre-crop windows are computed here in
        # numpy, sparing every element a handful of graph ops.
        if policy == "center_crop" and examples.sizes is not None:
            geometry = _center_windows(examples.sizes, height, width)
        elif examples.sizes is not None:
            geometry = examples.sizes.astype(np.int32)
        else:
            geometry = np.full((n, 2), -1, np.int32)  # unknown: read from the decoded image
        dataset = tf.data.Dataset.from_tensor_slices(
            (
                list(examples.paths) or tf.zeros([0], tf.string),
                examples.labels,
                decoder_ids,
                geometry,
            )
        )
        cache_kind = _cache_kind(cache, examples, height, width, random_crop, memory_budget)
        if shuffle and cache_kind is None:
            # Shuffle the file list, not decoded images: a full-size buffer costs a few bytes each.
            dataset = dataset.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
        only_jpeg = bool((decoder_ids == 0).all())
        # DCT scaling needs every file a JPEG of known size, and pays only when some file is at
        # least twice the output size (a crop is never larger than its image).
        scalable = (
            dct_scaling
            and only_jpeg
            and examples.sizes is not None
            and n > 0
            and bool(
                ((examples.sizes[:, 0] // height >= 2) & (examples.sizes[:, 1] // width >= 2)).any()
            )
        )
        decode = _file_decoder(
            height,
            width,
            policy,
            area_range,
            aspect_range,
            needs_pillow,
            # A cache holds uint8 (a quarter of the bytes); uncached images skip the rounding,
            # which measured ~25% of the per-image cost on 2 cores.
            quantize=cache_kind is not None and not random_crop,
            only_jpeg=only_jpeg,
            dct_scaling=scalable,
        )
        decode_to_inputs = lambda *args: to_model_inputs(*decode(*args))  # noqa: E731
        if random_crop and cache_kind is not None:
            # Random crops change every epoch: cache the file bytes, crop after the cache.
            read = lambda path, *rest: (tf.io.read_file(path), *rest)  # noqa: E731
            dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)
            dataset = _cache(dataset, cache_kind)
            dataset = _shuffle_cached(dataset, shuffle, cache_kind, n, shuffle_buffer, seed)
            dataset = _with_seeds(dataset, seed)
            dataset = dataset.map(decode_to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
            dataset = dataset.ignore_errors(log_warning=True)
        elif random_crop:
            # One map stage: read, decode and crop together.
            dataset = _with_seeds(dataset, seed).map(
                lambda path, *rest: decode_to_inputs(tf.io.read_file(path), *rest),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            dataset = dataset.ignore_errors(log_warning=True)
        elif cache_kind is None:
            dataset = dataset.map(
                lambda path, *rest: decode_to_inputs(tf.io.read_file(path), *rest),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            # Last resort: a file that passed the doctor but fails TensorFlow's decoder is logged
            # and skipped, never an exception halfway through an epoch.
            dataset = dataset.ignore_errors(log_warning=True)
        else:
            # The cache keeps resized uint8 images; floats are made after it, per epoch.
            dataset = dataset.map(
                lambda path, *rest: decode(tf.io.read_file(path), *rest),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            dataset = dataset.ignore_errors(log_warning=True)
            dataset = _cache(dataset, cache_kind)
            dataset = _shuffle_cached(dataset, shuffle, cache_kind, n, shuffle_buffer, seed)
            dataset = dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset, cache_kind

    if isinstance(examples, ArrayExamples):
        dataset = tf.data.Dataset.from_tensor_slices((examples.images, examples.labels))
        n = len(examples)
        if shuffle:
            dataset = dataset.shuffle(max(1, min(n, shuffle_buffer or n)), seed=seed)
    elif isinstance(examples, DatasetExamples):
        dataset = examples.dataset
        n = examples.num_examples
        if shuffle:
            # Streams hold decoded, full-size images: keep the buffer modest.
            dataset = dataset.shuffle(shuffle_buffer or min(n or 1024, 1024), seed=seed)
    else:
        raise TypeError(
            f"make_dataset needs FileExamples, ArrayExamples or DatasetExamples, got "
            f"{type(examples).__name__}"
        )
    transform = _tensor_transform(height, width, policy, area_range, aspect_range)
    if random_crop:
        dataset = _with_seeds(dataset, seed)
        dataset = dataset.map(
            lambda i, l, seed: to_model_inputs(*transform(i, l, seed)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(
            lambda i, l: to_model_inputs(*transform(i, l, None)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset, None


def _with_seeds(dataset, seed):
    """Attach a stateless seed to each element: crops differ per epoch yet repeat per seed."""
    import tensorflow as tf

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(lambda element, s: (*element, s))
