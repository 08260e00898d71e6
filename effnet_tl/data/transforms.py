"""Per-image geometry of the input pipeline: resize policies, crop windows, decode and resize.

Applies the ``RESIZE_POLICIES`` that :mod:`effnet_tl.sizes` names, with the map functions
:mod:`effnet_tl.data.pipeline` assembles: the file decoder (one TensorFlow JPEG/PNG decode per
file, DCT-scaled JPEG decoding, the Pillow route of :func:`effnet_tl.data.imagefile.decode_rgb`
for files that need conversion), the crop window (random-resized or the largest centred one,
precomputable from the doctor's sizes), the resize, and the same transform for decoded tensors,
which :func:`eval_resize` applies to one image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from effnet_tl.data.imagefile import decode_rgb
from effnet_tl.sizes import RESIZE_POLICIES, image_size_pair

_DECODER_IDS = {"jpeg": 0, "png": 1, "pillow": 2}


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


def _eval_policy(resize: str) -> str:
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    # Inference never crops at random: the evaluation view of every crop policy is the centre.
    return "center_crop" if resize in ("crop", "random_crop") else resize


def _policy(resize: str, training: bool) -> str:
    if resize == "crop":
        return "random_crop" if training else "center_crop"
    return resize


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
