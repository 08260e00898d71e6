"""effnet_tl: a folder of images in, a well-trained EfficientNet classifier out."""

from effnet_tl.models import (
    VARIANTS,
    VariantSpec,
    backbone,
    compound_scaling,
    custom_variant,
    feature_extractor,
    get_variant,
    profile,
)

__version__ = "0.1.0"

__all__ = [
    "VARIANTS", "VariantSpec", "backbone", "compound_scaling", "custom_variant",
    "feature_extractor", "get_variant", "profile",
]
