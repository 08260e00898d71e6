"""Put a TPU run's images where the TPU can read them, as :func:`effnet_tl.train.tpu.tpu_input`
decides: left as files on a TPU VM, decoded into host memory, or written once as TFRecords on
``gs://`` (reused by later runs with the same count).

Example (no TPU needed: a TPU node with small data gets arrays):
    >>> import numpy as np
    >>> from effnet_tl.data.sources import ArrayExamples, DatasetSource
    >>> from effnet_tl.train.defaults import DataFacts, resolve
    >>> from effnet_tl.train.settings import FitOptions
    >>> images = ArrayExamples(np.zeros((4, 9, 9, 3), np.uint8), [0, 1, 0, 1], ("a", "b"))
    >>> source = DatasetSource(kind="arrays", class_names=("a", "b"), train=images, val=images)
    >>> settings = resolve(FitOptions.from_kwargs(variant="lite0", image_size=8), DataFacts(4, 4))
    >>> tpu_source(source, settings, verbose=0, tpu_vm=False).train.images.shape
    (4, 9, 9, 3)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from effnet_tl.data.examples import known_count
from effnet_tl.data.sources import ArrayExamples
from effnet_tl.train.tpu import host_has_tpu, tpu_input

__all__ = ["decoded_bytes", "tpu_source"]

SPLITS = ("train", "val", "test")


def decoded_bytes(source, image_size) -> int:
    """Bytes of every split decoded at the model's input size as uint8 RGB."""
    height, width = image_size
    return sum(known_count(getattr(source, name)) for name in SPLITS) * height * width * 3


def tpu_source(source, settings, *, verbose: int, tpu_vm: bool | None = None):
    """``source`` with its splits where a TPU reads them (arrays stay as they are).

    Args:
        source: The doctored :class:`~effnet_tl.data.DatasetSource`.
        settings: Resolved fit settings (image size, resize, ``tpu_data_dir``).
        verbose: Print one line on what was done.
        tpu_vm: The TPU is attached to this host (default: :func:`host_has_tpu`).

    Raises:
        TpuInputError: data too large for memory and no ``gs://`` folder to write to.
    """
    from effnet_tl.data.pipeline import to_memory
    from effnet_tl.data.tfrecord import from_tfrecords, to_tfrecords

    tpu_vm = host_has_tpu() if tpu_vm is None else tpu_vm
    size = decoded_bytes(source, settings.model.image_size)
    where = tpu_input(tpu_vm=tpu_vm, decoded_bytes=size, gcs_dir=settings.run.tpu_data_dir)
    splits = {name: getattr(source, name) for name in SPLITS
              if getattr(source, name) is not None
              and not isinstance(getattr(source, name), ArrayExamples)}
    if where == "files" or not splits:
        return source
    moved = {}
    for name, examples in splits.items():
        if where == "memory":
            moved[name] = to_memory(examples, image_size=settings.model.image_size,
                                    resize=settings.data.resize)
            continue
        folder = f"{settings.run.tpu_data_dir.rstrip('/')}/{name}"
        try:
            existing = from_tfrecords(folder, class_names=source.class_names)
        except (OSError, ValueError, KeyError, tf.errors.OpError):  # no shards there yet
            existing = None
        if existing is None or existing.num_examples != known_count(examples):
            to_tfrecords(examples, folder)
            existing = from_tfrecords(folder, class_names=source.class_names)
        moved[name] = existing
    if verbose:
        target = ("host memory" if where == "memory"
                  else f"TFRecords under {settings.run.tpu_data_dir}")
        print(f"effnet_tl: the TPU cannot read this machine's disk: {', '.join(moved)} images "
              f"({size / 2**20:.0f} MiB decoded) go to {target}", flush=True)
    return dataclasses.replace(source, **moved)
