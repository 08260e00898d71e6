""":func:`search`: the paper's compound-scaling grid search, run on the user's own data.

Tan & Le (2019, §3.3) chose EfficientNet's depth, width and resolution in two steps: fix φ = 1
and grid-search α, β, γ under ``α·β²·γ² ≈ 2`` on the small model, then fix them and grow φ. They
searched once, on ImageNet; this runs the first step on any dataset, cheaply:

1. candidates: grid points on the constraint, each built on the base and measured
   (:mod:`~effnet_tl.scaling.candidates`); only those whose measured multiply-adds are within
   ``flops_tolerance`` of ``2^φ ×`` the base's stay, spread over the depth/width/resolution
   split so that a small budget covers the extremes first;
2. trials: each candidate trains briefly from scratch on a subset with :func:`effnet_tl.fit`, at
   a reduced base resolution (:mod:`~effnet_tl.scaling.trials`); finished trials are stored at
   once and a rerun loads them;
3. the choice: the best held-out accuracy, ties within one standard error going to the higher
   accuracy per multiply-add (:mod:`~effnet_tl.scaling.result`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

from effnet_tl.models import get_variant
from effnet_tl.models.variants import VariantSpec
from effnet_tl.scaling.candidates import base_spec, choose, grid_points
from effnet_tl.scaling.result import SearchResult, plot_search
from effnet_tl.scaling.result import choose as choose_row
from effnet_tl.scaling.trials import (
    SearchFolder,
    describe_data,
    prepare_data,
    run_trial,
    trial_batch_norm_momentum,
)

__all__ = ["SearchSettings", "search"]

# fit's keyword arguments a trial decides itself; fit_options may not set them.
_TRIAL_OWNED = ("variant", "weights", "image_size", "run_dir", "runs_root", "name", "verbose",
                "strategy", "head_epochs", "finetune_epochs", "unfreeze_blocks", "finetune_lr",
                "batch_size", "seed", "val_fraction")


def _positive_int(name: str, value, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' or None' if optional else ''}. "
                         f"Received: {name}={value!r}")


def _number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ValueError(f"{name} must be a number in ({low:g}, {high:g}). "
                         f"Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Every knob of :func:`search`, checked at once (a bad value fails before data is read).

    Attributes:
        budget: how many candidates get a trial.
        grid: ``None`` (α 1-2 by 0.1, β and γ 1-1.45 by 0.05), ``{"alpha": [...], "beta":
            [...], "gamma": [...]}``, or ``(α, β, γ)`` triples.
        phi: compound coefficient of the candidates (the paper searched at 1).
        base: the variant to grow (a name or a :class:`VariantSpec`).
        base_resolution: input side of the base in the trials; ``None``: half the base's own.
        epochs: epochs per trial.
        subset: at most this many training images and this many held-out images.
        batch_size: ``None``: fit's default for the subset (16 below 320 images, else 32).
        learning_rate: peak AdamW rate of every trial (warm-up then cosine decay).
        val_fraction: share of each class held out when the source has no validation split,
            and share of the training subset that picks each trial's kept epoch.
        seed: seeds the splits, the initialisation and the shuffling of every trial.
        product_tolerance: relative tolerance on ``α·β²·γ² = 2`` for grid points.
        flops_tolerance: relative tolerance on the measured cost, ``2^φ ×`` the base's.
        search_dir: the search folder; ``None``: ``runs/<dataset>-<base>-scale-search``.
        strategy: a ``tf.distribute`` strategy or kind, passed to fit.
        overwrite: replace a search folder holding trials of other settings.
        verbose: one line per trial on stderr (``False``: silent).
        fit_options: further :func:`effnet_tl.fit` arguments for every trial (``augment``,
            ``label_smoothing``, ``drop_path_rate`` ...); those a trial sets itself are refused.
    """

    budget: int = 6
    grid: Any = None
    phi: float = 1.0
    base: Any = "b0"
    base_resolution: int | None = None
    epochs: int = 8
    subset: int | None = 1000
    batch_size: int | None = None
    learning_rate: float = 2e-3
    val_fraction: float = 0.2
    seed: int = 0
    product_tolerance: float = 0.05
    flops_tolerance: float = 0.10
    search_dir: Any = None
    strategy: Any = None
    overwrite: bool = False
    verbose: bool = True
    fit_options: dict | None = None

    def __post_init__(self):
        _positive_int("budget", self.budget)
        _positive_int("epochs", self.epochs)
        _positive_int("subset", self.subset, optional=True)
        _positive_int("batch_size", self.batch_size, optional=True)
        _number("phi", self.phi, 0, 8)
        _number("learning_rate", self.learning_rate, 0, 1)
        _number("val_fraction", self.val_fraction, 0, 1)
        _number("product_tolerance", self.product_tolerance, 0, 1)
        _number("flops_tolerance", self.flops_tolerance, 0, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0. Received: seed={self.seed!r}")
        spec = get_variant(self.base)  # an unknown base fails now, listing the known ones
        if self.base_resolution is not None and (
                isinstance(self.base_resolution, bool) or not isinstance(self.base_resolution, int)
                or self.base_resolution < 32):
            raise ValueError("base_resolution must be an integer >= 32 pixels or None (half "
                             f"of {spec.name}'s {spec.resolution}). Received: "
                             f"base_resolution={self.base_resolution!r}")
        owned = sorted(set(self.fit_options or {}) & set(_TRIAL_OWNED))
        if owned:
            raise ValueError(f"fit_options may not set {owned}: the search sets them for every "
                             "trial (use the search's own arguments: epochs, learning_rate, "
                             "batch_size, seed, strategy ...)")
        grid_points(self.grid, product_tolerance=self.product_tolerance)  # a bad grid fails now

    @property
    def resolution(self) -> int:
        """The base resolution of the trials."""
        if self.base_resolution is not None:
            return self.base_resolution
        return max(32, round(get_variant(self.base).resolution / 16) * 8)

    def trial_key(self, data: dict) -> dict:
        """What decides a trial's result: a stored trial is reused only when this matches."""
        from effnet_tl.train.settings import describe_augment

        base = get_variant(self.base)
        options = {key: describe_augment(value) if key == "augment" else value
                   for key, value in sorted((self.fit_options or {}).items())}
        key = {"base": dataclasses.asdict(base), "base_resolution": self.resolution,
               "phi": self.phi, "epochs": self.epochs, "subset": self.subset,
               "batch_size": self.batch_size, "learning_rate": self.learning_rate,
               "val_fraction": self.val_fraction, "seed": self.seed, "fit_options": options,
               "data": data}
        return json.loads(json.dumps(key, default=repr))


def search(dataset, num_classes: int | None = None, **settings) -> SearchResult:
    """Grid-search compound-scaling coefficients (α, β, γ) on ``dataset``; see the module doc.

    Args:
        dataset: anything :func:`effnet_tl.fit` accepts (a folder of class folders, a CSV,
            ``(images, labels)`` arrays, ``"tfds:NAME"``, a resolved ``DatasetSource``).
        num_classes: number of classes, checked against the data before anything trains;
            ``None`` counts them from the data.
        **settings: the fields of :class:`SearchSettings` (``budget``, ``grid``, ``phi``,
            ``base``, ``base_resolution``, ``epochs``, ``subset`` ...).

    Returns:
        A :class:`~effnet_tl.scaling.result.SearchResult`: the trial table, the chosen
        coefficients (``result.coefficients``, ``result.variant(phi)``) and the plot.

    Raises:
        TypeError: an unknown setting.
        ValueError: a bad value, a class count that does not match the data, no grid point
            within the cost tolerance, or a search folder of other settings (``overwrite``).

    Example (not run here: it trains):
        >>> result = search("data/textures", 5, budget=6, base="b0")      # doctest: +SKIP
        >>> print(result.format_table()); result.coefficients              # doctest: +SKIP
        >>> effnet_tl.fit("data/textures", 5, variant=result.variant(1),  # doctest: +SKIP
        ...               weights=None)
    """
    known = {field.name for field in dataclasses.fields(SearchSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"search() got unknown arguments {unknown}; accepted: "
                        + ", ".join(sorted(known)))
    options = SearchSettings(**settings)
    base_variant = get_variant(options.base)
    base = base_spec(base_variant, options.resolution)
    points = grid_points(options.grid, product_tolerance=options.product_tolerance)

    source = prepare_data(dataset, num_classes, subset=options.subset,
                          val_fraction=options.val_fraction, seed=options.seed)
    num_classes = source.num_classes
    folder = SearchFolder(_search_dir(options, dataset, base_variant))
    state = folder.open(options.trial_key(describe_data(source, dataset)),
                        overwrite=options.overwrite)
    base_cost, candidates, rejected = choose(
        points, options.budget, base=base, phi=options.phi,
        flops_tolerance=options.flops_tolerance, known=state["measured"])
    folder.save(state)
    if not candidates:
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in rejected[:5])
        raise ValueError(f"no grid point builds a network within {options.flops_tolerance:.0%} "
                         f"of {2**options.phi:g}x the base's measured cost ({reasons}); widen "
                         "the grid, raise flops_tolerance or base_resolution")

    _say(options, f"scale search on {len(source.train)} train / {len(source.val)} val / "
         f"{len(source.test)} held-out images: {len(candidates)} "
         f"candidates at {2**options.phi:g}x the base ({base.name} at {base.resolution} px, "
         f"{base_cost['multiply_adds'] / 1e6:.2f} M multiply-adds), {options.epochs} epochs each, "
         f"from scratch, in {folder.root}")
    rows = _trials(options, candidates, source, num_classes, folder, state)
    index, margin = choose_row(rows, held_out=len(source.test))
    for i, row in enumerate(rows):
        row["chosen"] = i == index
    plot = plot_search(rows, folder.plot, base_multiply_adds=base_cost["multiply_adds"],
                       phi=options.phi, flops_tolerance=options.flops_tolerance,
                       num_classes=num_classes)
    chosen = rows[index]
    _say(options, f"chose {chosen['name']} (held-out accuracy {chosen['accuracy']:.3f}; ties "
         f"within {margin:.3f} go to the most accurate per multiply-add); plot: {plot}")
    return SearchResult(table=rows, chosen=chosen, margin=margin, base=base,
                        base_variant=base_variant, base_multiply_adds=base_cost["multiply_adds"],
                        phi=options.phi, rejected=rejected, search_dir=folder.root, plot=plot,
                        data=state["settings"]["data"])


search.__signature__ = inspect.Signature([
    inspect.Parameter("dataset", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("num_classes", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                      annotation=int | None),
    *(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default)
      for field in dataclasses.fields(SearchSettings))], return_annotation=SearchResult)


def _trials(options: SearchSettings, candidates, source, num_classes: int,
            folder: SearchFolder, state: dict) -> list[dict]:
    """One table row per candidate: loaded from ``search.json``, else trained and stored."""
    batch_size = options.batch_size or _default_batch(len(source.train), options.strategy)
    fit_options = _trial_fit_options(options, batch_size)
    momentum = trial_batch_norm_momentum(len(source.train), batch_size)
    rows = []
    for number, candidate in enumerate(candidates, start=1):
        record, status = state["trials"].get(candidate.name), "loaded"
        if record is None:
            started = time.perf_counter()
            record = run_trial(candidate, source, num_classes,
                               run_dir=folder.trial_dir(candidate.name), bn_momentum=momentum,
                               fit_options=dict(fit_options))
            record["seconds"] = round(time.perf_counter() - started, 2)
            state["trials"][candidate.name] = record
            folder.save(state)  # stored the moment it finishes: a rerun skips it
            status = "trained"
        rows.append({**record, "status": status, "accuracy_per_gmac": _per_gmac(record)})
        _say(options, _progress(number, len(candidates), rows[-1]))
    return rows


def _search_dir(options: SearchSettings, dataset, base: VariantSpec) -> Path:
    from effnet_tl.train.run import default_run_name

    if options.search_dir is not None:
        return Path(options.search_dir)
    return Path("runs") / f"{default_run_name(dataset, base.name)}-scale-search"


def _default_batch(num_train: int, strategy) -> int:
    from effnet_tl.train.defaults import default_batch_size

    replicas = getattr(strategy, "num_replicas_in_sync", 1)
    return default_batch_size(num_train, replicas)


def _trial_fit_options(options: SearchSettings, batch_size: int) -> dict:
    """fit's arguments shared by every trial: from scratch, all blocks, one phase."""
    return {"weights": None, "head_epochs": 0, "finetune_epochs": options.epochs,
            "unfreeze_blocks": "all", "finetune_lr": options.learning_rate,
            "batch_size": batch_size, "seed": options.seed, "augment": "none",
            "early_stopping": False, "verbose": 0, "strategy": options.strategy,
            **(options.fit_options or {})}


def _per_gmac(record: dict) -> float | None:
    accuracy = record.get("accuracy")
    if accuracy is None:
        return None
    return round(accuracy / (record["multiply_adds"] / 1e9), 2)


def _progress(number: int, total: int, row: dict) -> str:
    accuracy = row.get("accuracy")
    score = "no accuracy" if accuracy is None else f"held-out accuracy {accuracy:.3f}"
    how = f"in {row['seconds']:.0f} s" if row["status"] == "trained" else \
        "(loaded: trained by an earlier run)"
    return (f"trial {number}/{total} {row['name']}: {row['blocks']} blocks, width "
            f"{row['width']:g}, {row['resolution']} px, {row['multiply_adds'] / 1e6:.2f} M "
            f"multiply-adds ({row['flops_ratio']:.2f}x): {score} {how}")


def _say(options: SearchSettings, line: str) -> None:
    if options.verbose:
        print(f"effnet_tl: {line}", file=sys.stderr, flush=True)

