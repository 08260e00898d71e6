"""Fine-tuning surgery on a classifier from :func:`effnet_tl.build_classifier`.

What the training phases freeze and where they cut the model:

* :func:`freeze_backbone` (head phase) and :func:`set_finetune_trainable` (fine-tuning: the top
  N whole blocks, every BatchNormalization kept in inference mode);
* :func:`finetune_boundary` names the lowest trained layer; :func:`frozen_bottom` is the frozen
  part below it and :func:`head_model` the trained part above it, sharing the classifier's
  layers and weights, so the frozen part can run once and its output be cached
  (:mod:`effnet_tl.train.feature_cache`).

Example:
    >>> import numpy as np
    >>> from effnet_tl import build_classifier
    >>> from effnet_tl.models import custom_variant
    >>> tiny = custom_variant(width=0.25, depth=0.25, resolution=32, name="tiny")
    >>> model = build_classifier(3, variant=tiny, weights=None)
    >>> boundary = finetune_boundary(model, 1)
    >>> x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    >>> split = head_model(model, boundary)(frozen_bottom(model, boundary)(x))
    >>> bool(np.allclose(split, model(x), atol=1e-5))
    True
"""

from __future__ import annotations

import keras

from effnet_tl.classifier import BACKBONE_NAME, EXTRA_BLOCK_PREFIX, backbone_blocks
from effnet_tl.compat import sublayers
from effnet_tl.train.defaults import unfrozen_block_count

__all__ = [
    "feature_model",
    "finetune_boundary",
    "freeze_backbone",
    "frozen_bottom",
    "head_model",
    "set_finetune_trainable",
]


def _freeze_batch_norm(layer: keras.layers.Layer) -> None:
    for sub in sublayers(layer, include_self=True):
        if isinstance(sub, keras.layers.BatchNormalization):
            sub.trainable = False


def finetune_boundary(model: keras.Model, unfreeze_blocks: int | str) -> str | None:
    """The lowest backbone layer that fine-tuning trains: everything below it stays frozen.

    ``None`` when no block is unfrozen (the head alone trains); the first layer after the
    input (the normalization) for ``"all"``, which also unfreezes the stem.
    """
    count = unfrozen_block_count(unfreeze_blocks, backbone_blocks(model))
    if count == 0:
        return None
    base = model.get_layer(BACKBONE_NAME)
    if count == len(backbone_blocks(model)):
        return base.layers[1].name
    return backbone_blocks(model)[-count]


def set_finetune_trainable(model: keras.Model, unfreeze_blocks: int | str, *,
                           freeze_batch_norm: bool = True) -> list[str]:
    """Freeze the backbone except its top ``unfreeze_blocks`` whole blocks; BN stays frozen
    (unless ``freeze_batch_norm=False``).

    ``top_conv``/``top_bn`` are unfrozen together with any block; the head and extra blocks
    are always trainable. Every BatchNormalization (inside MBConv blocks too) gets
    ``trainable=False``, which in Keras 3 also runs it in inference mode (moving statistics),
    so small fine-tuning batches never disturb the pretrained statistics.

    Args:
        model: A model from :func:`build_classifier`.
        unfreeze_blocks: Number of blocks to unfreeze from the top (0 = head only), ``"all"``,
            or a block name (``"block6a"``): that block and everything above it.
        freeze_batch_norm: ``False`` for a backbone trained from scratch (``weights=None``):
            there are no pretrained statistics to keep, and a random network whose
            BatchNorm divides by its initial unit variance passes no signal (measured: a
            tiny variant from scratch stayed at chance with BN frozen), so the unfrozen
            part's BatchNormalization layers train, in training mode.

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
        trainable = reached and bool(layer.weights) and not (
            freeze_batch_norm and isinstance(layer, keras.layers.BatchNormalization))
        layer.trainable = trainable
        if trainable:
            unfrozen.append(layer.name)
    if freeze_batch_norm:
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
        return keras.Model(base.input, x, name=f"{model.name}-features")
    return keras.Model(base.input, base.get_layer(boundary).input,
                       name=f"{model.name}-below-{boundary}")


def feature_model(model: keras.Model, boundary: str | None = None) -> keras.Model:
    """What :func:`head_model` takes, from images (``boundary=None``) or from the output of
    ``frozen_bottom(model, boundary)``: the backbone's output, pooled unless extra blocks."""
    if boundary is None:
        return frozen_bottom(model, None)
    inputs, x = _backbone_from(model, boundary)
    if not _has_extra_blocks(model):
        x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name=f"{model.name}-features-from-{boundary}")


def head_model(model: keras.Model, boundary: str | None = None) -> keras.Model:
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
    return keras.Model(inputs, x, name=f"{model.name}-head" + (f"-from-{boundary}" if boundary else ""))
