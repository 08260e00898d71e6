"""What the compound-scaling search returns: the trial table, the choice, and its plot.

The choice: the best held-out accuracy, unless a cheaper candidate is within one standard error
of it (binomial, on the held-out images, at least one image); among those, the highest accuracy
per multiply-add wins. Candidates all cost about ``2^φ`` times the base, so this only prefers
the cheaper ones when the accuracy cannot tell them apart.

Example:
    >>> rows = [{"name": "deep", "accuracy": 0.52, "multiply_adds": 2_000_000},
    ...         {"name": "sharp", "accuracy": 0.97, "multiply_adds": 2_100_000},
    ...         {"name": "wide", "accuracy": 0.96, "multiply_adds": 1_900_000}]
    >>> index, margin = choose(rows, held_out=100)
    >>> rows[index]["name"], round(margin, 3)
    ('wide', 0.017)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

from effnet_tl.models import custom_variant
from effnet_tl.models.variants import VariantSpec

__all__ = ["SearchResult", "choose", "format_table", "plot_search"]


def choose(rows: Sequence[dict], *, held_out: int) -> tuple[int, float]:
    """Index of the chosen row and the accuracy margin that counted as a tie.

    Args:
        rows: trials with ``accuracy`` (held-out, ``None`` when a trial produced none) and
            ``multiply_adds``.
        held_out: number of held-out images the accuracies were measured on.
    """
    scored = [i for i, row in enumerate(rows) if isinstance(row.get("accuracy"), (int, float))]
    if not scored:
        raise ValueError("no trial produced a held-out accuracy")
    top = max(rows[i]["accuracy"] for i in scored)
    count = max(1, held_out)
    margin = max(math.sqrt(top * (1 - top) / count), 1 / count)
    tied = [i for i in scored if rows[i]["accuracy"] >= top - margin - 1e-12]
    return max(tied, key=lambda i: (rows[i]["accuracy"] / rows[i]["multiply_adds"],
                                    rows[i]["accuracy"], -i)), margin


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`effnet_tl.scaling.search`.

    Attributes:
        table: one dict per trial in the order they were tried: ``name``, ``alpha``,
            ``beta``, ``gamma``, ``depth``, ``width`` (multipliers of the built network),
            ``resolution``, ``blocks``, ``multiply_adds``, ``params``, ``flops_ratio``
            (measured, over the base), ``accuracy`` (held-out), ``val_accuracy`` (the split
            that picked the kept epoch), ``accuracy_per_gmac``, ``seconds``, ``status``
            (``"trained"`` by this call or ``"loaded"`` from the search folder), ``run_dir``
            and ``chosen``.
        chosen: the chosen row of ``table``.
        margin: accuracies within this of the best counted as ties (one standard error).
        base: the base variant at the search's base resolution.
        base_variant: the base at its own resolution: what :meth:`variant` scales.
        base_multiply_adds: measured cost of the base.
        phi: compound coefficient of the candidates.
        rejected: grid points measured and left out, each with its ``reason``.
        search_dir: the search folder; ``plot``: its PNG.
        data: the trials' data (split sizes per class).
    """

    table: list[dict]
    chosen: dict
    margin: float
    base: VariantSpec
    base_variant: VariantSpec
    base_multiply_adds: int
    phi: float
    rejected: list[dict]
    search_dir: Path
    plot: Path
    data: dict

    @property
    def coefficients(self) -> tuple[float, float, float]:
        """The chosen ``(alpha, beta, gamma)``."""
        return self.chosen["alpha"], self.chosen["beta"], self.chosen["gamma"]

    def variant(self, phi: float = 1.0, *, base: str | VariantSpec | None = None) -> VariantSpec:
        """The chosen coefficients applied to ``base`` (default: the searched base at its own
        resolution) at compound coefficient ``phi``: train it with
        ``effnet_tl.fit(..., variant=result.variant(phi), weights=None)``."""
        alpha, beta, gamma = self.coefficients
        return custom_variant(phi, alpha=alpha, beta=beta, gamma=gamma,
                              base=self.base_variant if base is None else base)

    def format_table(self) -> str:
        return format_table(self.table)

    def to_dict(self) -> dict:
        """JSON-ready summary (``effnet-tl scale-search`` prints it)."""
        alpha, beta, gamma = self.coefficients
        return {"search_dir": str(self.search_dir), "plot": str(self.plot),
                "chosen": {"name": self.chosen["name"], "alpha": alpha, "beta": beta,
                           "gamma": gamma, "accuracy": self.chosen["accuracy"],
                           "resolution": self.chosen["resolution"],
                           "multiply_adds": self.chosen["multiply_adds"]},
                "margin": round(self.margin, 4), "phi": self.phi,
                "base": {"name": self.base.name, "resolution": self.base.resolution,
                         "multiply_adds": self.base_multiply_adds},
                "trials": self.table, "rejected": len(self.rejected), "data": self.data}


def format_table(rows: Sequence[dict]) -> str:
    """The trial table as aligned text, the chosen row marked ``*``."""
    header = (f"  {'candidate':<18} {'blocks':>6} {'px':>4} {'MMACs':>8} {'xbase':>6} "
              f"{'held-out':>8} {'acc/GMAC':>9} {'s':>6}  status")
    lines = [header]
    for row in rows:
        accuracy = row.get("accuracy")
        lines.append(
            f"{'*' if row.get('chosen') else ' '} {row['name']:<18} {row['blocks']:>6} "
            f"{row['resolution']:>4} {row['multiply_adds'] / 1e6:>8.2f} "
            f"{row['flops_ratio']:>6.3f} "
            + (f"{accuracy:>8.3f} {row['accuracy_per_gmac']:>9.1f}" if accuracy is not None
               else f"{'-':>8} {'-':>9}")
            + f" {row.get('seconds') or 0:>6.1f}  {row.get('status', '')}")
    return "\n".join(lines)


def plot_search(rows: Sequence[dict], path: str | Path, *, base_multiply_adds: int, phi: float,
                flops_tolerance: float, num_classes: int) -> Path:
    """Held-out accuracy against measured multiply-adds, each point labelled ``α/β/γ``, the
    chosen one starred, the target cost (``2^φ ×`` base, ± tolerance) shaded.

    Example:
        >>> import os, tempfile
        >>> rows = [{"name": "a", "alpha": 2.0, "beta": 1.0, "gamma": 1.0, "accuracy": 0.5,
        ...          "multiply_adds": 2e6, "chosen": False},
        ...         {"name": "b", "alpha": 1.0, "beta": 1.0, "gamma": 1.4, "accuracy": 0.9,
        ...          "multiply_adds": 2.1e6, "chosen": True}]
        >>> plot_search(rows, os.path.join(tempfile.mkdtemp(), "s.png"), base_multiply_adds=10**6,
        ...             phi=1, flops_tolerance=0.1, num_classes=2).suffix
        '.png'
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.8))
    axes = figure.add_subplot()
    target = base_multiply_adds * 2**phi / 1e6
    axes.axvspan(target * (1 - flops_tolerance), target * (1 + flops_tolerance), color="0.92",
                 label=f"{2**phi:g}x base ± {flops_tolerance:.0%}")
    axes.axhline(1 / num_classes, color="0.5", linestyle=":", label="chance")
    scored = [row for row in rows if row.get("accuracy") is not None]
    xs = [row["multiply_adds"] / 1e6 for row in scored]
    ys = [row["accuracy"] for row in scored]
    gammas = [row["gamma"] for row in scored]
    points = axes.scatter(xs, ys, c=gammas, cmap="viridis", s=40, zorder=3)
    figure.colorbar(points, ax=axes, label="gamma (resolution)")
    for row, x, y in zip(scored, xs, ys):
        axes.annotate(f"{row['alpha']:g}/{row['beta']:g}/{row['gamma']:g}", (x, y),
                      textcoords="offset points", xytext=(5, 4), fontsize=7)
        if row.get("chosen"):
            axes.scatter([x], [y], marker="*", s=320, facecolors="none", edgecolors="red",
                         linewidths=1.5, zorder=4, label="chosen")
    band = [target * (1 - flops_tolerance), target * (1 + flops_tolerance)]
    axes.set_xlim(min(band + xs) * 0.97, max(band + xs) * 1.03)
    axes.set_xlabel("measured multiply-adds per image (M)")
    axes.set_ylabel("held-out accuracy")
    axes.set_ylim(min([0.0, *ys]) - 0.02, 1.02)
    axes.set_title("compound-scaling search: alpha/beta/gamma per trial", fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
