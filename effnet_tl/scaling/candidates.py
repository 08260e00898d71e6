"""Candidates of the compound-scaling search: grid points (α, β, γ) whose networks, built and
measured, cost 2^φ times the base.

The paper (Tan & Le 2019, §3.3) fixes φ = 1 and searches α (depth), β (width) and γ
(resolution) under ``α·β²·γ² ≈ 2``, so every candidate costs about twice the base. That product
is only the ideal FLOPs ratio: block counts are rounded up, channel counts to multiples of 8 and
the input side to whole pixels, and on a small base those roundings move the real cost a lot.
So each grid point is built and its multiply-adds are counted with
:func:`effnet_tl.models.profile`; points whose measured cost is not within ``flops_tolerance``
of ``2^φ ×`` the base's are rejected, with the measured ratio as the reason, and grid points
that build the same network are merged.

Which candidates are trained, when the budget is smaller than the grid, is decided by
:func:`spread`: farthest-point sampling on how each candidate splits the doubling between
depth, width and resolution, from the paper's split outwards, so a small budget covers the
corners (all depth, all width, all resolution) before the middle, and a larger budget only adds
to a smaller one's picks.

Example:
    >>> points = grid_points({"alpha": [1.0, 1.2, 2.0], "beta": [1.0, 1.1],
    ...                       "gamma": [1.0, 1.15]}, product_tolerance=0.05)
    >>> [(p.alpha, p.beta, p.gamma) for p in points]
    [(1.2, 1.1, 1.15), (2.0, 1.0, 1.0)]
    >>> [round(share, 2) for share in points[0].shares]
    [0.28, 0.29, 0.43]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from effnet_tl.models import compound_scaling, custom_variant, get_variant
from effnet_tl.models.scaling import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA
from effnet_tl.models.variants import VariantSpec

__all__ = [
    "DEFAULT_GRID",
    "Candidate",
    "GridPoint",
    "base_spec",
    "choose",
    "grid_points",
    "measure",
    "scaled_spec",
    "spread",
]

PRODUCT_TARGET = 2.0


def _steps(low: float, high: float, step: float) -> tuple[float, ...]:
    count = round((high - low) / step)
    return tuple(round(low + i * step, 4) for i in range(count + 1))


#: α from 1 to 2 (all of the doubling in depth), β and γ from 1 to 1.45 (√2 ≈ 1.41: all of it
#: in width, or in resolution).
DEFAULT_GRID = {
    "alpha": _steps(1.0, 2.0, 0.1),
    "beta": _steps(1.0, 1.45, 0.05),
    "gamma": _steps(1.0, 1.45, 0.05),
}


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One (α, β, γ) of the grid."""

    alpha: float
    beta: float
    gamma: float

    @property
    def product(self) -> float:
        """``α·β²·γ²``: the ideal FLOPs factor per unit of φ."""
        return compound_scaling(1, self.alpha, self.beta, self.gamma).flops_factor

    @property
    def shares(self) -> tuple[float, float, float]:
        """How the FLOPs growth splits between depth, width and resolution (sums to 1)."""
        parts = (math.log(self.alpha), 2 * math.log(self.beta), 2 * math.log(self.gamma))
        total = sum(parts)
        return tuple(part / total for part in parts) if total > 0 else (1 / 3, 1 / 3, 1 / 3)

    @property
    def name(self) -> str:
        return f"a{self.alpha:.2f}-b{self.beta:.2f}-g{self.gamma:.2f}"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A grid point built on the base and measured.

    Attributes:
        point: the (α, β, γ) it came from.
        spec: the network at the search's φ (depth α^φ, width β^φ times the base's, input side
            γ^φ times the base resolution, rounded to whole pixels).
        resolution: input side in pixels.
        blocks: MBConv blocks after depth rounding.
        multiply_adds: measured multiply-adds of the backbone for one image.
        params: backbone parameters.
        flops_ratio: ``multiply_adds`` over the base's.
    """

    point: GridPoint
    spec: VariantSpec
    resolution: int
    blocks: int
    multiply_adds: int
    params: int
    flops_ratio: float

    @property
    def name(self) -> str:
        return self.point.name

    def to_dict(self) -> dict:
        return {"name": self.name, "alpha": self.point.alpha, "beta": self.point.beta,
                "gamma": self.point.gamma, "product": round(self.point.product, 4),
                "depth": round(self.spec.depth, 4), "width": round(self.spec.width, 4),
                "resolution": self.resolution, "blocks": self.blocks,
                "multiply_adds": self.multiply_adds, "params": self.params,
                "flops_ratio": round(self.flops_ratio, 4)}


def grid_points(grid=None, *, product_tolerance: float = 0.05) -> list[GridPoint]:
    """The grid's (α, β, γ) with ``|α·β²·γ² - 2| <= product_tolerance × 2``, nearest to the
    paper's split first.

    Args:
        grid: ``None`` (:data:`DEFAULT_GRID`), ``{"alpha": [...], "beta": [...], "gamma":
            [...]}`` (their product), or a sequence of ``(α, β, γ)`` triples. Every value
            must be >= 1 (scaling never shrinks the base); an explicit triple off the
            constraint is an error, a product grid just keeps the points on it.
        product_tolerance: relative tolerance on ``α·β²·γ² = 2``.

    Raises:
        ValueError: a value below 1, an explicit triple off the constraint, or no point left.
    """
    if not (isinstance(product_tolerance, (int, float)) and 0 < product_tolerance < 1):
        raise ValueError(f"product_tolerance={product_tolerance!r} must be in (0, 1).")
    explicit = grid is not None and not isinstance(grid, Mapping)
    points = [GridPoint(*map(float, triple)) for triple in _triples(grid)]
    for point in points:
        if min(point.alpha, point.beta, point.gamma) < 1:
            raise ValueError(f"grid point {(point.alpha, point.beta, point.gamma)} has a value "
                             "below 1: alpha, beta and gamma are growth factors (>= 1)")
    kept = [p for p in points
            if abs(p.product - PRODUCT_TARGET) <= product_tolerance * PRODUCT_TARGET]
    if explicit and len(kept) < len(points):
        off = [(p.alpha, p.beta, p.gamma, round(p.product, 3)) for p in points if p not in kept]
        raise ValueError(f"grid points off alpha*beta^2*gamma^2 = 2 (within "
                         f"{product_tolerance:.0%}): {off}")
    if not kept:
        raise ValueError(f"no point of grid={grid!r} has alpha*beta^2*gamma^2 within "
                         f"{product_tolerance:.0%} of 2")
    paper = GridPoint(PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA).shares
    unique = list(dict.fromkeys(kept))
    return sorted(unique, key=lambda p: (_distance(p.shares, paper), p.name))


def _triples(grid) -> Iterable[Sequence[float]]:
    if grid is None:
        grid = DEFAULT_GRID
    if isinstance(grid, Mapping):
        missing = {"alpha", "beta", "gamma"} - set(grid)
        extra = set(grid) - {"alpha", "beta", "gamma"}
        if missing or extra:
            raise ValueError(f"grid keys must be 'alpha', 'beta', 'gamma'; got {sorted(grid)}")
        return [(a, b, g) for a in grid["alpha"] for b in grid["beta"] for g in grid["gamma"]]
    triples = list(grid)
    if not triples or any(len(t) != 3 for t in triples):
        raise ValueError(f"grid={grid!r} must be a dict of value lists or (alpha, beta, gamma) "
                         "triples")
    return triples


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.dist(a, b)


def base_spec(base: str | VariantSpec, base_resolution: int) -> VariantSpec:
    """The base variant at the search's input side (its depth and width untouched)."""
    return dataclasses.replace(get_variant(base), resolution=base_resolution)


def scaled_spec(base: VariantSpec, point: GridPoint, phi: float) -> VariantSpec:
    """``base`` grown by ``point`` at compound coefficient ``phi`` (input side rounded to a
    whole pixel: at a 32-48 px base, custom_variant's multiples of 8 would be 20 % steps)."""
    grow = compound_scaling(phi, point.alpha, point.beta, point.gamma)
    return custom_variant(width=base.width * grow.width, depth=base.depth * grow.depth,
                          resolution=round(base.resolution * grow.resolution), base=base,
                          name=f"{base.name}-{point.name}")


def architecture(spec: VariantSpec) -> tuple:
    """What decides the built network: equal keys build identical models."""
    # Imported here: the builder's module imports Keras, which `effnet-tl scale-search --help`
    # (this module's DEFAULT_GRID) does not need.
    from effnet_tl.models.efficientnet import scaled_stage_layout, stem_filters, top_filters

    layout = tuple(tuple(sorted(block.items())) for block in scaled_stage_layout(spec))
    return (spec.family, spec.activation, spec.resolution, stem_filters(spec), top_filters(spec),
            layout)


_MEASURED: dict[tuple, dict] = {}  # architecture -> cost, for every search of this process


def measure(spec: VariantSpec) -> dict:
    """Multiply-adds and parameters of ``spec``'s pooled backbone for one image, counted by
    :func:`effnet_tl.models.profile` on the built model (remembered per architecture)."""
    key = architecture(spec)
    if key not in _MEASURED:
        import gc

        from effnet_tl.models import backbone, profile

        model = backbone(spec, weights=None, pooling="avg")
        counted = profile(model)
        _MEASURED[key] = {"multiply_adds": counted.multiply_adds, "params": counted.total_params}
        del model
        gc.collect()  # a search builds dozens of models; keep memory flat
    return dict(_MEASURED[key])


def choose(points: Sequence[GridPoint], budget: int, *, base: VariantSpec, phi: float,
           flops_tolerance: float, known: dict | None = None
           ) -> tuple[dict, list[Candidate], list[dict]]:
    """Measure grid points, in :func:`spread` order, until ``budget`` are accepted.

    A point is accepted when its network's measured multiply-adds are within
    ``flops_tolerance`` of ``2**phi`` times the base's and it builds a network no accepted
    point builds.

    Args:
        points: from :func:`grid_points`.
        budget: how many candidates to accept.
        base: the base variant at the search's base resolution.
        phi: compound coefficient of the candidates (the paper's search: 1).
        flops_tolerance: relative tolerance on the measured cost.
        known: ``{point name: cost}`` measured earlier (``search.json``); filled in.

    Returns:
        ``(base cost, accepted candidates, rejected points with the reason)``.
    """
    known = {} if known is None else known
    if "base" not in known:
        known["base"] = measure(base)
    base_cost = known["base"]
    target = PRODUCT_TARGET**phi
    built: dict[tuple, str] = {}
    rejected: list[dict] = []

    def accept(point: GridPoint) -> Candidate | None:
        spec = scaled_spec(base, point, phi)
        key = architecture(spec)
        if point.name not in known:
            known[point.name] = measure(spec)
        cost = known[point.name]
        ratio = cost["multiply_adds"] / base_cost["multiply_adds"]
        reason = None
        if key in built:
            reason = f"builds the same network as {built[key]}"
        elif abs(ratio / target - 1) > flops_tolerance:
            reason = (f"measured {ratio:.3f}x the base's multiply-adds, not within "
                      f"{flops_tolerance:.0%} of {target:g}x")
        if reason is not None:
            rejected.append({"name": point.name, "alpha": point.alpha, "beta": point.beta,
                             "gamma": point.gamma, "flops_ratio": round(ratio, 4),
                             "reason": reason})
            return None
        built[key] = point.name
        return Candidate(point, spec, spec.resolution, len(architecture(spec)[-1]),
                         cost["multiply_adds"], cost["params"], ratio)

    return base_cost, spread(points, budget, accept), rejected


def spread(points: Sequence[GridPoint], budget: int,
           accept: Callable[[GridPoint], object | None] = lambda point: point) -> list:
    """Up to ``budget`` accepted points, spread over the depth/width/resolution split.

    Farthest-point sampling on :attr:`GridPoint.shares`, anchored at the paper's split: each
    try is the point farthest from the paper's split and from every point accepted so far, so
    the corners (all depth, all width, all resolution) come first and the middle fills in
    after. ``accept`` returns what to keep for a point (a measured :class:`Candidate`), or
    ``None`` to reject it (its measured cost is off, or it builds a network already kept).
    The picks of a budget are a prefix of a larger budget's, so raising the budget of a
    search adds trials and reuses the others.

    Example:
        >>> pts = grid_points(product_tolerance=0.05)
        >>> [p.name for p in spread(pts, 4)]
        ['a2.00-b1.00-g1.00', 'a1.00-b1.40-g1.00', 'a1.00-b1.00-g1.40', 'a1.50-b1.15-g1.00']
    """
    anchor = GridPoint(PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA).shares
    remaining = list(points)
    picked: list[tuple[GridPoint, object]] = []
    while remaining and len(picked) < budget:
        point = max(remaining, key=lambda p: min(
            [_distance(p.shares, anchor)] + [_distance(p.shares, q.shares) for q, _ in picked]))
        remaining.remove(point)
        kept = accept(point)
        if kept is not None:
            picked.append((point, kept))
    return [kept for _, kept in picked]
