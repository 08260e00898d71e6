"""Compound scaling as pure functions (Tan & Le 2019, §3.3).

Depth, width and resolution grow together with one coefficient φ: depth ``α^φ``, width
``β^φ``, resolution ``γ^φ``, with ``α·β²·γ² ≈ 2`` so each unit of φ roughly doubles FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PAPER_ALPHA = 1.2
PAPER_BETA = 1.1
PAPER_GAMMA = 1.15


@dataclass(frozen=True)
class ScalingMultipliers:
    """Multipliers applied to the base network (B0)."""

    depth: float
    width: float
    resolution: float

    @property
    def flops_factor(self) -> float:
        """Expected FLOPs growth: depth · width² · resolution²."""
        return self.depth * self.width**2 * self.resolution**2


def compound_scaling(
    phi: float, alpha: float = PAPER_ALPHA, beta: float = PAPER_BETA, gamma: float = PAPER_GAMMA
) -> ScalingMultipliers:
    """Depth, width and resolution multipliers for compound coefficient ``phi``.

    Args:
        phi: compound coefficient (any real number ≥ 0; fractions allowed).
        alpha: depth base (paper: 1.2).
        beta: width base (paper: 1.1).
        gamma: resolution base (paper: 1.15).

    Returns:
        ``ScalingMultipliers(depth=alpha**phi, width=beta**phi, resolution=gamma**phi)``.

    Example:
        >>> m = compound_scaling(1)
        >>> (m.depth, m.width, m.resolution)
        (1.2, 1.1, 1.15)
        >>> round(compound_scaling(2).flops_factor, 2)  # (α·β²·γ²)^φ = 1.92^φ ≈ 2^φ
        3.69
    """
    for label, value in (("phi", phi), ("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
            raise ValueError(f"{label}={value!r} must be a finite number.")
    if phi < 0:
        raise ValueError(f"phi={phi!r} must be >= 0 (0 is the base network).")
    for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value < 1:
            raise ValueError(f"{label}={value!r} must be >= 1: scaling never shrinks the network.")
    return ScalingMultipliers(depth=alpha**phi, width=beta**phi, resolution=gamma**phi)


def round_filters(
    filters: int, width: float, *, divisor: int = 8, min_filters: int | None = None,
    keep_within_10_percent: bool = True,
) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor``.

    Args:
        filters: unscaled channel count.
        width: width multiplier.
        divisor: channel counts are multiples of this (hardware friendly).
        min_filters: lower bound (defaults to ``divisor``).
        keep_within_10_percent: V1 rule: if rounding lost more than 10%, add one ``divisor``.
            EfficientNetV2 does not apply it.

    Example:
        >>> round_filters(32, 1.1), round_filters(1280, 2.0), round_filters(20, 1.0)
        (32, 2560, 24)
    """
    scaled = filters * width
    rounded = max(min_filters or divisor, int(scaled + divisor / 2) // divisor * divisor)
    if keep_within_10_percent and rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth``, rounding up.

    Example:
        >>> round_repeats(3, 1.4), round_repeats(1, 3.1)
        (5, 4)
    """
    return int(math.ceil(depth * repeats))


def round_resolution(base_resolution: int, resolution: float, *, divisor: int = 8) -> int:
    """Scale an input size and round it to a multiple of ``divisor`` (at least 32).

    Example:
        >>> round_resolution(224, 1.15 ** 0.5)
        240
    """
    return max(32, int(round(base_resolution * resolution / divisor)) * divisor)
