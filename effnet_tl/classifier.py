"""Assembly of a classifier: input block → backbone → last Dense block → target block.

:func:`build_classifier` returns a plain functional ``keras.Model`` laid out as::

    image ─▶ [augment] ─▶ backbone (nested model "backbone") ─▶ [extra MBConv blocks]
          ─▶ head_pool (global average) ─▶ head_dropout (variant's rate) ─▶ predictions
             (Dense(num_classes, softmax), float32 even under mixed precision)

The target block is :func:`target_loss`: categorical crossentropy on one-hot labels, with
optional label smoothing. Two classes stay softmax + categorical (one code path, and
``predict`` always returns one probability per class).

Layer names are stable (``backbone``, ``block6a`` inside it, ``head_pool`` ...): the training
side (:mod:`effnet_tl.train.surgery`) freezes and splits the model by them.

Example:
    >>> import numpy as np
    >>> from effnet_tl.models import custom_variant
    >>> tiny = custom_variant(width=0.25, depth=0.25, resolution=32, name="tiny")
    >>> model = build_classifier(3, variant=tiny, weights=None)
    >>> tuple(model(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 3)
    >>> model.get_layer("predictions").dtype_policy.name
    'float32'
"""

from __future__ import annotations

from typing import Sequence

import keras

from effnet_tl.data.classes import validate_num_classes
from effnet_tl.layers import FusedMBConv, MBConv
from effnet_tl.models import backbone as build_backbone
from effnet_tl.models import get_variant
from effnet_tl.models.variants import VariantSpec
from effnet_tl.sizes import image_size_pair

__all__ = [
    "HEAD_LAYER_NAMES",
    "backbone_blocks",
    "build_classifier",
    "target_loss",
]

#: Names of the last Dense block's layers, in order.
HEAD_LAYER_NAMES = ("head_pool", "head_dropout", "predictions")
BACKBONE_NAME = "backbone"
EXTRA_BLOCK_PREFIX = "extra_block"


def target_loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The target block: categorical crossentropy on one-hot labels.

    Example:
        >>> target_loss(0.1).get_config()["label_smoothing"]
        0.1
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1). Received: {label_smoothing!r}")
    return keras.losses.CategoricalCrossentropy(label_smoothing=float(label_smoothing))


def build_classifier(
    num_classes: int,
    *,
    variant: str | VariantSpec = "b0",
    weights: str | None = "imagenet",
    image_size: int | Sequence[int] | None = None,
    dropout_rate: float | None = None,
    drop_path_rate: float = 0.2,
    extra_blocks: int | Sequence[dict] = 0,
    input_block: keras.layers.Layer | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build the full classifier (uncompiled); call it inside ``strategy.scope()``.

    Args:
        num_classes: Output classes (>= 2); two classes stay softmax + categorical.
        variant: Backbone variant name or :class:`VariantSpec`.
        weights: ``None``, ``"imagenet"`` or a weights-file path (see :func:`effnet_tl.backbone`).
        image_size: Input side (or ``(height, width)``); default: the variant's resolution.
        dropout_rate: Dropout before the Dense layer; default: the variant's rate.
        drop_path_rate: Stochastic depth of the backbone's last block.
        extra_blocks: Extra MBConv blocks on top of the backbone (randomly initialised,
            trained from the head phase on): a count (stride-1 blocks as wide as the
            backbone's output, expand ratio 6, SE 0.25) or a list of MBConv keyword dicts.
        input_block: A layer applied to the image first, e.g.
            ``effnet_tl.augment.build_augmenter("medium")`` (identity unless training).
        name: Model name.

    Returns:
        An uncompiled functional ``keras.Model`` taking float RGB in [0, 255].
    """
    validate_num_classes(num_classes)
    spec = get_variant(variant)
    height, width = image_size_pair(image_size, default=spec.resolution)
    rate = spec.dropout_rate if dropout_rate is None else dropout_rate
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate!r}")
    base = build_backbone(
        spec, weights=weights, input_shape=(height, width, 3), pooling=None,
        drop_path_rate=drop_path_rate, name=BACKBONE_NAME,
    )
    inputs = keras.Input((height, width, 3), name="image")
    x = inputs
    if input_block is not None:
        x = input_block(x)
    x = base(x)
    for index, block_args in enumerate(_extra_block_args(extra_blocks, base.output.shape[-1])):
        x = MBConv(**block_args, name=f"{EXTRA_BLOCK_PREFIX}{index + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(rate, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        # Zeros, not the from-scratch initializer: on 1,000+ pretrained features a random
        # kernel starts with logits of +-10 (confidently wrong) and the head spends its first
        # epochs unlearning that; a zero kernel starts at the uniform prediction.
        num_classes, activation="softmax", kernel_initializer="zeros",
        dtype="float32", name="predictions",
    )(x)
    return keras.Model(inputs, outputs, name=name or f"effnet_tl-{spec.name}")


def _extra_block_args(extra_blocks, channels: int) -> list[dict]:
    if isinstance(extra_blocks, int) and not isinstance(extra_blocks, bool):
        if extra_blocks < 0:
            raise ValueError(f"extra_blocks must be >= 0. Received: extra_blocks={extra_blocks!r}")
        return [
            dict(filters_in=channels, filters_out=channels, kernel_size=3, strides=1,
                 expand_ratio=6, se_ratio=0.25)
            for _ in range(extra_blocks)
        ]
    blocks = [dict(args) for args in extra_blocks]
    for args in blocks:
        args.setdefault("filters_in", channels)
        args.setdefault("filters_out", channels)
        channels = args["filters_out"]
    return blocks


def backbone_blocks(model: keras.Model) -> list[str]:
    """Names of the backbone's MBConv/FusedMBConv blocks, bottom to top.

    Example:
        >>> from effnet_tl.models import custom_variant
        >>> tiny = custom_variant(width=0.25, depth=0.25, resolution=32, name="tiny")
        >>> backbone_blocks(build_classifier(2, variant=tiny, weights=None))[:3]
        ['block1a', 'block2a', 'block3a']
    """
    base = model.get_layer(BACKBONE_NAME)
    return [layer.name for layer in base.layers if isinstance(layer, (MBConv, FusedMBConv))]


