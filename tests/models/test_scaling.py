"""Compound scaling and rounding against the paper's formulas and keras.applications' tables."""

import math

import pytest

from effnet_tl import compound_scaling, custom_variant, get_variant
from effnet_tl.models import round_filters, round_repeats, scaled_stage_layout


@pytest.mark.parametrize("phi", [1, 2, 3, 4, 5, 6, 7])
def test_multipliers_follow_powers(phi):
    m = compound_scaling(phi)
    assert m.depth == pytest.approx(1.2**phi)
    assert m.width == pytest.approx(1.1**phi)
    assert m.resolution == pytest.approx(1.15**phi)
    # α·β²·γ² ≈ 2, so FLOPs grow by about 2^φ (1.92^φ with the paper's rounded values).
    assert m.flops_factor == pytest.approx((1.2 * 1.1**2 * 1.15**2) ** phi)
    assert 1.9**phi < m.flops_factor < 2.0**phi


def test_custom_bases():
    m = compound_scaling(2, alpha=1.4, beta=1.2, gamma=1.0)
    assert (m.depth, m.width, m.resolution) == pytest.approx((1.96, 1.44, 1.0))


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "2"])
def test_bad_phi_echoes_value(bad):
    with pytest.raises(ValueError, match="phi="):
        compound_scaling(bad)


def test_round_filters_matches_reference_rule():
    # Hand-computed with the reference rule: nearest multiple of 8, never 10% below.
    assert round_filters(32, 1.0) == 32
    assert round_filters(32, 1.8) == 56  # 57.6 → 56 (within 10%)
    assert round_filters(16, 1.4) == 24  # 22.4 → 24
    assert round_filters(40, 2.0) == 80
    assert round_filters(20, 1.0) == 24
    assert round_filters(12, 1.0) == 16  # 12 → 16 (nearest-up tie)
    assert round_filters(44, 1.0, keep_within_10_percent=True) == 48
    assert round_filters(36, 1.1, keep_within_10_percent=True) == 40  # 39.6 → 40
    assert round_filters(100, 0.25) == 24  # 25 → 24 (not below 22.5)
    assert round_filters(100, 0.24, keep_within_10_percent=False) == 24
    assert round_filters(3, 1.0) == 8  # never below the divisor


def test_round_repeats_ceil():
    assert [round_repeats(r, 3.1) for r in (1, 2, 3, 4)] == [4, 7, 10, 13]
    assert round_repeats(2, 1.1) == 3


@pytest.mark.parametrize(
    "variant, blocks",
    # Block counts of keras.applications' models (layers named blockNx_project_conv).
    [("b0", 16), ("b1", 23), ("b3", 26), ("b7", 55), ("v2-b0", 21), ("v2-s", 40), ("v2-l", 79),
     ("lite0", 16), ("lite4", 30)],
)
def test_block_counts(variant, blocks):
    assert len(scaled_stage_layout(get_variant(variant))) == blocks


def test_lite_keeps_edge_stages_unscaled():
    layout = scaled_stage_layout(get_variant("lite4"))
    stage1 = [b for b in layout if b["name"].startswith("block1")]
    stage7 = [b for b in layout if b["name"].startswith("block7")]
    assert len(stage1) == 1 and len(stage7) == 1  # B4 would have 2 and 2


def test_custom_phi_variant():
    spec = custom_variant(2.5)
    assert spec.depth == pytest.approx(1.2**2.5)
    assert spec.width == pytest.approx(1.1**2.5)
    assert spec.resolution == 8 * round(224 * 1.15**2.5 / 8)
    explicit = custom_variant(width=1.3, depth=1.7, resolution=96)
    assert (explicit.width, explicit.depth, explicit.resolution) == (1.3, 1.7, 96)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"width": 0}, "width=0"), ({"depth": -1.0}, "depth=-1.0"), ({"resolution": 16}, "resolution=16"),
     ({}, "needs phi")],
)
def test_custom_variant_rejects_bad_multipliers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        custom_variant(**kwargs)


def test_unknown_variant_lists_the_accepted_names():
    with pytest.raises(ValueError, match=r"Unknown variant 'b9'.*b0.*v2-s.*lite4"):
        get_variant("b9")


def test_variant_aliases():
    assert get_variant("EfficientNetB3") is get_variant("b3")
    assert get_variant("efficientnetv2-s") is get_variant("v2-s")
    assert get_variant("V2B1") is get_variant("v2-b1")
    assert math.isclose(get_variant("b7").depth, 3.1)
