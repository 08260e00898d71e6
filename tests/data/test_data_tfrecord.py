"""TFRecord round trip and in-memory materialisation: images and labels read back identical."""

import json

import numpy as np
import tensorflow as tf

from effnet_tl.data import (
    ArrayExamples,
    from_tfrecords,
    load_rgb,
    make_dataset,
    read_labels,
    scan,
    to_memory,
    to_tfrecords,
)


def _reference(path, decoder):
    if decoder == "pillow":
        return load_rgb(path)
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False).numpy()


def test_files_round_trip_identical(img, tmp_path):
    root = tmp_path / "d"
    img.noise(root / "a" / "photo.jpg", size=(40, 30), seed=1, quality=85)
    img.noise(root / "a" / "lossless.png", size=(33, 17), seed=2)
    img.solid(root / "b" / "cmyk.jpg", (10, 200, 30, 5), mode="CMYK", size=(20, 24))
    img.png16(root / "b" / "deep.png", 30000, size=(12, 10))
    img.exif_jpeg(root / "b" / "rotated.jpg", (200, 10, 10), orientation=8, size=(30, 20))
    img.write(root / "b" / "broken.jpg", b"")
    report = scan(root, val_fraction=0)
    train = report.source.train
    assert len(train) == 5
    shards = to_tfrecords(train, str(tmp_path / "shards"), examples_per_shard=2)
    assert [s.rsplit("/", 1)[-1] for s in shards] == [
        "data-00000-of-00003.tfrecord",
        "data-00001-of-00003.tfrecord",
        "data-00002-of-00003.tfrecord",
    ]
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["num_examples"] == 5 and manifest["class_names"] == ["a", "b"]
    assert read_labels(tmp_path / "shards") == ("a", "b")

    back = from_tfrecords(str(tmp_path / "shards"))
    assert back.class_names == ("a", "b") and back.num_examples == 5
    read = list(back.dataset.as_numpy_iterator())
    assert [int(label) for _, label in read] == train.labels.tolist()
    for (image, _), path, decoder in zip(read, train.paths, train.decoders):
        np.testing.assert_array_equal(image, _reference(path, decoder))
    assert read[4][0].shape == (30, 20, 3)  # the EXIF rotation was applied before storing


def test_arrays_round_trip_and_pipeline_reads_shards(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 9, 11, 3), dtype=np.uint8)
    labels = np.array([0, 2, 1, 1, 0, 2, 2])
    to_tfrecords(
        ArrayExamples(images, labels, ("x", "y", "z")), str(tmp_path / "s"), examples_per_shard=4
    )
    back = from_tfrecords(str(tmp_path / "s"))
    read = list(back.dataset.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([image for image, _ in read]), images)
    assert [int(label) for _, label in read] == labels.tolist()
    ds = make_dataset(
        back,
        image_size=(9, 11),
        batch_size=4,
        training=False,
        resize="stretch",
        drop_remainder=True,
    )
    assert ds.element_spec[0].shape == (4, 9, 11, 3)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), images[:4].astype(np.float32))
    np.testing.assert_array_equal(y.numpy().argmax(1), labels[:4])


def test_to_memory_matches_the_file_pipeline(img, tmp_path):
    for i in range(3):
        img.noise(tmp_path / "d" / f"c{i % 2}" / f"{i}.jpg", size=(50, 30), seed=i, quality=90)
    train = scan(tmp_path / "d", val_fraction=0).source.train
    mem = to_memory(train, image_size=16, resize="center_crop")
    assert mem.images.dtype == np.uint8 and mem.images.shape == (3, 16, 16, 3)
    assert mem.labels.tolist() == train.labels.tolist()
    x, _ = next(iter(make_dataset(train, image_size=16, batch_size=3, training=False)))
    np.testing.assert_array_equal(mem.images.astype(np.float32), x.numpy())
