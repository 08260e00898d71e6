"""Shared benchmark helpers: a generated JPEG folder, an alternating, median-of-N timer, and a
fresh process per block of TensorFlow work.

Every benchmark in this folder times our code and a named baseline in the same process,
alternating between them, and prints the median of several repeats and their ratio.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_jpeg_folder(
    root: str | Path,
    num_images: int = 1080,
    num_classes: int = 3,
    size: tuple[int, int] = (500, 375),
    seed: int = 0,
) -> Path:
    """Write ``num_images`` smooth random-colour JPEGs (width x height = ``size``) into class folders.

    Reuses the folder when it already holds the requested number of files.
    """
    from PIL import Image

    root = Path(root)
    existing = list(root.glob("*/*.jpg"))
    if len(existing) == num_images:
        return root
    rng = np.random.default_rng(seed)
    width, height = size
    for index in range(num_images):
        class_dir = root / f"class_{index % num_classes}"
        class_dir.mkdir(parents=True, exist_ok=True)
        # Low-frequency noise upsampled: compresses like a photo, unlike white noise.
        small = rng.integers(0, 256, size=(height // 25, width // 25, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        image.save(class_dir / f"img_{index:05d}.jpg", quality=90)
    return root


def alternate(
    candidates: dict[str, Callable[[], int]], repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Run each candidate in turn ``repeats`` times; return median items/second per name.

    Each callable does one timed pass and returns how many items it processed.
    """
    for _ in range(warmup):
        for run in candidates.values():
            run()
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            count = run()
            rates[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def print_table(title: str, rates: dict[str, float], baseline: str) -> None:
    """Print rates and each one's ratio to ``baseline``."""
    print(f"\n{title}")
    for name, rate in rates.items():
        print(f"  {name:<45s} {rate:10.1f} /s   ratio vs {baseline}: {rate / rates[baseline]:.2f}")


def in_fresh_process(function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)`` in a new (spawned) process: TensorFlow's per-model memory,
    which ``clear_session`` does not give back, goes away with it. A killed child raises
    ``concurrent.futures.process.BrokenProcessPool``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()
