""""tfds:NAME" loads like tfds.load: prepared on first use, read afterwards, offline failures fast.

Every dataset here is a real registered tfds builder (tests/data/tfds_builders.py) whose
download step reads files this module writes, or a closed port on this machine.
"""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from effnet_tl.data import FileExamples, make_dataset, resolve_source, scan, stratified_split
from effnet_tl.data.tfds_source import builder_name
from tests.data.tfds_builders import (
    CLASSES,
    COLORS,
    SHAPES,
    TEST_COUNTS,
    TRAIN_COUNTS,
    UNREACHABLE,
    EffnetTlTestShapes,
    EffnetTlTestUnreachable,
    closed_port,
    write_shapes_archive,
)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The zip the shapes builder downloads, and {image id: (split, class, png path)}."""
    path, truth = write_shapes_archive(tmp_path_factory.mktemp("source") / "shapes")
    EffnetTlTestShapes.ARCHIVE = str(path)
    return path, truth


@pytest.fixture(scope="module")
def shapes_dir(archive, tmp_path_factory):
    """A tfds data folder where the shapes dataset is prepared."""
    data_dir = tmp_path_factory.mktemp("tfds")
    resolve_source(f"tfds:{SHAPES}", data_dir=data_dir)
    return data_dir


def ids_and_labels(examples) -> list[tuple[int, int]]:
    """(id, label) of each element of a split's stream, in order; the id is pixel (0, 0)."""
    return [(int(image[0, 0, 0]), int(label)) for image, label in examples.dataset]


def test_the_first_call_downloads_and_prepares_and_later_calls_read_the_copy(archive, tmp_path):
    data_dir = tmp_path / "tfds"
    before = EffnetTlTestShapes.preparations
    first = resolve_source(f"tfds:{SHAPES}", data_dir=data_dir)
    assert EffnetTlTestShapes.preparations == before + 1
    assert any((data_dir / "downloads").iterdir())  # fetched through tfds' download manager
    assert tfds.builder(SHAPES, data_dir=str(data_dir)).is_prepared()
    again = resolve_source(f"tfds:{SHAPES}", data_dir=data_dir, download=False)
    assert EffnetTlTestShapes.preparations == before + 1  # read, not prepared again
    for src in (first, again):
        assert src.kind == "tfds" and src.class_names == CLASSES
        assert (len(src.train), len(src.val), len(src.test)) == (19, 5, 6)


def test_download_false_on_a_missing_dataset_fails_at_once_naming_the_remedy(archive, tmp_path):
    data_dir = tmp_path / "empty"
    before, start = EffnetTlTestShapes.preparations, time.perf_counter()
    with pytest.raises(FileNotFoundError) as raised:
        resolve_source(f"tfds:{SHAPES}", data_dir=data_dir, download=False)
    assert time.perf_counter() - start < 10
    message = str(raised.value)
    assert "\n" not in message and "download=False" in message
    assert f"`tfds build {SHAPES} --data_dir=DIR`" in message
    assert str(data_dir) in message  # where a prepared copy goes
    assert EffnetTlTestShapes.preparations == before
    assert not (data_dir / "downloads").exists()


@pytest.mark.parametrize("listed", [False, True], ids=["url-found-while-preparing",
                                                       "url-in-checksums"])
def test_an_unreachable_download_host_fails_within_a_bounded_time(listed, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/images.zip"
    monkeypatch.setattr(EffnetTlTestUnreachable, "URL", url)
    if listed:  # as a published dataset's checksums.tsv lists it: checked before preparing
        info = tfds.download.checksums.UrlInfo(size=tfds.core.utils.Size(1000),
                                               checksum="0" * 64, filename="images.zip")
        monkeypatch.setattr(EffnetTlTestUnreachable, "url_infos", {url: info})
    attempts, start = EffnetTlTestUnreachable.download_attempts, time.perf_counter()
    with pytest.raises(ConnectionError) as raised:
        resolve_source(f"tfds:{UNREACHABLE}", data_dir=tmp_path)
    # tfds alone retries for ~200 s; the bound is loose on purpose (a behaviour, not a speed).
    assert time.perf_counter() - start < 60
    message = str(raised.value)
    assert "\n" not in message and "127.0.0.1" in message and str(tmp_path) in message
    assert f"`tfds build {UNREACHABLE} --data_dir=DIR`" in message
    assert EffnetTlTestUnreachable.download_attempts == attempts + (0 if listed else 1)
    assert not tfds.builder(UNREACHABLE, data_dir=str(tmp_path)).is_prepared()


def test_validation_is_a_seeded_stratified_share_of_train_checked_against_the_labels(
        archive, shapes_dir):
    _, truth = archive
    src = resolve_source(f"tfds:{SHAPES}", data_dir=shapes_dir, val_fraction=0.25, seed=3)
    seen = {}
    for split in ("train", "val", "test"):
        examples = getattr(src, split)
        pairs = ids_and_labels(examples)
        assert [label for _, label in pairs] == examples.labels.tolist()  # labels travel in order
        for image_id, label in pairs:
            assert CLASSES[label] == truth[image_id][1]  # the class of the file it came from
        seen[split] = [image_id for image_id, _ in pairs]
    train_ids = {i for i, (split, _, _) in truth.items() if split == "train"}
    assert set(seen["train"]) | set(seen["val"]) == train_ids
    assert not set(seen["train"]) & set(seen["val"])
    assert sorted(seen["test"]) == sorted(i for i in truth if truth[i][0] == "test")
    per_class = np.bincount(src.val.labels, minlength=3).tolist()
    assert per_class == [3, 2, 1]  # 25% of 12, 8, 4
    # The same selection as stratified_split on the train split's labels in reading order.
    builder = tfds.builder(SHAPES, data_dir=str(shapes_dir))
    ordered = builder.as_dataset("train", shuffle_files=False)
    order = [(int(ex["image"][0, 0, 0]), int(ex["label"])) for ex in ordered]
    _, val_idx = stratified_split([label for _, label in order], 0.25, seed=3)
    assert seen["val"] == [order[i][0] for i in val_idx]
    assert "val: 25% of each train class, seeded (seed=3)" in src.notes
    same = resolve_source(f"tfds:{SHAPES}", data_dir=shapes_dir, val_fraction=0.25, seed=3)
    other = resolve_source(f"tfds:{SHAPES}", data_dir=shapes_dir, val_fraction=0.25, seed=4)
    assert [i for i, _ in ids_and_labels(same.val)] == seen["val"]
    assert [i for i, _ in ids_and_labels(other.val)] != seen["val"]


def test_a_dataset_with_its_own_validation_split_keeps_it(tmp_path):
    src = resolve_source(f"tfds:{COLORS}", data_dir=tmp_path, val_fraction=0.25)
    assert (len(src.train), len(src.val), len(src.test)) == (10, 4, 4)
    assert sorted(i for i, _ in ids_and_labels(src.val)) == [100, 101, 102, 103]
    assert "val: the dataset's own 'validation' split" in src.notes
    images, labels = next(iter(make_dataset(src.val, image_size=6, batch_size=4, training=False)))
    assert images.shape == (4, 6, 6, 3)
    assert sorted(labels.numpy().argmax(1).tolist()) == [0, 0, 1, 1]


def test_grayscale_images_of_varying_sizes_take_the_same_path_as_their_files(archive, shapes_dir):
    _, truth = archive
    src = resolve_source(f"tfds:{SHAPES}", data_dir=shapes_dir)
    order = [image_id for image_id, _ in ids_and_labels(src.test)]
    files = FileExamples([truth[i][2] for i in order], src.test.labels, CLASSES)
    sizes = {tuple(image.shape) for image, _ in src.test.dataset}
    assert len(sizes) > 1 and all(shape[-1] == 1 for shape in sizes)
    for resize in ("center_crop", "stretch"):
        settings = {"image_size": (20, 16), "batch_size": 6, "training": False,
                    "resize": resize, "cache": None}
        from_tfds, tfds_labels = next(iter(make_dataset(src.test, **settings)))
        from_files, file_labels = next(iter(make_dataset(files, **settings)))
        assert from_tfds.shape == (6, 20, 16, 3)
        np.testing.assert_allclose(from_tfds.numpy(), from_files.numpy(), atol=1.0)
        np.testing.assert_array_equal(tfds_labels.numpy(), file_labels.numpy())


def test_the_doctor_counts_classes_per_split_and_flags_imbalance(shapes_dir):
    report = scan(f"tfds:{SHAPES}", data_dir=shapes_dir, val_fraction=0.25,
                  imbalance_threshold=2.5)
    assert report.class_counts == {
        "train": {"circle": 9, "square": 6, "triangle": 3},
        "val": {"circle": 3, "square": 2, "triangle": 1},
        "test": dict(TEST_COUNTS),
    }
    assert report.imbalance_ratio == 3.0 and report.imbalanced
    total = sum(TRAIN_COUNTS.values()) + sum(TEST_COUNTS.values())
    assert report.counts["good"] == total and report.counts["grayscale"] == total
    text = str(report)
    assert "train per class: {'circle': 9, 'square': 6, 'triangle': 3}" in text
    assert "IMBALANCED" in text and "converted and kept: grayscale 30" in text


def test_names_take_tfds_forms_and_an_unknown_name_suggests_one(shapes_dir):
    assert builder_name("mnist") == "mnist"
    assert builder_name("mnist:3.0.1") == builder_name("mnist/3.0.1") == "mnist:3.0.1"
    assert builder_name("cifar10_corrupted:brightness_1") == "cifar10_corrupted/brightness_1"
    assert builder_name("cifar10_corrupted/brightness_1:3.*.*") == \
        "cifar10_corrupted/brightness_1:3.*.*"
    assert builder_name("huggingface:beans") == "huggingface:beans"  # a namespace, untouched
    versioned = resolve_source(f"tfds:{SHAPES}/1.0.0", data_dir=shapes_dir, download=False)
    assert versioned.class_names == CLASSES
    with pytest.raises(ValueError, match=rf"not a TensorFlow Datasets name \(did you mean "
                                         rf"'{SHAPES}'") as raised:
        resolve_source("tfds:effnet_tl_test_shape", data_dir=shapes_dir)
    assert "\n" not in str(raised.value)


def test_the_command_line_takes_data_dir_and_no_download(archive, tmp_path, capsys):
    from effnet_tl import cli

    argv = ["fit", f"tfds:{SHAPES}", "--num-classes", "3", "--data-dir", str(tmp_path),
            "--no-download"]
    args = cli.build_parser().parse_args(argv)
    assert (args.data_dir, args.download) == (str(tmp_path), False)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-download" in err and f"tfds build {SHAPES}" in err
