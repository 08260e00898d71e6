"""The one EfficientNet builder: a block table + scaling rules → a Keras functional model."""

from __future__ import annotations

from functools import partial
from typing import Sequence

import keras

from effnet_tl.layers import FusedMBConv, ImageNormalization, MBConv
from effnet_tl.layers.initializers import CONV_KERNEL_INITIALIZER, DENSE_KERNEL_INITIALIZER
from effnet_tl.models.scaling import round_filters, round_repeats
from effnet_tl.models.variants import VariantSpec, get_variant

MIN_INPUT_SIZE = 32
POOLING_CHOICES = (None, "avg", "max")
FEATURE_STRIDES = (4, 8, 16, 32)


def block_name(stage_index: int, repeat_index: int) -> str:
    """Stable block names as in keras.applications: block1a, block2b, …; past z: block6a27."""
    letter = chr(ord("a") + repeat_index) if repeat_index < 26 else f"a{repeat_index}"
    return f"block{stage_index + 1}{letter}"


def _scaled_filters(spec: VariantSpec, count: int) -> int:
    # EfficientNetV2 dropped V1's "never round down by more than 10%" rule.
    return round_filters(count, spec.width, keep_within_10_percent=spec.family != "v2")


def stem_filters(spec: VariantSpec) -> int:
    """Width of the stem convolution (fixed for Lite, scaled otherwise)."""
    if not spec.scale_stem_and_top:
        return spec.stem_filters
    return _scaled_filters(spec, spec.stem_filters)


def top_filters(spec: VariantSpec) -> int:
    """Width of the final 1×1 convolution (fixed for Lite, scaled otherwise)."""
    if not spec.scale_stem_and_top:
        return spec.top_filters
    return _scaled_filters(spec, spec.top_filters)


def scaled_stage_layout(spec: VariantSpec) -> list[dict]:
    """The per-block arguments of ``spec`` after width/depth scaling, in network order.

    Owns the cross-cutting rules: the first block of a stage takes the stride and the
    width change; later repeats use stride 1 and ``filters_in == filters_out``.

    Example:
        >>> from effnet_tl.models.variants import get_variant
        >>> layout = scaled_stage_layout(get_variant("b0"))
        >>> len(layout), layout[1]["name"], layout[1]["strides"], layout[2]["strides"]
        (16, 'block2a', 2, 1)
    """
    filters = partial(_scaled_filters, spec)
    layout = []
    last_stage = len(spec.stages) - 1
    for stage_index, stage in enumerate(spec.stages):
        edge = stage_index in (0, last_stage)
        repeats = (
            stage.repeats if (edge and not spec.scale_edge_repeats)
            else round_repeats(stage.repeats, spec.depth)
        )
        filters_in, filters_out = filters(stage.filters_in), filters(stage.filters_out)
        for repeat_index in range(repeats):
            if not layout:
                # The first block reads the stem, whose width Lite keeps fixed.
                filters_in = stem_filters(spec)
            layout.append({
                "name": block_name(stage_index, repeat_index),
                "block": stage.block,
                "filters_in": filters_in if repeat_index == 0 else filters_out,
                "filters_out": filters_out,
                "kernel_size": stage.kernel_size,
                "strides": stage.strides if repeat_index == 0 else 1,
                "expand_ratio": stage.expand_ratio,
                "se_ratio": stage.se_ratio,
            })
    return layout


def _check_input_shape(input_shape, spec: VariantSpec) -> tuple:
    if input_shape is None:
        return (spec.resolution, spec.resolution, 3)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"input_shape={input_shape!r} must be (height, width, channels), e.g. "
            f"({spec.resolution}, {spec.resolution}, 3)."
        )
    height, width, channels = shape
    if channels != 3:
        raise ValueError(f"input_shape={input_shape!r}: EfficientNet takes RGB, channels must be 3.")
    for size in (height, width):
        if size is not None and (not isinstance(size, int) or size < MIN_INPUT_SIZE):
            raise ValueError(
                f"input_shape={input_shape!r} is too small: height and width must be at least "
                f"{MIN_INPUT_SIZE} pixels (the network downsamples 32×), or None for any size."
            )
    return shape


def backbone(
    variant: str | VariantSpec = "b0",
    *,
    weights: str | None = None,
    input_shape: Sequence[int | None] | None = None,
    include_top: bool = False,
    num_classes: int = 1000,
    pooling: str | None = None,
    drop_path_rate: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """Build an EfficientNet (V1 B0–B7, V2, Lite, or any compound-scaled variant) from our layers.

    The model takes float RGB pixels in [0, 255] and normalises them itself. Layer names
    follow keras.applications (``stem_conv``, ``block6d``, ``top_conv``), so fine-tuning can
    unfreeze "everything from block6" and the official weight files load.

    Args:
        variant: a name ("b0"…"b7", "v2-b0"…"v2-b3", "v2-s", "v2-m", "v2-l", "lite0"…"lite4")
            or a :class:`VariantSpec` (see :func:`custom_variant`).
        weights: None (random), "imagenet" (official files, downloaded once and cached;
            see :mod:`effnet_tl.models.weights` for offline use), or a path to a weights file:
            an official keras.applications ``.h5`` file or a ``.weights.h5`` saved by Keras.
        input_shape: (height, width, 3); defaults to the variant's native resolution.
            Height/width may be None for variable-size inputs.
        include_top: add global pooling, dropout and a ``num_classes`` softmax classifier.
        num_classes: classifier width when ``include_top``.
        pooling: without top: None (4-D feature map), "avg" or "max" (2-D features).
        drop_path_rate: stochastic-depth rate of the last block; earlier blocks get a
            linearly smaller rate (0 for the first).
        name: model name (default ``efficientnet-<variant>``).

    Returns:
        A built ``keras.Model``.

    Example:
        >>> import numpy as np
        >>> model = backbone("b0", input_shape=(64, 64, 3), pooling="avg")
        >>> tuple(model(np.zeros((1, 64, 64, 3), "float32")).shape)
        (1, 1280)
    """
    from effnet_tl.models.weights import load_backbone_weights

    spec = get_variant(variant)
    if not isinstance(include_top, bool):
        raise ValueError(f"include_top={include_top!r} must be True or False.")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")
    if pooling not in POOLING_CHOICES:
        raise ValueError(f"pooling={pooling!r}; accepted: {POOLING_CHOICES}.")
    if not (isinstance(drop_path_rate, (int, float)) and 0 <= drop_path_rate < 1):
        raise ValueError(f"drop_path_rate={drop_path_rate!r} must be in [0, 1).")
    shape = _check_input_shape(input_shape, spec)

    inputs = keras.Input(shape=shape, name="image")
    pre = spec.preprocessing
    x = ImageNormalization(
        scale=pre.scale, mean=pre.mean, variance=pre.variance,
        statistics_as_weights=pre.statistics_as_weights, name="normalization",
    )(inputs)

    x = keras.layers.Conv2D(
        stem_filters(spec), 3, strides=2, padding="same", use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER, name="stem_conv",
    )(x)
    x = _batch_norm(spec, "stem_bn")(x)
    x = keras.layers.Activation(spec.activation, name="stem_activation")(x)

    layout = scaled_stage_layout(spec)
    for index, block_args in enumerate(layout):
        block_args = dict(block_args)
        block_cls = FusedMBConv if block_args.pop("block") == "fused" else MBConv
        x = block_cls(
            **block_args,
            activation=spec.activation,
            # Linear in block index, as in the paper's code: deep blocks are dropped most.
            drop_path_rate=drop_path_rate * index / len(layout),
            bn_momentum=spec.bn_momentum,
            bn_epsilon=spec.bn_epsilon,
        )(x)

    x = keras.layers.Conv2D(
        top_filters(spec), 1, padding="same", use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER, name="top_conv",
    )(x)
    x = _batch_norm(spec, "top_bn")(x)
    x = keras.layers.Activation(spec.activation, name="top_activation")(x)

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if spec.dropout_rate > 0:
            x = keras.layers.Dropout(spec.dropout_rate, name="top_dropout")(x)
        x = keras.layers.Dense(
            num_classes, activation="softmax", kernel_initializer=DENSE_KERNEL_INITIALIZER,
            dtype="float32", name="predictions",
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

    model = keras.Model(inputs, x, name=name or f"efficientnet-{spec.name}")
    if weights is not None:
        load_backbone_weights(model, spec, weights, include_top=include_top)
    return model


def _batch_norm(spec: VariantSpec, name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        momentum=spec.bn_momentum, epsilon=spec.bn_epsilon, name=name
    )


def feature_extractor(model: keras.Model, strides: Sequence[int] = FEATURE_STRIDES) -> keras.Model:
    """A model sharing ``model``'s layers that outputs the stride-4/8/16/32 feature maps.

    Each endpoint is the output of the last block at that stride (the inputs of FPN/BiFPN
    detection and segmentation heads), keyed ``"stride_4"``, ``"stride_8"``, ….

    Example:
        >>> import numpy as np
        >>> features = feature_extractor(backbone("b0", input_shape=(64, 64, 3)))
        >>> {k: tuple(v.shape) for k, v in features(np.zeros((1, 64, 64, 3), "float32")).items()}
        {'stride_4': (1, 16, 16, 24), 'stride_8': (1, 8, 8, 40), 'stride_16': (1, 4, 4, 112), 'stride_32': (1, 2, 2, 320)}
    """
    endpoints = {}
    stride = model.get_layer("stem_conv").strides[0]
    for layer in model.layers:
        if isinstance(layer, (MBConv, FusedMBConv)):
            stride *= layer.strides
            endpoints[stride] = layer.output
    missing = [s for s in strides if s not in endpoints]
    if missing:
        raise ValueError(
            f"strides={list(strides)!r}: this model has block outputs at strides "
            f"{sorted(endpoints)}, not {missing}."
        )
    return keras.Model(
        model.input, {f"stride_{s}": endpoints[s] for s in strides},
        name=f"{model.name}-features",
    )
