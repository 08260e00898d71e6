"""Compound-scaling search on two generated datasets whose needs differ, measured.

``fine_stripes``: two classes, horizontal or vertical stripes one pixel wide (period 2) on a
randomly lit, noisy background, drawn at ``2 x`` the search's base resolution. Resized to the
base resolution (exactly half), every output pixel is the mean of a 2 x 2 block, so the stripes
cancel and both classes become the same distribution: no network can beat chance there. Any
larger input keeps them (aliased, but with their orientation). Only resolution can help.

``coarse_bars``: the same two orientations as thick bars three quarters of the image long, visible at
any resolution: nothing forces resolution there.

Run: ``python -m benchmarks.scale_search [--budget 6] [--work-dir DIR]`` prints both searches'
trial tables and the chosen coefficients, and the JSON summary the README quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASS_NAMES = ("horizontal", "vertical")


def _backgrounds(rng, count: int, size: int) -> np.ndarray:
    """Random grey level and colour tint per image plus pixel noise, as float (N, S, S, 3)."""
    level = rng.integers(100, 156, (count, 1, 1, 1))
    tint = rng.integers(-12, 13, (count, 1, 1, 3))
    noise = rng.normal(0.0, 10.0, (count, size, size, 1))
    return (level + tint + noise).astype(np.float64)


def fine_stripes(per_class: int = 150, size: int = 128, seed: int = 0):
    """Period-2 stripes, horizontal (label 0) or vertical (label 1): ``(images, labels)``.

    Images are uint8 ``(2 * per_class, size, size, 3)``. Each image's stripe contrast is an
    integer in [28, 44] and its phase random, so 2 x 2 means remove the stripes exactly.

    Example:
        >>> images, labels = fine_stripes(per_class=2, size=8)
        >>> images.shape, labels.tolist()
        ((4, 8, 8, 3), [0, 0, 1, 1])
        >>> halved = images.astype(float).reshape(4, 4, 2, 4, 2, 3).mean(axis=(2, 4))
        >>> bool(np.abs(np.diff(halved.mean(axis=(1, 2, 3)))).max() < 20)  # stripes gone
        True
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(2), per_class)
    images = _backgrounds(rng, len(labels), size)
    rows = np.arange(size)
    for index, label in enumerate(labels):
        contrast = rng.integers(28, 45)
        sign = np.where((rows + rng.integers(0, 2)) % 2 == 0, 1.0, -1.0)
        pattern = sign[:, None] * np.ones((1, size)) if label == 0 else \
            np.ones((size, 1)) * sign[None, :]
        images[index] += contrast * pattern[..., None]
    return np.clip(np.round(images), 0, 255).astype(np.uint8), labels


def coarse_bars(per_class: int = 150, size: int = 128, seed: int = 0):
    """A thick dark bar, horizontal (label 0) or vertical (label 1), at a random place.

    Example:
        >>> images, labels = coarse_bars(per_class=1, size=32)
        >>> images.shape, labels.tolist()
        ((2, 32, 32, 3), [0, 1])
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(2), per_class)
    images = _backgrounds(rng, len(labels), size)
    length, thickness = 3 * size // 4, max(2, size // 6)
    for index, label in enumerate(labels):
        along = rng.integers(0, size - length + 1)
        across = rng.integers(0, size - thickness + 1)
        window = (slice(across, across + thickness), slice(along, along + length))
        if label == 1:
            window = window[::-1]
        images[index][window] -= rng.integers(60, 90)
    return np.clip(np.round(images), 0, 255).astype(np.uint8), labels


def write_folder(root: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> Path:
    """``root/<class name>/<index>.png``: the folder form ``effnet-tl scale-search`` reads."""
    from PIL import Image

    root = Path(root)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / CLASS_NAMES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


#: The searched base: B0's blocks at half width and depth, trained at 64 px (the stripes are
#: drawn at 128 px), so a trial takes seconds of compute on a CPU.
BASE = {"width": 0.5, "depth": 0.5}
BASE_RESOLUTION = 64


def search_on(name: str, images, labels, work: Path, **settings):
    """One search on one generated dataset; returns the result and its wall time."""
    from effnet_tl.models import custom_variant
    from effnet_tl.scaling import search

    base = custom_variant(**BASE, resolution=32, name="b0-half")
    started = time.perf_counter()
    result = search((images, labels), 2, base=base, base_resolution=BASE_RESOLUTION,
                    search_dir=work / f"{name}-search", subset=None, val_fraction=1 / 3,
                    **settings)
    return result, time.perf_counter() - started


def paper_point_costs() -> dict:
    """Measured multiply-adds of the paper's (1.2, 1.1, 1.15) over the base's: the product
    says 1.92; depth rounded up per stage and channels rounded to 8 say otherwise."""
    from effnet_tl.models import custom_variant, get_variant
    from effnet_tl.scaling.candidates import GridPoint, base_spec, measure, scaled_spec

    paper = GridPoint(1.2, 1.1, 1.15)
    costs = {}
    for label, base in (("b0 at 224 px", base_spec(get_variant("b0"), 224)),
                        (f"b0-half at {BASE_RESOLUTION} px",
                         base_spec(custom_variant(**BASE, resolution=32, name="b0-half"),
                                   BASE_RESOLUTION))):
        ratio = measure(scaled_spec(base, paper, 1))["multiply_adds"] / \
            measure(base)["multiply_adds"]
        costs[label] = round(ratio, 3)
    return costs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="scale_search_"))
    size = 2 * BASE_RESOLUTION
    summary = {"base": {**BASE, "resolution": BASE_RESOLUTION}, "budget": args.budget,
               "epochs": args.epochs, "images": 2 * args.per_class,
               "paper_point_measured_cost": paper_point_costs(), "searches": {}}
    for name, make in (("fine_stripes", fine_stripes), ("coarse_bars", coarse_bars)):
        images, labels = make(args.per_class, size, seed=args.seed)
        result, seconds = search_on(name, images, labels, work, budget=args.budget,
                                    epochs=args.epochs, seed=args.seed)
        print(f"\n{name}: chose alpha/beta/gamma = {result.coefficients} "
              f"in {seconds:.0f} s ({len(result.rejected)} grid points measured and left out)")
        print(result.format_table())
        summary["searches"][name] = {
            "chosen": result.coefficients, "seconds": round(seconds, 1),
            "rejected": len(result.rejected), "margin": round(result.margin, 3),
            "plot": str(result.plot),
            "trials": [{key: row[key] for key in ("name", "blocks", "resolution", "flops_ratio",
                                                  "accuracy", "seconds", "chosen")}
                       for row in result.table]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
