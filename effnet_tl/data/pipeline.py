"""tf.data input pipeline: parallel decode, resize policy, cache, shuffle, one-hot, prefetch.

Files the doctor marked ``"jpeg"``/``"png"`` are decoded by TensorFlow's own op (one
``decode_image`` per file, centre-crop windows precomputed from the doctor's sizes); the few
that need conversion go through Pillow (:func:`effnet_tl.data.imagefile.decode_rgb`). Only files
the doctor accepted are fed, so an epoch never stops on a bad file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from typing import Sequence

import numpy as np

from effnet_tl.data.imagefile import decode_rgb
from effnet_tl.data.sources import ArrayExamples, DatasetExamples, DatasetSource, FileExamples
from effnet_tl.sizes import image_size_pair

logger = logging.getLogger(__name__)

RESIZE_POLICIES = ("crop", "center_crop", "random_crop", "pad", "stretch")
_DECODER_IDS = {"jpeg": 0, "png": 1, "pillow": 2}


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


def eval_resize(
    image, image_size: int | Sequence[int], *, resize: str = "center_crop"
) -> np.ndarray:
    """Crop and resize ONE decoded image exactly as the evaluation pipeline does.

    The same code as ``make_dataset(ArrayExamples(...), training=False, resize=resize)``: gray
    becomes RGB, alpha is dropped, the window is the largest centred one of the output's aspect
    ratio (``"center_crop"``, ``"crop"``), then bilinear resizing. Prediction calls it, so a
    model sees at inference exactly the pixels it was validated on.

    Args:
        image: ``(H, W)`` or ``(H, W, 1|3|4)`` pixels in [0, 255] (uint8 or float).
        image_size: output size, ``224`` or ``(height, width)``.
        resize: an evaluation policy: ``"center_crop"`` (or ``"crop"``), ``"pad"`` or
            ``"stretch"``; ``"random_crop"`` evaluates with the centre crop.

    Returns:
        float32 ``(height, width, 3)``, not rounded (a cached pipeline also rounds to uint8).

    Example:
        >>> wide = np.zeros((4, 8), np.uint8); wide[:, 2:6] = 255   # the centre 4x4 is white
        >>> out = eval_resize(wide, 2)
        >>> out.shape, out.dtype.name, float(out.min())
        ((2, 2, 3), 'float32', 255.0)
    """
    import tensorflow as tf

    height, width = image_size_pair(image_size)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"eval_resize needs one image (H, W[, 1|3|4]); got shape {array.shape}")
    transform = _tensor_transform(height, width, _eval_policy(resize), (0.08, 1.0), (0.75, 4 / 3))
    return transform(tf.convert_to_tensor(array), 0)[0].numpy()


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


def _eval_policy(resize: str) -> str:
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    # Inference never crops at random: the evaluation view of every crop policy is the centre.
    return "center_crop" if resize in ("crop", "random_crop") else resize


def _policy(resize: str, training: bool) -> str:
    if resize == "crop":
        return "random_crop" if training else "center_crop"
    return resize


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


def _cache_kind(cache, examples, height, width, random_crop, memory_budget):
    if cache in (None, False):
        return None
    if cache is True or cache == "memory":
        return "memory"
    if cache == "disk":
        return _TemporaryCache()
    if cache != "auto":
        return os.fspath(cache)  # a disk cache file prefix
    if random_crop:
        size = sum(_file_size(p) for p in examples.paths)
    else:
        size = len(examples) * height * width * 3
    budget = memory_budget if memory_budget is not None else available_memory() // 4
    if size <= budget:
        return "memory"
    return _TemporaryCache()


class _TemporaryCache(str):
    """A disk-cache file prefix inside a folder of our own, removed with the dataset using it."""

    def __new__(cls):
        folder = tempfile.mkdtemp(prefix="effnet_tl_cache_")
        path = super().__new__(cls, os.path.join(folder, "cache"))
        path.folder = folder
        return path


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def available_memory() -> int:
    """Bytes of physical memory free now (1 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 2**30


def _cache(dataset, cache_kind):
    if cache_kind is None:
        return dataset
    cached = dataset.cache("" if cache_kind == "memory" else str(cache_kind))
    if isinstance(cache_kind, _TemporaryCache):
        # Every later stage and every iterator holds a reference to this dataset object, so
        # the folder goes exactly when nothing can read the cache any more.
        weakref.finalize(cached, shutil.rmtree, cache_kind.folder, ignore_errors=True)
    return cached


def _shuffle_cached(dataset, shuffle, cache_kind, n, shuffle_buffer, seed):
    if not shuffle or cache_kind is None:
        return dataset
    default = n if cache_kind == "memory" else min(n, 2048)
    return dataset.shuffle(
        max(1, shuffle_buffer or default), seed=seed, reshuffle_each_iteration=True
    )


def _crop_window(shape_hw, policy, height, width, seed, area_range, aspect_range):
    """[y, x, h, w] of the crop to take from an image of size ``shape_hw``."""
    import tensorflow as tf

    shape_hw = tf.cast(shape_hw, tf.int32)
    if policy == "random_crop":
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.concat([shape_hw, [3]], 0),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            min_object_covered=area_range[0],
            aspect_ratio_range=aspect_range,
            area_range=area_range,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return tf.stack([begin[0], begin[1], size[0], size[1]])
    # Largest centred window with the output's aspect ratio.
    h = tf.cast(shape_hw[0], tf.float64)
    w = tf.cast(shape_hw[1], tf.float64)
    target = width / height
    crop_h = tf.where(w / h > target, h, w / target)
    crop_w = tf.where(w / h > target, h * target, w)
    # Round half up, as _center_windows does (tf.round would round half to even).
    crop_h = tf.clip_by_value(tf.cast(tf.floor(crop_h + 0.5), tf.int32), 1, shape_hw[0])
    crop_w = tf.clip_by_value(tf.cast(tf.floor(crop_w + 0.5), tf.int32), 1, shape_hw[1])
    return tf.stack([(shape_hw[0] - crop_h) // 2, (shape_hw[1] - crop_w) // 2, crop_h, crop_w])


def _resize(image, height, width, policy):
    import tensorflow as tf

    if policy == "pad":
        resized = tf.image.resize_with_pad(image, height, width)
    else:
        resized = tf.image.resize(image, (height, width))
    return tf.ensure_shape(resized, (height, width, 3))


def _center_windows(sizes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[y, x, h, w] of the largest centred window with the output's aspect ratio, per image."""
    sizes = np.asarray(sizes, np.int64)
    h, w = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
    target = width / height
    wider = w / h > target
    crop_h = np.clip(np.floor(np.where(wider, h, w / target) + 0.5), 1, h).astype(np.int64)
    crop_w = np.clip(np.floor(np.where(wider, h * target, w) + 0.5), 1, w).astype(np.int64)
    windows = np.stack(
        [(sizes[:, 0] - crop_h) // 2, (sizes[:, 1] - crop_w) // 2, crop_h, crop_w], 1
    )
    return windows.astype(np.int32).reshape(-1, 4)


def _file_decoder(
    height, width, policy, area_range, aspect_range, needs_pillow, quantize, only_jpeg, dct_scaling
):
    """Map function: (bytes, label, decoder id, geometry[, seed]) -> (image (H, W, 3), label).

    ``geometry`` is a precomputed centre-crop window [y, x, h, w], or the image's (h, w), or
    (-1, -1) when unknown.
    """
    import tensorflow as tf

    cropping = policy in ("center_crop", "random_crop")

    def window_of(shape_hw, geometry, seed):
        if policy == "center_crop" and geometry.shape[0] == 4:
            return geometry
        if cropping:
            return _crop_window(shape_hw, policy, height, width, seed, area_range, aspect_range)
        return tf.concat([[0, 0], shape_hw], 0)

    def take(image, window):
        return tf.slice(image, tf.concat([window[:2], [0]], 0), tf.concat([window[2:], [3]], 0))

    def scaled_jpeg(data, window):
        # The largest libjpeg scale 1/r that keeps the window at least the output size.
        fits = tf.minimum(window[2] // height, window[3] // width)
        index = tf.add_n([tf.cast(fits >= r, tf.int32) for r in (2, 4, 8)])
        image = tf.switch_case(
            index, [lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r) for r in (1, 2, 4, 8)]
        )
        scale = tf.bitwise.left_shift(1, index)
        # The window moves to the scaled grid: under one scaled pixel, immaterial for training.
        shape = tf.shape(image)[:2]
        start = tf.minimum(window[:2] // scale, shape - 1)
        size = tf.clip_by_value(window[2:] // scale, 1, shape - start)
        return take(image, tf.concat([start, size], 0))

    def decode(data, label, decoder_id, geometry, seed=None):
        if dct_scaling:
            # Sizes are known (the doctor measured them), so the window comes before decoding.
            known = geometry[:2] if geometry.shape[0] == 2 else geometry[2:]
            image = scaled_jpeg(data, window_of(known, geometry, seed))
            return _finish_image(image, label, height, width, policy, quantize)

        def tf_decode():
            # libjpeg-turbo / libpng, exact for the files the doctor routed here; decode_image
            # reads either format in one op.
            if only_jpeg:
                return tf.io.decode_jpeg(data, channels=3)
            return tf.io.decode_image(data, channels=3, expand_animations=False)

        def pillow_decode():
            return tf.numpy_function(decode_rgb, [data], tf.uint8, stateful=False)

        if needs_pillow:
            image = tf.cond(decoder_id < 2, tf_decode, pillow_decode)
        else:
            # Without Pillow files the graph holds no numpy_function, so it can be serialised.
            image = tf_decode()
        image = tf.ensure_shape(image, (None, None, 3))
        if cropping:
            shape = tf.shape(image)[:2]
            if geometry.shape[0] == 2:
                shape = tf.where(geometry[0] > 0, geometry, shape)
            image = take(image, window_of(shape, geometry, seed))
        return _finish_image(image, label, height, width, policy, quantize)

    return decode


def _finish_image(image, label, height, width, policy, quantize):
    import tensorflow as tf

    image = _resize(tf.ensure_shape(image, (None, None, 3)), height, width, policy)
    if quantize:
        # Bilinear output is a convex mix of uint8 values, so +0.5 and truncation rounds half
        # up without a clip; the cache then holds one byte per value.
        image = tf.cast(image + 0.5, tf.uint8)
    return image, label


def _tensor_transform(height, width, policy, area_range, aspect_range):
    import tensorflow as tf

    cropping = policy in ("center_crop", "random_crop")

    def transform(image, label, seed=None):
        image = tf.convert_to_tensor(image)
        channels = image.shape[-1]
        if channels == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif channels == 4:
            image = image[..., :3]
        elif channels is None:
            image = tf.cond(
                tf.shape(image)[-1] == 1,
                lambda: tf.image.grayscale_to_rgb(image),
                lambda: image[..., :3],
            )
        if cropping:
            window = _crop_window(
                tf.shape(image)[:2], policy, height, width, seed, area_range, aspect_range
            )
            image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
        image = _resize(
            tf.cast(tf.ensure_shape(image, (None, None, 3)), tf.float32), height, width, policy
        )
        return image, label

    return transform
