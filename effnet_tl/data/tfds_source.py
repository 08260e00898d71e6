"""TensorFlow Datasets sources: ``"tfds:NAME"`` behaves the way ``tfds.load("NAME")`` does.

The first call downloads and prepares the dataset into the tfds data folder (``data_dir``, else
tfds' own: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), showing tfds' progress; later calls
read the prepared copy. ``download=False`` forbids the download. A machine that cannot reach
the download host fails within seconds, not after tfds' retry loop (about 200 s): the hosts a
dataset's checksums list are probed before preparing, and tfds' retries are cut to two. The
error is one line: what was tried, where a prepared copy goes, and the ``tfds build`` command.

Splits: the dataset's own validation and test splits when it has them; otherwise a seeded
validation split of train, stratified by class as for folders. The labels are read once per
split without decoding an image, and travel with each split, so the doctor counts classes and
flags imbalance as it does for files. Images (uint8, any size, grayscale or RGB) reach the
same crop and resize as decoded files (:mod:`effnet_tl.data.transforms`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from effnet_tl.data.examples import DatasetExamples, DatasetSource, stratified_split

__all__ = ["builder_name", "from_tfds"]

VALIDATION_SPLITS = ("validation", "valid", "val")
# Seconds to open a connection to each download host before preparing: an offline machine
# (or one behind a firewall that drops packets) answers within this, every time.
CONNECT_TIMEOUT_S = 10.0
# tfds retries a failed connection 10 times with exponential back-off (~200 s before an offline
# machine hears about it). Two retries still ride out a blip; a rerun resumes the finished
# downloads (tfds keeps them in data_dir/downloads).
DOWNLOAD_RETRIES = 2
LABEL_BATCH = 8192
_VERSION = re.compile(r"^(\d+|\*)(\.(\d+|\*)){0,2}$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def from_tfds(
    spec: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSource:
    """Load a TensorFlow Datasets image classification dataset, preparing it first if needed.

    Args:
        spec: what follows ``"tfds:"``: ``NAME``, tfds' ``NAME/CONFIG:VERSION``, or
            ``NAME:CONFIG`` / ``NAME/VERSION``.
        data_dir: the tfds data folder; ``None``: tfds' default.
        download: download and prepare a dataset that is not in ``data_dir`` yet.
        val_fraction: share of each train class held out when the dataset has no validation
            split (0: no ``val``).
        seed: seed of that split.

    Returns:
        A ``"tfds"`` :class:`DatasetSource` whose splits are :class:`DatasetExamples` with
        their labels.

    Raises:
        FileNotFoundError: not prepared and ``download=False``.
        ConnectionError: not prepared and the download host cannot be reached.
        ValueError: an unknown name, or a dataset without uint8 images and class labels.

    Example (not run here: the first call downloads):
        >>> src = from_tfds("beans")                                      # doctest: +SKIP
        >>> src.class_names, len(src.train), len(src.val), len(src.test)  # doctest: +SKIP
        (('angular_leaf_spot', 'bean_rust', 'healthy'), 1034, 133, 128)
    """
    builder = _builder(spec, data_dir)
    _ensure_prepared(builder, spec, download)
    image_key, label_key = _feature_keys(builder, spec)
    names = tuple(str(n) for n in builder.info.features[label_key].names)
    available = set(builder.info.splits.keys())
    if "train" not in available:
        raise ValueError(f"tfds:{spec} has no 'train' split (splits: {sorted(available)}); "
                         "pick a dataset with one, or pass its splits as (images, labels) arrays")

    def whole(split: str) -> DatasetExamples:
        labels = _read_labels(builder, split, label_key)
        return DatasetExamples(_stream(builder, split, image_key, label_key), names, labels=labels)

    notes = [f"tfds:{spec} is {builder.info.full_name} in {builder.data_dir}"]
    val_name = next((s for s in VALIDATION_SPLITS if s in available), None)
    if val_name is not None:
        train, val = whole("train"), whole(val_name)
        notes.append(f"val: the dataset's own {val_name!r} split")
    else:
        train, val = _split_train(builder, names, image_key, label_key, val_fraction, seed)
        if val is not None:
            notes.append(f"val: {val_fraction:.0%} of each train class, seeded (seed={seed})")
    test = whole("test") if "test" in available else None
    return DatasetSource("tfds", names, train, val, test, root=str(builder.data_dir), notes=notes)


def builder_name(spec: str) -> str:
    """The name ``tfds.builder`` takes for what follows ``"tfds:"``.

    tfds' own ``NAME[/CONFIG][:VERSION]`` passes through; ``NAME:CONFIG`` (for a known
    dataset name) and ``NAME/VERSION`` are read as meant.

    Example:
        >>> builder_name("mnist"), builder_name("mnist/3.0.1"), builder_name("mnist:3.*.*")
        ('mnist', 'mnist:3.0.1', 'mnist:3.*.*')
        >>> builder_name("cifar10_corrupted:brightness_1")
        'cifar10_corrupted/brightness_1'
    """
    name, version = spec.strip(), None
    for separator in (":", "/"):
        head, found, tail = name.rpartition(separator)
        if found and head and _VERSION.match(tail):
            name, version = head, tail
            break
    head, found, tail = name.partition(":")
    if found and tail and head in _registered_names():  # else a namespace: huggingface:NAME
        name = f"{head}/{tail}"
    return name if version is None else f"{name}:{version}"


# ------------------------------------------------------------------------ the prepared copy


def _registered_names() -> set[str]:
    import tensorflow_datasets as tfds

    return set(tfds.list_builders(with_community_datasets=False))


def _builder(spec: str, data_dir):
    import difflib

    import tensorflow_datasets as tfds

    name = builder_name(spec)
    data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir is not None else None
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split("/")[0].split(":")[0]
        close = difflib.get_close_matches(base, sorted(_registered_names()), n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(
            f"tfds:{spec} is not a TensorFlow Datasets name{hint}; the names are listed at "
            "https://www.tensorflow.org/datasets/catalog/overview") from None
    except (ValueError, AssertionError) as error:  # an unknown config or version
        raise ValueError(f"tfds:{spec}: {_one_line(error)}") from None


def _ensure_prepared(builder, spec: str, download: bool) -> None:
    if builder.is_prepared():
        return
    root = os.fspath(builder.data_dir_root)
    remedy = (f"on a machine with internet run `tfds build {_build_name(builder)} "
              f"--data_dir=DIR`, then copy DIR/{builder.name} into {root} or pass data_dir=DIR")
    if not download:
        raise FileNotFoundError(
            f"tfds:{spec} is not prepared in {root} (no {builder.data_dir}) and downloading is "
            f"off (download=False, --no-download); allow it, or {remedy}")
    unreachable = _unreachable_hosts(getattr(builder, "url_infos", None) or {})
    if unreachable:
        raise ConnectionError(
            f"tfds:{spec} is not prepared in {root} and cannot be downloaded: "
            f"{'; '.join(unreachable)}; {remedy}")
    try:
        with _few_retries():
            builder.download_and_prepare()
    except _network_errors() as error:
        raise ConnectionError(
            f"tfds:{spec} is not prepared in {root} and its download failed "
            f"({_one_line(error)[:300]}); {remedy}") from error


def _build_name(builder) -> str:
    config = getattr(builder, "builder_config", None)
    return f"{builder.name}/{config.name}" if config is not None else builder.name


def _unreachable_hosts(urls, timeout: float = CONNECT_TIMEOUT_S) -> list[str]:
    """``"host:port (why)"`` for each host of ``urls`` (or its proxy) that refuses a connection.

    Example:
        >>> _unreachable_hosts(["file:///data/x.zip", "gs://bucket/x"])
        []
    """
    addresses = sorted({a for a in map(_address, urls) if a is not None})

    def probe(address) -> str | None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            return None
        except OSError as error:
            return f"{address[0]}:{address[1]} is unreachable ({error.strerror or error})"

    if not addresses:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(addresses))) as pool:
        return [line for line in pool.map(probe, addresses) if line]


def _address(url: str) -> tuple[str, int] | None:
    """Where a download of ``url`` connects first: its host, or the proxy that fetches it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None  # a local path or a file system tfds copies from (gs://...)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_parts.hostname:
            return proxy_parts.hostname, proxy_parts.port or 80
    return parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]


@contextlib.contextmanager
def _few_retries():
    """Bound tfds' retry loop for the downloads a checksums file does not list."""
    from tensorflow_datasets.core.download import downloader

    saved = getattr(downloader, "MAX_RETRIES", None)
    if isinstance(saved, int):
        downloader.MAX_RETRIES = min(saved, DOWNLOAD_RETRIES)
    try:
        yield
    finally:
        if isinstance(saved, int):
            downloader.MAX_RETRIES = saved


def _network_errors() -> tuple[type[BaseException], ...]:
    import urllib.error

    import requests
    import tensorflow_datasets as tfds

    return (requests.RequestException, urllib.error.URLError, ConnectionError, TimeoutError,
            socket.gaierror, tfds.download.DownloadError)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


# ------------------------------------------------------------------------ features and splits


def _feature_keys(builder, spec: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = builder.info.features
    present = set(features.keys())
    keys = builder.info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(
            isinstance(k, str) and k in present for k in keys):
        image_key, label_key = keys
    elif {"image", "label"} <= present:
        image_key, label_key = "image", "label"
    else:
        raise ValueError(f"tfds:{spec} has no (image, label) features (it has {sorted(present)}); "
                         "effnet_tl trains image classifiers: pick an image classification "
                         "dataset")
    image, label = features[image_key], features[label_key]
    problem = None
    if not isinstance(label, tfds.features.ClassLabel):
        problem = (f"its {label_key!r} feature is a {type(label).__name__}, not a ClassLabel; "
                   "pick an image classification dataset")
    elif np.dtype(image.np_dtype) != np.uint8 or len(image.shape) != 3:
        problem = (f"its {image_key!r} feature holds {image.np_dtype} of shape {image.shape}; "
                   "effnet_tl reads uint8 images (height, width, channels)")
    if problem:
        raise ValueError(f"tfds:{spec} cannot train a classifier: {problem}")
    return image_key, label_key


def _read_labels(builder, split: str, label_key: str) -> np.ndarray:
    """Every label of ``split``, in reading order; no image is decoded."""
    import tensorflow_datasets as tfds

    only_labels = tfds.decode.PartialDecoding({label_key: True})
    dataset = builder.as_dataset(split=split, shuffle_files=False, decoders=only_labels)
    batches = dataset.map(lambda example: example[label_key]).batch(LABEL_BATCH)
    parts = [batch.numpy() for batch in batches]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _stream(builder, split: str, image_key: str, label_key: str, keep=None):
    """``(image, label)`` of ``split``; with ``keep`` (a mask over the reading order), only
    those, and only their images are decoded."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    image_feature = builder.info.features[image_key]
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 decoders={image_key: tfds.decode.SkipDecoding()})
    if keep is not None:
        mask = tf.constant(np.asarray(keep, bool))
        dataset = dataset.enumerate().filter(lambda i, _: mask[i]).map(lambda _, ex: ex)
    return dataset.map(
        lambda example: (image_feature.decode_example(example[image_key]), example[label_key]),
        num_parallel_calls=tf.data.AUTOTUNE)


def _split_train(builder, names, image_key, label_key, val_fraction, seed):
    labels = _read_labels(builder, "train", label_key)
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    if len(val_idx) == 0:
        stream = _stream(builder, "train", image_key, label_key)
        return DatasetExamples(stream, names, labels=labels), None
    in_val = np.zeros(len(labels), bool)
    in_val[val_idx] = True
    train = DatasetExamples(_stream(builder, "train", image_key, label_key, keep=~in_val),
                            names, labels=labels[train_idx])
    val = DatasetExamples(_stream(builder, "train", image_key, label_key, keep=in_val),
                          names, labels=labels[val_idx])
    return train, val
