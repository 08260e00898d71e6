"""Assembly of a classifier: input block → backbone → last Dense block → target block.

:func:`build_classifier` returns a :class:`~effnet_tl.train.step.SharedStepModel` (so
``model.fit`` and the distributed loop run the same step) laid out as::

    image ─▶ [augment] ─▶ backbone (nested model "backbone") ─▶ [extra MBConv blocks]
          ─▶ head_pool (global average) ─▶ head_dropout (variant's rate) ─▶ predictions
             (Dense(num_classes, softmax), float32 even under mixed precision)

The target block is :func:`target_loss`: categorical crossentropy on one-hot labels, with
optional label smoothing. Two classes stay softmax + categorical (one code path, and
``predict`` always returns one probability per class).

:func:`set_finetune_trainable` unfreezes the top N whole blocks of the backbone (by layer
name, from the top down) and keeps every BatchNormalization in inference mode.
:func:`frozen_bottom` and :func:`head_model` split the classifier where training starts
(:func:`finetune_boundary`), so the frozen part can run once and its output be cached.

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

from effnet_tl.layers import FusedMBConv, MBConv
from effnet_tl.models import backbone as build_backbone
from effnet_tl.models import get_variant
from effnet_tl.models.variants import VariantSpec
from effnet_tl.train.step import SharedStepModel

__all__ = [
    "HEAD_LAYER_NAMES",
    "backbone_blocks",
    "build_classifier",
    "feature_model",
    "finetune_boundary",
    "frozen_bottom",
    "head_model",
    "set_finetune_trainable",
    "target_loss",
    "unfrozen_block_count",
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
) -> SharedStepModel:
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
        An uncompiled :class:`SharedStepModel` taking float RGB in [0, 255].
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
    spec = get_variant(variant)
    height, width = _image_hw(image_size, spec)
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
    return SharedStepModel(inputs, outputs, name=name or f"effnet_tl-{spec.name}")


def _image_hw(image_size, spec: VariantSpec) -> tuple[int, int]:
    if image_size is None:
        return spec.resolution, spec.resolution
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


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


def _freeze_batch_norm(layer: keras.layers.Layer) -> None:
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, keras.layers.BatchNormalization):
            sub.trainable = False


def unfrozen_block_count(model: keras.Model, unfreeze_blocks: int | str) -> int:
    """How many top backbone blocks ``unfreeze_blocks`` means (checked, with a clear error).

    Example:
        >>> from effnet_tl.models import custom_variant
        >>> tiny = build_classifier(2, variant=custom_variant(width=0.25, depth=0.25,
        ...                         resolution=32, name="tiny"), weights=None)
        >>> unfrozen_block_count(tiny, "all") == len(backbone_blocks(tiny))
        True
    """
    blocks = backbone_blocks(model)
    if unfreeze_blocks == "all":
        return len(blocks)
    if isinstance(unfreeze_blocks, str):
        if unfreeze_blocks not in blocks:
            raise ValueError(f"unfreeze_blocks={unfreeze_blocks!r} is not a block; blocks: {blocks}")
        return len(blocks) - blocks.index(unfreeze_blocks)
    if isinstance(unfreeze_blocks, int) and not isinstance(unfreeze_blocks, bool) \
            and 0 <= unfreeze_blocks <= len(blocks):
        return unfreeze_blocks
    raise ValueError(
        f"unfreeze_blocks must be 0..{len(blocks)}, 'all' or a block name. "
        f"Received: unfreeze_blocks={unfreeze_blocks!r}"
    )


def finetune_boundary(model: keras.Model, unfreeze_blocks: int | str) -> str | None:
    """The lowest backbone layer that fine-tuning trains: everything below it stays frozen.

    ``None`` when no block is unfrozen (the head alone trains); the first layer after the
    input (the normalization) for ``"all"``, which also unfreezes the stem.
    """
    count = unfrozen_block_count(model, unfreeze_blocks)
    if count == 0:
        return None
    base = model.get_layer(BACKBONE_NAME)
    if count == len(backbone_blocks(model)):
        return base.layers[1].name
    return backbone_blocks(model)[-count]


def set_finetune_trainable(model: keras.Model, unfreeze_blocks: int | str) -> list[str]:
    """Freeze the backbone except its top ``unfreeze_blocks`` whole blocks; BN stays frozen.

    ``top_conv``/``top_bn`` are unfrozen together with any block; the head and extra blocks
    are always trainable. Every BatchNormalization (inside MBConv blocks too) gets
    ``trainable=False``, which in Keras 3 also runs it in inference mode (moving statistics),
    so small fine-tuning batches never disturb the pretrained statistics.

    Args:
        model: A model from :func:`build_classifier`.
        unfreeze_blocks: Number of blocks to unfreeze from the top (0 = head only), ``"all"``,
            or a block name (``"block6a"``): that block and everything above it.

    Returns:
        Names of the backbone layers left trainable.
    """
    base = model.get_layer(BACKBONE_NAME)
    first = finetune_boundary(model, unfreeze_blocks)
    model.trainable = True
    unfrozen: list[str] = []
    reached = False
    for layer in base.layers:
        reached = reached or (first is not None and layer.name == first)
        trainable = reached and bool(layer.weights) and not isinstance(
            layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        if trainable:
            unfrozen.append(layer.name)
    for layer in model.layers:
        if layer is not base:
            _freeze_batch_norm(layer)
    _freeze_batch_norm(base)
    return unfrozen


def freeze_backbone(model: keras.Model) -> None:
    """Head phase: the whole backbone frozen (BN in inference mode), the rest trainable."""
    model.trainable = True
    model.get_layer(BACKBONE_NAME).trainable = False
    for layer in model.layers:
        _freeze_batch_norm(layer)


def feature_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers after the backbone: extra blocks, then the last Dense block."""
    names = [layer.name for layer in model.layers]
    start = names.index(BACKBONE_NAME) + 1
    return model.layers[start:]


def _has_extra_blocks(model: keras.Model) -> bool:
    return any(layer.name.startswith(EXTRA_BLOCK_PREFIX) for layer in feature_layers(model))


def _backbone_from(model: keras.Model, boundary: str | None):
    """A fresh Input at ``boundary``'s input (or the backbone's input) and the backbone's
    layers from there on, re-applied to it (sharing their weights)."""
    base = model.get_layer(BACKBONE_NAME)
    if boundary is None:
        return base.inputs[0], base.output
    names = [layer.name for layer in base.layers]
    if boundary not in names[1:]:
        raise ValueError(f"boundary={boundary!r} is not a backbone layer; layers: {names[1:]}")
    # Layer.input is the tensor of the layer's first call, the backbone's own graph, so
    # re-applying layers below (for other splits) never changes it.
    inputs = keras.Input(tuple(base.get_layer(boundary).input.shape[1:]), name=f"{boundary}_input")
    x = inputs
    for layer in base.layers[names.index(boundary):]:
        x = layer(x)
    return inputs, x


def frozen_bottom(model: keras.Model, boundary: str | None) -> keras.Model:
    """Image to the input of backbone layer ``boundary``: the part fine-tuning leaves frozen.

    ``boundary=None`` gives the whole backbone (pooled unless the head has extra blocks),
    whose output :func:`head_model` takes. The model skips any input block (augmentation is
    identity at inference; augmented images go in as data).
    """
    base = model.get_layer(BACKBONE_NAME)
    if boundary is None:
        # A fresh pooling layer (no weights): the classifier's own layers get no extra nodes.
        x = base.output if _has_extra_blocks(model) else \
            keras.layers.GlobalAveragePooling2D()(base.output)
        return keras.Model(base.inputs, x, name=f"{model.name}-features")
    return keras.Model(base.inputs, base.get_layer(boundary).input, name=f"{model.name}-below-{boundary}")


def feature_model(model: keras.Model, boundary: str | None = None) -> keras.Model:
    """What :func:`head_model` takes, from images (``boundary=None``) or from the output of
    ``frozen_bottom(model, boundary)``: the backbone's output, pooled unless extra blocks."""
    if boundary is None:
        return frozen_bottom(model, None)
    inputs, x = _backbone_from(model, boundary)
    if not _has_extra_blocks(model):
        x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name=f"{model.name}-features-from-{boundary}")


def head_model(model: keras.Model, boundary: str | None = None) -> SharedStepModel:
    """The classifier above ``frozen_bottom(model, boundary)``, sharing its layers and weights.

    With ``boundary=None`` it takes the backbone's output, pooled ``(batch, channels)`` unless
    the head has extra blocks (the pooling has no weights); with a boundary (a backbone layer
    name, see :func:`finetune_boundary`) it takes the feature map entering that layer and
    runs the backbone's layers from there, so ``head_model(m, b)(frozen_bottom(m, b)(x))``
    equals ``m(x)``.
    """
    base = model.get_layer(BACKBONE_NAME)
    top = feature_layers(model)
    if boundary is not None:
        inputs, x = _backbone_from(model, boundary)
        for layer in top:
            x = layer(x)
    elif _has_extra_blocks(model):
        inputs = keras.Input(tuple(base.output.shape[1:]), name="features")
        x = inputs
        for layer in top:
            x = layer(x)
    else:
        inputs = keras.Input((base.output.shape[-1],), name="pooled_features")
        x = inputs
        for layer in top:
            if layer.name != "head_pool":
                x = layer(x)
    return SharedStepModel(inputs, x, name=f"{model.name}-head" + (f"-from-{boundary}" if boundary else ""))
