"""TFRecord shards for TPUs and remote storage: write once (local or ``gs://``), read anywhere.

A Cloud TPU cannot read the notebook's local disk, and a ``tf.numpy_function`` cannot run on a
TPU host, so shards hold images every TensorFlow decoder reads exactly: a file TensorFlow already
decodes exactly (plain JPEG/PNG) is stored byte for byte; anything that needed conversion (CMYK,
EXIF rotation, palette, 16-bit, other formats) and in-memory arrays are stored as lossless PNG.
"""

from __future__ import annotations

import io
import json
import math
from typing import Iterator

import numpy as np

from effnet_tl.data.classes import write_labels
from effnet_tl.data.imagefile import decode_rgb
from effnet_tl.data.sources import ArrayExamples, DatasetExamples, FileExamples

MANIFEST = "manifest.json"


def to_tfrecords(
    examples,
    path: str,
    *,
    examples_per_shard: int = 1024,
    prefix: str = "data",
) -> list[str]:
    """Write ``examples`` as TFRecord shards under ``path`` (a local folder or ``gs://...``).

    Also writes ``labels.json`` and ``manifest.json`` (class names, example count, shard names).

    Args:
        examples: ``FileExamples`` (unchecked files are checked first; bad ones are skipped),
            ``ArrayExamples`` or ``DatasetExamples``.
        path: destination folder.
        examples_per_shard: records per shard file.
        prefix: shard file name prefix.

    Returns:
        The shard paths.

    Example:
        >>> import tempfile, numpy as np
        >>> from effnet_tl.data.sources import ArrayExamples
        >>> out = tempfile.mkdtemp()
        >>> arrays = ArrayExamples(np.zeros((3, 4, 4, 3), np.uint8), [0, 1, 0], ("a", "b"))
        >>> shards = to_tfrecords(arrays, out)
        >>> back = from_tfrecords(out)
        >>> back.class_names, back.num_examples, [int(l) for _, l in back.dataset]
        (('a', 'b'), 3, [0, 1, 0])
    """
    import tensorflow as tf

    if examples_per_shard < 1:
        raise ValueError(f"examples_per_shard must be >= 1, got {examples_per_shard!r}")
    if isinstance(examples, FileExamples) and not examples.checked:
        from effnet_tl.data.doctor import check_examples

        examples, _ = check_examples(examples)
    total = _count(examples)
    num_shards = max(1, math.ceil(total / examples_per_shard))
    tf.io.gfile.makedirs(path)
    shards = [
        _join(path, f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord") for i in range(num_shards)
    ]
    records = _records(examples)
    written = 0
    for shard in shards:
        with tf.io.TFRecordWriter(shard) as writer:
            for _ in range(examples_per_shard):
                record = next(records, None)
                if record is None:
                    break
                writer.write(record)
                written += 1
    manifest = {
        "class_names": list(examples.class_names),
        "num_examples": written,
        "shards": [s.rsplit("/", 1)[-1] for s in shards],
    }
    with tf.io.gfile.GFile(_join(path, MANIFEST), "w") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    write_labels(_join(path, "labels.json"), examples.class_names)
    return shards


def from_tfrecords(path: str, *, class_names=None) -> DatasetExamples:
    """Read shards written by :func:`to_tfrecords` as ``DatasetExamples`` of (uint8 image, label).

    Feed the result to :func:`effnet_tl.data.make_dataset`. Uses only TensorFlow ops, so it runs
    on a TPU host reading ``gs://``.
    """
    import tensorflow as tf

    with tf.io.gfile.GFile(_join(path, MANIFEST), "r") as handle:
        manifest = json.loads(handle.read())
    files = [_join(path, name) for name in manifest["shards"]]
    names = tuple(class_names) if class_names is not None else tuple(manifest["class_names"])
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record):
        parsed = tf.io.parse_single_example(record, features)
        image = tf.io.decode_image(parsed["image"], channels=3, expand_animations=False)
        return tf.ensure_shape(image, (None, None, 3)), parsed["label"]

    # Shards are read in order (deterministic); decoding is parallel.
    dataset = tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return DatasetExamples(dataset, names, int(manifest["num_examples"]))


def _join(folder: str, name: str) -> str:
    return str(folder).rstrip("/") + "/" + name


def _count(examples) -> int:
    if isinstance(examples, DatasetExamples) and examples.num_examples is None:
        return int(examples.dataset.reduce(0, lambda n, _: n + 1))
    return len(examples)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _to_uint8_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        rounded = np.rint(image)
        if (
            not np.allclose(rounded, image)
            or rounded.min(initial=0) < 0
            or rounded.max(initial=0) > 255
        ):
            raise ValueError(
                "to_tfrecords stores 8-bit images; got non-integer or out-of-range pixels"
            )
        image = rounded.astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _records(examples) -> Iterator[bytes]:
    import tensorflow as tf

    def record(image_bytes: bytes, label: int) -> bytes:
        feature = {
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    if isinstance(examples, FileExamples):
        for path, label, decoder in zip(examples.paths, examples.labels, examples.decoders):
            with tf.io.gfile.GFile(path, "rb") as handle:
                data = handle.read()
            yield record(data if decoder in ("jpeg", "png") else _png(decode_rgb(data)), label)
    elif isinstance(examples, ArrayExamples):
        for image, label in zip(examples.images, examples.labels):
            yield record(_png(_to_uint8_rgb(image)), label)
    elif isinstance(examples, DatasetExamples):
        for image, label in examples.dataset.as_numpy_iterator():
            label = np.asarray(label)
            yield record(_png(_to_uint8_rgb(image)), int(label.argmax() if label.ndim else label))
    else:
        raise TypeError(f"cannot write {type(examples).__name__} to TFRecords")
