"""EfficientNet family: block tables, compound scaling, the builder, weights and profiling."""

from effnet_tl.models.efficientnet import backbone, feature_extractor, scaled_stage_layout
from effnet_tl.models.profile import ModelProfile, profile, variant_table
from effnet_tl.models.scaling import (
    ScalingMultipliers,
    compound_scaling,
    round_filters,
    round_repeats,
    round_resolution,
)
from effnet_tl.models.variants import VARIANTS, VariantSpec, custom_variant, get_variant
from effnet_tl.models.weights import WeightsMismatchError, WeightsUnavailableError

__all__ = [
    "VARIANTS", "ModelProfile", "ScalingMultipliers", "VariantSpec", "WeightsMismatchError",
    "WeightsUnavailableError", "backbone", "compound_scaling", "custom_variant",
    "feature_extractor", "get_variant", "profile", "variant_table", "round_filters", "round_repeats", "round_resolution",
    "scaled_stage_layout",
]
