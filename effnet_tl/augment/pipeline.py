"""The input block's entry points: build an augmenter, place it, apply it to a training dataset.

Placement (Keras guidance, "Working with preprocessing layers"): on a GPU, augmentation layers
inside the model run on the device, overlapping with nothing on the host; on a TPU and on CPU,
augmentation belongs in tf.data. MixUp/CutMix and albumentations always run in tf.data (the
first needs labels, the second is NumPy). Validation, evaluation, export and inference never
augment: the layers are the identity unless ``training=True`` and :func:`augment_dataset` is
only ever applied to the training split.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from effnet_tl.augment.albumentations_adapter import (
    AlbumentationsAdapter,
    _image_spec,
    _join,
    _split,
    is_albumentations,
)
from effnet_tl.augment.fused import FusedAugment
from effnet_tl.augment.mix import mix_batch
from effnet_tl.augment.presets import DEFAULT_PRESET, AugmentSpec, augmentation_off


@keras.saving.register_keras_serializable(package="effnet_tl")
class KerasLayersAugmenter(keras.layers.Layer):
    """A user's list of Keras augmentation layers as one layer; identity unless training.

    Keras' own random layers default to ``training=True`` when called bare; this wrapper
    passes ``training`` through explicitly and returns its input untouched otherwise, and
    clips the result to [0, 255] once at the end.

    Args:
        layers: Keras layers, e.g. ``[keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(0.1), keras.layers.RandAugment(value_range=(0, 255))]``.

    Example:
        >>> import numpy as np
        >>> augmenter = KerasLayersAugmenter([keras.layers.RandomFlip("horizontal", seed=1)])
        >>> batch = np.arange(2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3) % 255
        >>> bool(np.all(augmenter(batch) == batch))
        True
    """

    def __init__(self, layers: Sequence[keras.layers.Layer], **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        layers = list(layers)
        bad = [layer for layer in layers if not isinstance(layer, keras.layers.Layer)]
        if not layers or bad:
            raise TypeError(
                f"KerasLayersAugmenter needs a non-empty list of keras.layers.Layer; got {layers!r}"
            )
        self.augment_layers = layers

    def build(self, input_shape: tuple) -> None:
        for layer in self.augment_layers:
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        inputs = tf.cast(inputs, tf.float32)
        if not training:
            return inputs
        out = inputs
        for layer in self.augment_layers:
            out = tf.cast(layer(out, training=True), tf.float32)
        return tf.clip_by_value(out, 0.0, 255.0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layers"] = [keras.saving.serialize_keras_object(layer) for layer in self.augment_layers]
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "KerasLayersAugmenter":
        config = dict(config)
        config["layers"] = [keras.saving.deserialize_keras_object(layer) for layer in config["layers"]]
        return cls(**config)


def build_augmenter(preset_or_layers: str | AugmentSpec | keras.layers.Layer
                    | Sequence[keras.layers.Layer] | None = DEFAULT_PRESET, *,
                    seed: int | None = None) -> keras.layers.Layer:
    """Return the image augmentation as a Keras layer, identity at inference.

    Args:
        preset_or_layers: A preset name from :data:`PRESETS`, an :class:`AugmentSpec`, one Keras
            layer, or a list of Keras layers; ``None``/``False`` (augmentation off, see
            :func:`augmentation_off`) give the identity.
        seed: Seed of the layer's random stream (presets); None draws one.

    Returns:
        :class:`FusedAugment` for a preset/spec, :class:`KerasLayersAugmenter` for layers. Put it
        first in the model (GPU placement) or give it to :func:`augment_dataset`.

    Example:
        >>> inputs = keras.Input((32, 32, 3))
        >>> outputs = build_augmenter("light", seed=0)(inputs)
        >>> keras.Model(inputs, outputs).output_shape
        (None, 32, 32, 3)
    """
    if preset_or_layers is None or preset_or_layers is False or (
        isinstance(preset_or_layers, str) and augmentation_off(preset_or_layers)
    ):
        return FusedAugment("none", seed=seed)  # the identity, in train and inference alike
    if isinstance(preset_or_layers, (str, AugmentSpec)):
        return FusedAugment(preset_or_layers, seed=seed)
    if isinstance(preset_or_layers, (FusedAugment, KerasLayersAugmenter)):
        return preset_or_layers
    if isinstance(preset_or_layers, keras.layers.Layer):
        return KerasLayersAugmenter([preset_or_layers])
    if is_albumentations(preset_or_layers):
        raise TypeError(
            "albumentations pipelines cannot be Keras layers (they are NumPy, outside the graph); "
            "pass them to augment_dataset(ds, compose, seed=...) instead"
        )
    if isinstance(preset_or_layers, (list, tuple)):
        return KerasLayersAugmenter(preset_or_layers)
    raise TypeError(
        "expected a preset name, AugmentSpec, Keras layer or list of Keras layers; got "
        f"{type(preset_or_layers).__name__}: {preset_or_layers!r}"
    )


def choose_placement(strategy_or_device_kind: Any = None) -> str:
    """Where image augmentation should run: ``"model"`` (on a GPU) or ``"dataset"`` (tf.data).

    Args:
        strategy_or_device_kind: A ``tf.distribute.Strategy``, a device kind string (``"cpu"``,
            ``"gpu"``, ``"tpu"``, or a device name like ``"/GPU:0"``), or None to look at the
            devices visible to TensorFlow.

    Returns:
        ``"model"`` for GPUs (the layer runs on the device), ``"dataset"`` for CPU and TPU
        (TPUs want preprocessing in tf.data; on CPU both are the same processor and tf.data
        overlaps it with training).

    Example:
        >>> choose_placement("tpu"), choose_placement("gpu"), choose_placement("cpu")
        ('dataset', 'model', 'dataset')
    """
    kind = _device_kind(strategy_or_device_kind)
    return "model" if kind == "gpu" else "dataset"


def _device_kind(value: Any) -> str:
    if value is None:
        if tf.config.list_logical_devices("TPU"):
            return "tpu"
        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if isinstance(value, tf.distribute.Strategy):
        if "TPU" in type(value).__name__:
            return "tpu"
        try:
            devices = " ".join(value.extended.worker_devices).upper()
        except RuntimeError:
            # The default (no-op) strategy has no device list: it runs wherever TF places ops.
            return _device_kind(None)
        if "TPU" in devices:
            return "tpu"
        return "gpu" if "GPU" in devices else "cpu"
    if isinstance(value, str):
        text = value.strip().lower()
        for kind in ("tpu", "gpu", "cpu"):
            if kind in text or (kind == "gpu" and "cuda" in text):
                return kind
    raise ValueError(
        "choose_placement needs a tf.distribute.Strategy or a device kind ('cpu', 'gpu', 'tpu'); "
        f"got {value!r}"
    )


def _stateless_seed(seed: int | None, index: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])


def augment_dataset(ds: tf.data.Dataset, augmenter: Any = DEFAULT_PRESET, *, seed: int | None,
                    num_parallel_calls: int | None = tf.data.AUTOTUNE,
                    placement: str = "dataset", mixup_alpha: float | None = None,
                    cutmix_alpha: float | None = None, jit_compile: bool = True,
                    training: bool = True) -> tf.data.Dataset:
    """Augment a TRAINING dataset; never apply it to validation, evaluation or inference data.

    Args:
        ds: Elements ``images`` or ``(images, labels[, weights])``; images (B, H, W, 3) batches
            (fast: one vectorised call per batch) or single (H, W, 3) examples; pixels in
            [0, 255], any real dtype. Labels one-hot float (B, C) when mixing.
        augmenter: A preset name, :class:`AugmentSpec`, Keras layer(s), a layer from
            :func:`build_augmenter`, an ``albumentations`` transform/Compose, an
            :class:`AlbumentationsAdapter`, or ``None``/``False``/``"none"`` (off, see
            :func:`augmentation_off`: only the float32 cast, and mixing if asked for).
        seed: Integer seed: the same seed and input order reproduce the same output exactly,
            whatever ``num_parallel_calls`` (every batch's seed is derived from its index).
            None draws a seed. (User Keras layers use their own seeds.)
        num_parallel_calls: tf.data parallelism of the map.
        placement: ``"dataset"`` applies the image transforms here; ``"model"`` means the image
            layer from :func:`build_augmenter` sits in the model (see :func:`choose_placement`),
            so only MixUp/CutMix (which need labels) are applied here.
        mixup_alpha: Override the preset's MixUp alpha (0 = off); None keeps the preset's.
        cutmix_alpha: Override the preset's CutMix alpha (0 = off); None keeps the preset's.
        jit_compile: XLA-compile the fused preset arithmetic (several times faster on CPU).
        training: False returns ``ds`` unchanged, so one call site can serve every split.

    Returns:
        The dataset with float32 images in [0, 255] of unchanged shape (albumentations may
        resize), labels mixed if MixUp/CutMix is on.

    Example:
        >>> import numpy as np
        >>> images = np.full((4, 32, 32, 3), 128, "uint8")
        >>> labels = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
        >>> ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
        >>> out = augment_dataset(ds, "heavy", seed=0)
        >>> [x.dtype.name for x in next(iter(out))]
        ['float32', 'float32']
    """
    if not training:
        return ds
    if placement not in ("dataset", "model"):
        raise ValueError(f"placement must be 'dataset' or 'model', got {placement!r}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    image_spec = _image_spec(ds)

    if augmentation_off(augmenter):
        spec = AugmentSpec()
        layer = None
    elif is_albumentations(augmenter) or isinstance(augmenter, AlbumentationsAdapter):
        adapter = augmenter if isinstance(augmenter, AlbumentationsAdapter) else (
            AlbumentationsAdapter(augmenter, seed=seed))
        ds = adapter.apply_to_dataset(ds, num_parallel_calls=num_parallel_calls)
        spec = AugmentSpec()
        layer = None
    else:
        layer = build_augmenter(augmenter, seed=seed)
        spec = layer.spec if isinstance(layer, FusedAugment) else AugmentSpec()

    mixup = spec.mixup_alpha if mixup_alpha is None else float(mixup_alpha)
    cutmix = spec.cutmix_alpha if cutmix_alpha is None else float(cutmix_alpha)
    batched = image_spec.shape.rank == 4
    if mixup or cutmix:
        element = ds.element_spec
        if not batched or not isinstance(element, tuple) or len(element) < 2:
            raise ValueError(
                f"MixUp/CutMix (mixup_alpha={mixup}, cutmix_alpha={cutmix}) need batched "
                f"(images, one-hot labels) elements; got element_spec {element}. Batch first, "
                "or pass mixup_alpha=0, cutmix_alpha=0."
            )
    apply_images = placement == "dataset" and layer is not None
    if isinstance(layer, FusedAugment) and not layer.spec.has_image_ops:
        apply_images = False

    # Plain Python control flow on static values only: autograph's source-to-source
    # conversion would add 1-2 s to every new pipeline and change nothing.
    @tf.autograph.experimental.do_not_convert
    def transform(index, element):
        images, rest = _split(element)
        images = tf.cast(images, tf.float32)
        batch_seed = _stateless_seed(seed, index)
        if apply_images:
            if isinstance(layer, FusedAugment):
                single = not batched
                batch = images[None] if single else images
                batch = layer.augment(batch, batch_seed, jit_compile=jit_compile)
                images = batch[0] if single else batch
            else:
                images = layer(images, training=True)
        if mixup or cutmix:
            labels = rest[0]
            images, labels = mix_batch(
                images, labels, mixup_alpha=mixup, cutmix_alpha=cutmix,
                seed=tf.random.experimental.stateless_fold_in(batch_seed, 7),
            )
            rest = (labels, *rest[1:])
        return _join(images, rest)

    if not apply_images and not (mixup or cutmix):
        # Nothing random to do here; still honour the output contract (float32 pixels).
        def cast_only(*parts):
            return _join(tf.cast(parts[0], tf.float32), parts[1:] if len(parts) > 1 else None)

        return ds.map(cast_only, num_parallel_calls=num_parallel_calls)
    return ds.enumerate().map(transform, num_parallel_calls=num_parallel_calls, deterministic=True)
