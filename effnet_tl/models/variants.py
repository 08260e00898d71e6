"""Named EfficientNet variants (official coefficients) and custom compound-scaled ones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from effnet_tl.models import block_tables
from effnet_tl.models.block_tables import StageArgs
from effnet_tl.models.scaling import compound_scaling, round_resolution

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STDDEV = (0.229, 0.224, 0.225)
IMAGENET_VARIANCE = tuple(std**2 for std in IMAGENET_STDDEV)


@dataclass(frozen=True)
class Preprocessing:
    """``(pixels * scale - mean) / sqrt(variance)``, what the family's weights were trained on."""

    scale: float
    mean: tuple[float, float, float]
    variance: tuple[float, float, float]
    statistics_as_weights: bool = False


V1_PREPROCESSING = Preprocessing(1 / 255, IMAGENET_MEAN, IMAGENET_VARIANCE, True)
V2_B_PREPROCESSING = Preprocessing(1 / 255, IMAGENET_MEAN, IMAGENET_VARIANCE, False)
V2_SML_PREPROCESSING = Preprocessing(1 / 128, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), False)
LITE_PREPROCESSING = Preprocessing(1.0, (127.0,) * 3, (128.0**2,) * 3, False)


@dataclass(frozen=True)
class VariantSpec:
    """Everything the builder needs to lay out one EfficientNet.

    Attributes:
        name: variant name ("b0", "v2-s", "lite2", or a custom label).
        family: "v1", "v2" or "lite" (decides rounding rules and weight sources).
        stages: the unscaled block table.
        width: width multiplier.
        depth: depth multiplier.
        resolution: native input size in pixels.
        dropout_rate: dropout before the classifier.
        activation: block activation.
        bn_momentum: BatchNormalization momentum.
        bn_epsilon: BatchNormalization epsilon.
        stem_filters: unscaled stem width.
        top_filters: unscaled width of the final 1×1 convolution.
        scale_stem_and_top: False for Lite, whose stem and head stay fixed.
        scale_edge_repeats: False for Lite, whose first and last stages keep their depth.
        preprocessing: input normalisation the weights expect.
    """

    name: str
    family: Literal["v1", "v2", "lite"]
    stages: tuple[StageArgs, ...]
    width: float
    depth: float
    resolution: int
    dropout_rate: float
    activation: str = "swish"
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    stem_filters: int = 32
    top_filters: int = 1280
    scale_stem_and_top: bool = True
    scale_edge_repeats: bool = True
    preprocessing: Preprocessing = field(default=V1_PREPROCESSING)

    def __post_init__(self):
        for label in ("width", "depth"):
            value = getattr(self, label)
            if not value > 0:
                raise ValueError(f"{label}={value!r} must be a positive multiplier.")
        if not (isinstance(self.resolution, int) and self.resolution >= 32):
            raise ValueError(f"resolution={self.resolution!r} must be an integer >= 32 pixels.")
        if not 0 <= self.dropout_rate < 1:
            raise ValueError(f"dropout_rate={self.dropout_rate!r} must be in [0, 1).")
        if self.family not in ("v1", "v2", "lite"):
            raise ValueError(f"family={self.family!r}; accepted: 'v1', 'v2', 'lite'.")


def _v1(name, width, depth, resolution, dropout):
    return VariantSpec(name, "v1", block_tables.EFFICIENTNET_V1, width, depth, resolution, dropout)


def _lite(name, width, depth, resolution, dropout):
    return VariantSpec(
        name, "lite", block_tables.EFFICIENTNET_LITE, width, depth, resolution, dropout,
        activation="relu6", scale_stem_and_top=False, scale_edge_repeats=False,
        preprocessing=LITE_PREPROCESSING,
    )


def _v2(name, stages, width, depth, resolution, dropout=0.2):
    preprocessing = V2_B_PREPROCESSING if name.startswith("v2-b") else V2_SML_PREPROCESSING
    return VariantSpec(
        name, "v2", stages, width, depth, resolution, dropout, bn_momentum=0.9,
        stem_filters=stages[0].filters_in, preprocessing=preprocessing,
    )


_B0_V2 = block_tables.EFFICIENTNET_V2_B0
VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in [
        # Tan & Le 2019 / keras.applications: width, depth, resolution, dropout.
        _v1("b0", 1.0, 1.0, 224, 0.2),
        _v1("b1", 1.0, 1.1, 240, 0.2),
        _v1("b2", 1.1, 1.2, 260, 0.3),
        _v1("b3", 1.2, 1.4, 300, 0.3),
        _v1("b4", 1.4, 1.8, 380, 0.4),
        _v1("b5", 1.6, 2.2, 456, 0.4),
        _v1("b6", 1.8, 2.6, 528, 0.5),
        _v1("b7", 2.0, 3.1, 600, 0.5),
        _v2("v2-b0", _B0_V2, 1.0, 1.0, 224),
        _v2("v2-b1", _B0_V2, 1.0, 1.1, 240),
        _v2("v2-b2", _B0_V2, 1.1, 1.2, 260),
        _v2("v2-b3", _B0_V2, 1.2, 1.4, 300),
        _v2("v2-s", block_tables.EFFICIENTNET_V2_S, 1.0, 1.0, 384),
        _v2("v2-m", block_tables.EFFICIENTNET_V2_M, 1.0, 1.0, 480),
        _v2("v2-l", block_tables.EFFICIENTNET_V2_L, 1.0, 1.0, 480),
        # EfficientNet-Lite (TF official efficientnet_lite_builder): ReLU6, no SE.
        _lite("lite0", 1.0, 1.0, 224, 0.2),
        _lite("lite1", 1.0, 1.1, 240, 0.2),
        _lite("lite2", 1.1, 1.2, 260, 0.3),
        _lite("lite3", 1.2, 1.4, 280, 0.3),
        _lite("lite4", 1.4, 1.8, 300, 0.3),
    ]
}


def get_variant(variant: str | VariantSpec) -> VariantSpec:
    """Look up a named variant ("b0"…"b7", "v2-b0"…"v2-l", "lite0"…"lite4") or pass a spec through.

    Example:
        >>> get_variant("B3").resolution
        300
    """
    if isinstance(variant, VariantSpec):
        return variant
    key = str(variant).strip().lower().replace("_", "-")
    for prefix in ("efficientnet-", "efficientnet"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = key.replace("v2b", "v2-b").replace("v2s", "v2-s").replace("v2m", "v2-m")
    key = key.replace("v2l", "v2-l")
    if key not in VARIANTS:
        raise ValueError(
            f"Unknown variant {variant!r}. Accepted: {', '.join(VARIANTS)}, a VariantSpec, or "
            "custom_variant(phi=...) for any compound coefficient."
        )
    return VARIANTS[key]


def custom_variant(
    phi: float | None = None,
    *,
    width: float | None = None,
    depth: float | None = None,
    resolution: int | None = None,
    base: str | VariantSpec = "b0",
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    dropout_rate: float | None = None,
    name: str | None = None,
) -> VariantSpec:
    """A compound-scaled variant from any ``phi`` (e.g. 0.5, 2.5) or explicit multipliers.

    ``phi`` scales ``base`` by ``alpha**phi`` in depth, ``beta**phi`` in width and
    ``gamma**phi`` in resolution (rounded to a multiple of 8); explicit ``width``/``depth``/
    ``resolution`` override the corresponding part.

    Example:
        >>> spec = custom_variant(0.5)
        >>> spec.name, round(spec.depth, 4), round(spec.width, 4), spec.resolution
        ('b0-phi0.5', 1.0954, 1.0488, 240)
    """
    base_spec = get_variant(base)
    if phi is None and width is None and depth is None and resolution is None:
        raise ValueError("custom_variant needs phi=... or at least one of width/depth/resolution.")
    multipliers = compound_scaling(phi if phi is not None else 0, alpha, beta, gamma)
    for label, value in (("width", width), ("depth", depth)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{label}={value!r} must be a positive multiplier.")
    if resolution is not None and not (isinstance(resolution, int) and resolution >= 32):
        raise ValueError(f"resolution={resolution!r} must be an integer >= 32 pixels.")
    new_width = width if width is not None else base_spec.width * multipliers.width
    new_depth = depth if depth is not None else base_spec.depth * multipliers.depth
    new_resolution = (
        resolution if resolution is not None
        else round_resolution(base_spec.resolution, multipliers.resolution)
    )
    if name is None:
        name = f"{base_spec.name}-phi{phi:g}" if phi is not None else (
            f"{base_spec.name}-w{new_width:g}-d{new_depth:g}-r{new_resolution}")
    return dataclasses.replace(
        base_spec, name=name, width=new_width, depth=new_depth, resolution=new_resolution,
        dropout_rate=base_spec.dropout_rate if dropout_rate is None else dropout_rate,
    )
