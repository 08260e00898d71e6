"""EfficientNet family: block tables, compound scaling, the builder, weights and profiling.

Names load on first use (PEP 562): the variant tables and the scaling rules are plain Python,
which the command line reads without importing TensorFlow; the builder imports Keras.
"""

from effnet_tl.lazy import export_lazily

_EXPORTS = {
    "backbone": "efficientnet",
    "feature_extractor": "efficientnet",
    "scaled_stage_layout": "efficientnet",
    "ModelProfile": "profile",
    "profile": "profile",
    "variant_table": "profile",
    "ScalingMultipliers": "scaling",
    "compound_scaling": "scaling",
    "round_filters": "scaling",
    "round_repeats": "scaling",
    "round_resolution": "scaling",
    "VARIANTS": "variants",
    "VariantSpec": "variants",
    "custom_variant": "variants",
    "get_variant": "variants",
    "WeightsMismatchError": "weights",
    "WeightsUnavailableError": "weights",
}

export_lazily(__name__, _EXPORTS)
