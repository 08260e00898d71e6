"""The fast path: every preset transform of a batch in one fused, vectorised pass.

Why not the Keras preprocessing layers one after another, per image, in tf.data (the keras.io
recipe)? Each of RandomRotation / RandomTranslation / RandomZoom resamples the whole image again
through ``ImageProjectiveTransformV3``, whose CPU kernel is single-threaded and recomputes the
source coordinate for every channel. Here instead:

* the random parameters of a whole batch are drawn at once with stateless ops, so a seed and a
  batch index reproduce them exactly whatever the tf.data parallelism;
* flips, rotation, shear, translation, zoom and random resized crop compose into ONE 2x3 affine
  matrix per image, and the batch is resampled ONCE with a gather-based bilinear warp;
* brightness, contrast and RandAugment's colour ops are per-image scalars broadcast over pixels;
* the result is clipped to [0, 255] once, at the end;
* in tf.data the warp + colour math is compiled with XLA (``jit_compile=True``), which fuses the
  coordinate arithmetic, the four gathers and the colour ops into a single loop over the pixels.
  (XLA is a loss for a whole CNN on CPU, see GUIDE §3, but a large win for this memory-bound
  elementwise work.)

The same code runs inside a model on a GPU (:class:`FusedAugment` is a Keras layer that is the
identity unless ``training=True``).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from effnet_tl.augment.presets import AugmentSpec, get_preset

# RandAugment operations (Cubuk et al. 2020, the EfficientNet paper's policy) minus Equalize,
# whose per-image histogram does not vectorise cheaply. Geometric ones fold into the affine matrix.
RANDAUGMENT_OPS: tuple[str, ...] = (
    "identity",
    "auto_contrast",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_OP_INDEX = {name: index for index, name in enumerate(RANDAUGMENT_OPS)}
# Maxima at magnitude 1.0, after timm's RandAugment (its magnitude 10 of 10).
_RA_MAX_ROTATE_DEGREES = 30.0
_RA_MAX_SHEAR = 0.3
_RA_MAX_TRANSLATE_FRACTION = 0.45
_RA_MAX_ENHANCE = 0.9  # colour / contrast / brightness / sharpness factor 1 +- 0.9

# Number of uniform draws per image in sample_parameters(); one column per purpose so adding a
# transform never shifts the draws of another (keeps old seeds' geometry stable).
_NUM_DRAWS = 16


def _uniform(draws: tf.Tensor, column: int, low: Any, high: Any) -> tf.Tensor:
    return low + (high - low) * draws[:, column]


def sample_parameters(spec: AugmentSpec, batch_size: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                      seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """Draw every random quantity of one batch from a stateless ``seed`` (shape [2], int).

    Returns per-image tensors: ``affine`` [B, 6] (output pixel -> source pixel, row-major 2x3),
    ``brightness`` [B] (additive, pixels), ``contrast`` [B] (factor), ``ra_ops`` [B, K] (0/1 per
    RandAugment op) and ``ra_signs`` [B, K] (+-1).
    """
    seed = tf.cast(seed, tf.int64)
    draws = tf.random.stateless_uniform([batch_size, _NUM_DRAWS], seed=seed, dtype=tf.float32)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    ones = tf.ones([batch_size], tf.float32)
    zeros = tf.zeros([batch_size], tf.float32)

    # --- RandAugment op choice: num_ops draws per image, with replacement.
    num_ops = int(spec.randaugment_num_ops)
    magnitude = float(spec.randaugment_magnitude)
    if num_ops and magnitude:
        ra_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        choices = tf.random.stateless_uniform(
            [batch_size, num_ops], seed=ra_seed, maxval=len(RANDAUGMENT_OPS), dtype=tf.int32
        )
        ra_ops = tf.minimum(tf.reduce_sum(tf.one_hot(choices, len(RANDAUGMENT_OPS)), axis=1), 1.0)
        sign_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        ra_signs = tf.where(
            tf.random.stateless_uniform([batch_size, len(RANDAUGMENT_OPS)], seed=sign_seed) < 0.5,
            -1.0, 1.0,
        )
    else:
        ra_ops = tf.zeros([batch_size, len(RANDAUGMENT_OPS)], tf.float32)
        ra_signs = tf.ones([batch_size, len(RANDAUGMENT_OPS)], tf.float32)

    def ra(name: str) -> tf.Tensor:
        # Signed strength of op ``name`` per image: 0 where it was not drawn.
        index = _OP_INDEX[name]
        return ra_ops[:, index] * ra_signs[:, index] * magnitude

    # --- Geometry, as the 2x2 linear part L and the source centre (cx, cy) it maps about.
    angle_degrees = _uniform(draws, 0, -spec.max_rotation_degrees, spec.max_rotation_degrees)
    angle_degrees += ra("rotate") * _RA_MAX_ROTATE_DEGREES
    angle = angle_degrees * (math.pi / 180.0)
    flip_x = tf.where(draws[:, 1] < 0.5, -1.0, 1.0) if spec.horizontal_flip else ones
    flip_y = tf.where(draws[:, 2] < 0.5, -1.0, 1.0) if spec.vertical_flip else ones
    # Zoom > 1 magnifies, so it samples a smaller source region: divide by it.
    zoom = _uniform(draws, 3, 1.0 - spec.max_zoom_fraction, 1.0 + spec.max_zoom_fraction)
    shear_x = ra("shear_x") * _RA_MAX_SHEAR
    shear_y = ra("shear_y") * _RA_MAX_SHEAR

    if spec.crop_area_range is not None:
        # Inception crop: area fraction and log-uniform aspect; both sides clipped to the image.
        area = _uniform(draws, 4, spec.crop_area_range[0], spec.crop_area_range[1])
        log_aspect = _uniform(draws, 5, math.log(spec.crop_aspect_range[0]),
                              math.log(spec.crop_aspect_range[1]))
        aspect = tf.exp(log_aspect)
        crop_w = tf.minimum(tf.sqrt(area * aspect), 1.0)  # fractions of width / height
        crop_h = tf.minimum(tf.sqrt(area / aspect), 1.0)
        crop_cx = (0.5 * crop_w + draws[:, 6] * (1.0 - crop_w) - 0.5) * w  # offset from centre
        crop_cy = (0.5 * crop_h + draws[:, 7] * (1.0 - crop_h) - 0.5) * h
    else:
        crop_w, crop_h, crop_cx, crop_cy = ones, ones, zeros, zeros

    shift_x = _uniform(draws, 8, -spec.max_translation_fraction, spec.max_translation_fraction) * w
    shift_y = _uniform(draws, 9, -spec.max_translation_fraction, spec.max_translation_fraction) * h
    shift_x += ra("translate_x") * _RA_MAX_TRANSLATE_FRACTION * w
    shift_y += ra("translate_y") * _RA_MAX_TRANSLATE_FRACTION * h

    # L = CropScale @ Rotation @ Shear @ Flip / zoom, applied to output coordinates about the
    # image centre. Written out by hand: 2x2 products of [B] vectors vectorise trivially.
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Shear @ Flip = [[fx, shx*fy], [shy*fx, fy]]
    s00, s01, s10, s11 = flip_x, shear_x * flip_y, shear_y * flip_x, flip_y
    r00 = cos * s00 - sin * s10
    r01 = cos * s01 - sin * s11
    r10 = sin * s00 + cos * s10
    r11 = sin * s01 + cos * s11
    l00 = crop_w * r00 / zoom
    l01 = crop_w * r01 / zoom
    l10 = crop_h * r10 / zoom
    l11 = crop_h * r11 / zoom
    centre_x = (w - 1.0) / 2.0
    centre_y = (h - 1.0) / 2.0
    # source = L @ (output - centre) + centre + crop offset + shift
    t0 = centre_x + crop_cx + shift_x - l00 * centre_x - l01 * centre_y
    t1 = centre_y + crop_cy + shift_y - l10 * centre_x - l11 * centre_y
    affine = tf.stack([l00, l01, t0, l10, l11, t1], axis=1)

    brightness = _uniform(draws, 10, -spec.max_brightness_delta, spec.max_brightness_delta) * 255.0
    contrast = _uniform(draws, 11, 1.0 - spec.max_contrast_fraction, 1.0 + spec.max_contrast_fraction)
    return {
        "affine": affine,
        "brightness": brightness,
        "contrast": contrast,
        "ra_ops": ra_ops,
        "ra_signs": ra_signs,
    }


def _reflect(coord: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    # Mirror about the edge pixels (d c b | a b c d | c b a), like Keras fill_mode="reflect".
    # One fold covers excursions up to a full image size (all our bounds); the clip that follows
    # catches the rest. Cheaper than floormod, which XLA's CPU backend lowers to a slow fmod.
    last = size - 1.0
    return last - tf.abs(last - tf.abs(coord))


def warp_affine(images: tf.Tensor, affine: tf.Tensor, *, interpolation: str = "bilinear",
                fill_mode: str = "reflect") -> tf.Tensor:
    """Resample a batch [B, H, W, C] through per-image 2x3 affine maps (output -> source pixel).

    Source coordinates are computed once per pixel (not per channel) and the bilinear taps are
    gathered as whole C-vectors, which is what makes this fast on CPU once XLA fuses it.
    """
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    xs = tf.range(w)[None, None, :]
    ys = tf.range(h)[None, :, None]
    a = affine[:, :, None, None]
    # Affine coordinates are separable: row term + column term, broadcast to [B, H, W].
    src_x = a[:, 0] * xs + (a[:, 1] * ys + a[:, 2])
    src_y = a[:, 3] * xs + (a[:, 4] * ys + a[:, 5])
    inside = None
    if fill_mode == "constant":
        inside = (src_x > -1.0) & (src_x < w) & (src_y > -1.0) & (src_y < h)
    elif fill_mode == "reflect":
        src_x = _reflect(src_x, w)
        src_y = _reflect(src_y, h)
    src_x = tf.clip_by_value(src_x, 0.0, w - 1.0)
    src_y = tf.clip_by_value(src_y, 0.0, h - 1.0)
    flat = tf.reshape(images, [-1, channels])
    base = (tf.range(batch) * height * width)[:, None, None]

    if interpolation == "nearest":
        ix = tf.cast(tf.round(src_x), tf.int32)
        iy = tf.cast(tf.round(src_y), tf.int32)
        out = tf.gather(flat, base + iy * width + ix)
    else:
        x0f = tf.floor(src_x)
        y0f = tf.floor(src_y)
        fx = (src_x - x0f)[..., None]
        fy = (src_y - y0f)[..., None]
        x0 = tf.cast(x0f, tf.int32)
        y0 = tf.cast(y0f, tf.int32)
        x1 = tf.minimum(x0 + 1, width - 1)
        y1 = tf.minimum(y0 + 1, height - 1)
        row0 = base + y0 * width
        row1 = base + y1 * width
        top_left = tf.gather(flat, row0 + x0)
        top_right = tf.gather(flat, row0 + x1)
        bottom_left = tf.gather(flat, row1 + x0)
        bottom_right = tf.gather(flat, row1 + x1)
        top = top_left + (top_right - top_left) * fx
        bottom = bottom_left + (bottom_right - bottom_left) * fx
        out = top + (bottom - top) * fy
    if inside is not None:
        out = out * tf.cast(inside, out.dtype)[..., None]
    return out


def _grayscale(images: tf.Tensor) -> tf.Tensor:
    # ITU-R 601 luma, as PIL's ImageEnhance.Color uses; keeps the channel axis for broadcasting.
    weights = tf.constant([0.299, 0.587, 0.114], images.dtype)
    return tf.reduce_sum(images * weights, axis=-1, keepdims=True)


def _blend(degenerate: tf.Tensor, images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    # PIL ImageEnhance semantics: factor 1 = unchanged, 0 = degenerate, > 1 extrapolates.
    return degenerate + (images - degenerate) * factor


def _select(mask: tf.Tensor, changed: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    # Per-image choice with a 0/1 [B] mask, as arithmetic so it vectorises and fuses.
    mask = mask[:, None, None, None]
    return images + mask * (changed - images)


def _smooth(images: tf.Tensor) -> tf.Tensor:
    # PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 as nine shifted slices: XLA fuses these
    # into one loop, whereas its CPU depthwise convolution is ~30x slower. Edges replicate.
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    total = 4.0 * images
    for dy in range(3):
        for dx in range(3):
            total += padded[:, dy:dy + height, dx:dx + width, :]
    return total / 13.0


def _randaugment_colour(images: tf.Tensor, params: dict[str, tf.Tensor],
                        magnitude: float) -> tf.Tensor:
    ops = params["ra_ops"]
    signs = params["ra_signs"]

    def enhance_factor(name: str) -> tf.Tensor:
        index = _OP_INDEX[name]
        return (1.0 + signs[:, index] * magnitude * _RA_MAX_ENHANCE)[:, None, None, None]

    def mask(name: str) -> tf.Tensor:
        return ops[:, _OP_INDEX[name]]

    # Every statistic (blur, min/max, mean) is taken from the SOURCE image: the source is already
    # in memory, whereas a reduction over an intermediate makes XLA recompute the whole chain.
    source = images
    blurred = _smooth(source)
    low = tf.reduce_min(source, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(source, axis=[1, 2], keepdims=True)
    mean_gray = tf.reduce_mean(_grayscale(source), axis=[1, 2, 3], keepdims=True)

    # Sharpness: PIL's 3x3 smoothed image as the degenerate image.
    images = _select(mask("sharpness"), _blend(blurred, images, enhance_factor("sharpness")), images)
    spread = high - low
    stretched = tf.where(spread > 0.0, (images - low) * (255.0 / tf.maximum(spread, 1e-3)), images)
    images = _select(mask("auto_contrast"), stretched, images)
    # Solarize: invert pixels at or above a threshold that falls as magnitude rises.
    threshold = 256.0 - 256.0 * magnitude
    images = _select(mask("solarize"), tf.where(images >= threshold, 255.0 - images, images), images)
    # Posterize: keep 8 - round(4 * magnitude) bits.
    step = float(2 ** int(round(4 * magnitude)))
    images = _select(mask("posterize"), tf.floor(images / step) * step, images)
    images = _select(mask("color"), _blend(_grayscale(images), images, enhance_factor("color")),
                     images)
    images = _select(mask("contrast"), _blend(mean_gray, images, enhance_factor("contrast")), images)
    images = _select(mask("brightness"), images * enhance_factor("brightness"), images)
    return images


def apply_parameters(images: tf.Tensor, params: dict[str, tf.Tensor], spec: AugmentSpec) -> tf.Tensor:
    """Apply drawn ``params`` to float32 ``images`` [B, H, W, 3] in [0, 255]; deterministic.

    Kept apart from :func:`sample_parameters` so that this pure arithmetic can be XLA-compiled
    while the random draws stay on the plain stateless kernels (identical with or without XLA).

    Order, chosen for speed: RandAugment's colour ops first, on the source image (one pass);
    then the warp, with contrast and brightness folded in as a per-image, per-channel affine map
    of pixel values (exact, because bilinear resampling is linear in the values); then one clip.
    """
    if spec.randaugment_num_ops and spec.randaugment_magnitude:
        images = _randaugment_colour(images, params, float(spec.randaugment_magnitude))
        # Colour ops such as solarize expect [0, 255]; the warp below preserves that range.
        images = tf.clip_by_value(images, 0.0, 255.0)
    scale = offset = None
    if spec.max_contrast_fraction:
        # Contrast about each channel's mean of the source image: same value as after a warp,
        # up to the border pixels, and it does not need the warped image in memory.
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        scale = params["contrast"][:, None, None, None]
        offset = mean * (1.0 - scale)
    if spec.max_brightness_delta:
        brightness = params["brightness"][:, None, None, None]
        offset = brightness if offset is None else offset + brightness
    if spec.has_geometry:
        images = warp_affine(images, params["affine"], interpolation=spec.interpolation,
                             fill_mode=spec.fill_mode)
    if scale is not None:
        images = images * scale
    if offset is not None:
        images = images + offset
    # One clip for the whole chain: intermediate values may leave [0, 255], the output may not.
    return tf.clip_by_value(images, 0.0, 255.0)


_COMPILED: dict[tuple[AugmentSpec, bool], Any] = {}


def _apply_function(spec: AugmentSpec, jit_compile: bool):
    # One tf.function per (spec, jit) so tf.data traces and XLA compiles it once per process.
    key = (spec, jit_compile)
    if key not in _COMPILED:
        _COMPILED[key] = tf.function(
            lambda images, params: apply_parameters(images, params, spec),
            jit_compile=jit_compile,
            reduce_retracing=True,
            autograph=False,  # no tensor-dependent Python control flow to convert
        )
    return _COMPILED[key]


def augment_batch(images: tf.Tensor, spec: AugmentSpec, seed: tf.Tensor, *,
                  jit_compile: bool = False) -> tf.Tensor:
    """Augment a batch [B, H, W, 3] (any real dtype, pixels in [0, 255]) with stateless ``seed``.

    Args:
        images: A batch of images, pixels in [0, 255].
        spec: What to apply (see :class:`~effnet_tl.augment.presets.AugmentSpec`).
        seed: Shape-[2] integer tensor; equal seeds give equal outputs.
        jit_compile: Compile the arithmetic with XLA (fast on CPU; what tf.data uses).

    Returns:
        float32 [B, H, W, 3] in [0, 255].

    Example:
        >>> import numpy as np
        >>> from effnet_tl.augment.presets import get_preset
        >>> batch = np.full((2, 32, 32, 3), 100.0, np.float32)
        >>> augment_batch(batch, get_preset("medium"), seed=[0, 1]).shape
        TensorShape([2, 32, 32, 3])
    """
    images = tf.cast(images, tf.float32)
    if not spec.has_image_ops:
        return images
    shape = tf.shape(images)
    params = sample_parameters(spec, shape[0], shape[1], shape[2], seed)
    if jit_compile:
        out = _apply_function(spec, True)(images, params)
    else:
        out = apply_parameters(images, params, spec)
    return tf.ensure_shape(out, images.shape)


@keras.saving.register_keras_serializable(package="effnet_tl")
class FusedAugment(keras.layers.Layer):
    """A preset (or any :class:`AugmentSpec`) as one Keras layer; identity unless training.

    Use it inside a model (GPU: runs on the device) or map it over batches in tf.data (CPU/TPU;
    :func:`effnet_tl.augment.augment_dataset` does that with per-batch stateless seeds and XLA).
    Inference, evaluation and export see the identity: ``training`` must be True to augment,
    and ``training=None`` (a bare call, ``model.predict``, a SavedModel signature) is inference.

    Args:
        spec: A preset name (``"none"``, ``"light"``, ``"medium"``, ``"heavy"``) or an AugmentSpec
            (or its dict form).
        seed: Integer seed of this layer's own random stream (used by ``call``); None = random.
        **kwargs: Standard layer arguments (``name``...). The dtype is pinned to float32 so that a
            mixed-precision policy never quantises pixel coordinates.

    Example:
        >>> import numpy as np
        >>> layer = FusedAugment("medium", seed=0)
        >>> batch = np.full((2, 32, 32, 3), 100.0, np.float32)
        >>> bool(np.all(layer(batch) == batch))  # inference: identity
        True
        >>> layer(batch, training=True).shape
        TensorShape([2, 32, 32, 3])
    """

    def __init__(self, spec: str | AugmentSpec | dict = "medium", *, seed: int | None = None,
                 **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(spec, str):
            self.preset_name: str | None = spec
            spec = get_preset(spec)
        elif isinstance(spec, dict):
            self.preset_name = None
            spec = AugmentSpec.from_dict(spec)
        elif isinstance(spec, AugmentSpec):
            self.preset_name = None
        else:
            raise TypeError(
                f"spec must be a preset name, AugmentSpec or dict, got {type(spec).__name__}: {spec!r}"
            )
        self.spec = spec
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def augment(self, images: tf.Tensor, seed: tf.Tensor, *, jit_compile: bool = False) -> tf.Tensor:
        """Training-mode transform with an explicit stateless ``seed`` (shape [2]); see
        :func:`augment_batch`."""
        return augment_batch(images, self.spec, seed, jit_compile=jit_compile)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        inputs = tf.cast(inputs, tf.float32)
        if not training:
            return inputs
        single = len(inputs.shape) == 3
        batch = inputs[None] if single else inputs
        out = self.augment(batch, self.seed_generator.next())
        return out[0] if single else out

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            spec=self.preset_name if self.preset_name is not None else self.spec.to_dict(),
            seed=self.seed,
        )
        return config
