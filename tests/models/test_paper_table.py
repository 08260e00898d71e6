"""Our variants' multiply-adds against Tan & Le 2019 Table 2 and Tan & Le 2021 (V2)."""

import pytest

import effnet_tl

# Paper FLOPs (multiply-adds) in billions, at each variant's native resolution.
PAPER_V1 = {"b0": 0.39, "b1": 0.70, "b2": 1.0, "b3": 1.8, "b4": 4.2, "b5": 9.9, "b6": 19,
            "b7": 37}
# EfficientNetV2 paper Table 7, at the inference resolution (384 / 480 / 480).
PAPER_V2 = {"v2-s": 8.4, "v2-m": 24.7, "v2-l": 56.3}


def _gmacs(variant):
    return effnet_tl.profile(effnet_tl.backbone(variant, include_top=True)).multiply_adds / 1e9


@pytest.mark.parametrize(
    "variant", ["b0"] + [pytest.param(v, marks=pytest.mark.slow) for v in PAPER_V1 if v != "b0"])
def test_v1_flops_within_5_percent_of_the_paper(variant):
    assert _gmacs(variant) == pytest.approx(PAPER_V1[variant], rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(PAPER_V2))
def test_v2_flops_near_the_paper(variant):
    assert _gmacs(variant) == pytest.approx(PAPER_V2[variant], rel=0.01)


def test_flops_grow_about_2_to_the_phi():
    """Compound scaling's promise, on our own custom variants: φ=1 costs ≈ 2× φ=0."""
    base = effnet_tl.profile(effnet_tl.backbone(effnet_tl.custom_variant(0))).multiply_adds
    scaled = effnet_tl.profile(effnet_tl.backbone(effnet_tl.custom_variant(1))).multiply_adds
    assert 1.6 < scaled / base < 2.3
