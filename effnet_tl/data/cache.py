"""Caching in the input pipeline: memory or disk, temporary cache folders, shuffling after it.

``cache="auto"`` keeps the cache in memory when it fits a budget (a quarter of
:func:`available_memory` by default), else on disk in a temporary folder that is removed with
the dataset reading it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref


def _cache_kind(cache, examples, height, width, random_crop, memory_budget):
    if cache in (None, False):
        return None
    if cache is True or cache == "memory":
        return "memory"
    if cache == "disk":
        return _TemporaryCache()
    if cache != "auto":
        return os.fspath(cache)  # a disk cache file prefix
    if random_crop:
        size = sum(_file_size(p) for p in examples.paths)
    else:
        size = len(examples) * height * width * 3
    budget = memory_budget if memory_budget is not None else available_memory() // 4
    if size <= budget:
        return "memory"
    return _TemporaryCache()


class _TemporaryCache(str):
    """A disk-cache file prefix inside a folder of our own, removed with the dataset using it."""

    def __new__(cls):
        folder = tempfile.mkdtemp(prefix="effnet_tl_cache_")
        path = super().__new__(cls, os.path.join(folder, "cache"))
        path.folder = folder
        return path


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def available_memory() -> int:
    """Bytes of physical memory free now (1 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 2**30


def _cache(dataset, cache_kind):
    if cache_kind is None:
        return dataset
    cached = dataset.cache("" if cache_kind == "memory" else str(cache_kind))
    if isinstance(cache_kind, _TemporaryCache):
        # Every later stage and every iterator holds a reference to this dataset object, so
        # the folder goes exactly when nothing can read the cache any more.
        weakref.finalize(cached, shutil.rmtree, cache_kind.folder, ignore_errors=True)
    return cached


def _shuffle_cached(dataset, shuffle, cache_kind, n, shuffle_buffer, seed):
    if not shuffle or cache_kind is None:
        return dataset
    default = n if cache_kind == "memory" else min(n, 2048)
    return dataset.shuffle(
        max(1, shuffle_buffer or default), seed=seed, reshuffle_each_iteration=True
    )
