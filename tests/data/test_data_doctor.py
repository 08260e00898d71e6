"""Dataset doctor: exact counts for every bad and odd file kind, splits, leakage, quarantine."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from effnet_tl.data import load_rgb, make_dataset, scan

EXPECTED_COUNTS = {
    "scanned": 18,
    "good": 13,
    "skipped": 5,
    "zero_byte": 1,
    "not_an_image": 1,
    "truncated": 1,
    "corrupt": 1,
    "unreadable": 1,
    "grayscale": 2,  # gray.jpg, g16.png
    "rgba": 1,
    "palette": 1,
    "cmyk": 1,
    "16bit": 1,
    "exif_orientation": 1,
    "other_format": 1,  # bitmap.bmp
    "tiny": 1,
    "extension_mismatch": 1,  # png_named.jpg
    "duplicates": 0,
    "leakage_groups": 0,
    "ignored": 5,
    "unlabelled": 1,
    "empty_class_folders": 1,
}


def test_messy_folder_counts_exactly(messy_folder):
    root, good = messy_folder
    report = scan(root, val_fraction=0)
    assert report.counts == EXPECTED_COUNTS
    assert report.class_names == ("cats", "dogs", "empty")
    skipped = {Path(i.path).name: i.kind for i in report.skipped}
    assert skipped == {
        "truncated.jpg": "truncated",
        "zero.jpg": "zero_byte",
        "text.jpg": "not_an_image",
        "corrupt.jpg": "corrupt",
        "unreadable.jpg": "unreadable",
    }
    assert all(issue.reason for issue in report.skipped)
    converted = sorted((Path(i.path).name, i.kind) for i in report.converted)
    assert converted == [
        ("bitmap.bmp", "other_format"),
        ("cmyk.jpg", "cmyk"),
        ("exif.jpg", "exif_orientation"),
        ("g16.png", "16bit"),
        ("g16.png", "grayscale"),
        ("gray.jpg", "grayscale"),
        ("palette.png", "palette"),
        ("rgba.png", "rgba"),
    ]
    assert [Path(i.path).name for i in report.warnings] == ["tiny.png"]
    ignored = sorted(str(Path(p).relative_to(root)) for p in report.ignored_files)
    assert ignored == [
        "__MACOSX/cats/._good1.jpg",
        "cats/.DS_Store",
        "cats/._good1.jpg",
        "dogs/Thumbs.db",
        "empty/.DS_Store",
    ]
    assert [Path(p).name for p in report.unlabelled_files] == ["README.txt"]
    assert report.empty_class_folders == {"train": ["empty"]}
    assert report.class_counts == {"train": {"cats": 6, "dogs": 7, "empty": 0}}
    assert report.missing_classes == {"train": ["empty"]}
    assert report.imbalance_ratio == pytest.approx(7 / 6, abs=1e-4)
    assert not report.imbalanced
    assert not report.ok
    train = report.source.train
    assert sorted(train.paths) == sorted(good)
    decoders = {Path(p).name: d for p, d in zip(train.paths, train.decoders)}
    assert decoders == {
        "good1.jpg": "jpeg",
        "good2.jpeg": "jpeg",
        "gray.jpg": "jpeg",
        "cmyk.jpg": "pillow",
        "exif.jpg": "pillow",
        "png_named.jpg": "png",
        "good.png": "png",
        "rgba.png": "png",
        "palette.png": "pillow",
        "g16.png": "pillow",
        "tiny.png": "png",
        "nested.png": "png",
        "bitmap.bmp": "pillow",
    }


def test_dataset_yields_every_good_file_once_with_its_label(messy_folder):
    root, good = messy_folder
    report = scan(root, val_fraction=0)
    ds = make_dataset(report.source.train, image_size=24, batch_size=5, training=False, cache=None)
    names = report.class_names
    colors = {path: np.asarray(color, float) for path, (_, color) in good.items()}
    seen = []
    for images, labels in ds:
        assert images.dtype.name == "float32" and labels.dtype.name == "float32"
        for image, label in zip(images.numpy(), labels.numpy()):
            mean = image.reshape(-1, 3).mean(axis=0)
            matches = [p for p, c in colors.items() if np.abs(mean - c).max() <= 4]
            assert len(matches) == 1, (mean, matches)
            assert names[int(label.argmax())] == good[matches[0]][0]
            assert label.sum() == 1.0
            seen.append(matches[0])
    assert sorted(seen) == sorted(good)


def test_exif_orientation_is_applied(img, tmp_path):
    path = img.exif_jpeg(tmp_path / "r.jpg", (10, 200, 10), orientation=6, size=(60, 40))
    assert load_rgb(path).shape == (60, 40, 3)  # stored 60 wide x 40 high, shown rotated 90°


def test_sixteen_bit_is_scaled_not_clipped(img, tmp_path):
    # Pillow's own convert("RGB") clips 16-bit values to 255; 50000 / 257 = 194.55 -> 195.
    path = img.png16(tmp_path / "g.png", 50000)
    assert np.unique(load_rgb(path)).tolist() == [195]


def test_split_folder_with_missing_test_class_and_leakage(img, tmp_path):
    root = tmp_path / "splits"
    colors = iter(range(10, 250, 7))
    for split, classes in [("train", "abc"), ("valid", "abc"), ("test", "ab")]:
        for cls in classes:
            for i in range(2):
                img.solid(root / split / cls / f"{i}.png", (next(colors), 0, 0))
    (root / "valid" / "c" / "1.png").unlink()
    shutil.copy(root / "train" / "a" / "0.png", root / "test" / "a" / "dup.png")
    (root / "test" / "c").mkdir()  # an empty class folder in test
    report = scan(root)
    assert report.source.kind == "split_folder"
    assert report.class_counts == {
        "train": {"a": 2, "b": 2, "c": 2},
        "val": {"a": 2, "b": 2, "c": 1},
        "test": {"a": 3, "b": 2, "c": 0},
    }
    assert report.missing_classes == {"test": ["c"]}
    assert report.empty_class_folders == {"test": ["c"]}
    assert report.leakage == [
        [
            ["test", str(root / "test" / "a" / "dup.png")],
            ["train", str(root / "train" / "a" / "0.png")],
        ]
    ]
    assert report.counts["leakage_groups"] == 1
    text = str(report)
    assert "LEAKAGE: 1 groups" in text and "CLASSES MISSING" in text and "'test': ['c']" in text


def test_imbalance_is_flagged(img, tmp_path):
    for i in range(8):
        img.solid(tmp_path / "d" / "many" / f"{i}.png", (i * 20, 0, 0))
    for i in range(2):
        img.solid(tmp_path / "d" / "few" / f"{i}.png", (0, i * 20 + 10, 0))
    report = scan(tmp_path / "d", val_fraction=0, imbalance_threshold=3.0)
    assert report.class_counts["train"] == {"few": 2, "many": 8}
    assert report.imbalance_ratio == 4.0 and report.imbalanced
    assert "IMBALANCED" in str(report)
    # One folder per class, nothing held out here: the counts are all of the images, and the
    # report says that fit holds out validation images itself.
    lines = str(report).splitlines()
    assert "  images per class: {'few': 2, 'many': 8}" in lines
    assert any(line.startswith("  no train/ val/ test/ folders: fit holds out") for line in lines)
    assert "  imbalance (largest/smallest class): 4.00 IMBALANCED: consider class_weights()" \
        in lines


def test_tiny_images_are_one_summary_line_and_every_path_is_in_the_json(img, tmp_path):
    for i in range(20):
        img.solid(tmp_path / "d" / "a" / f"tiny{i:02d}.png", (i, 0, 0), size=(12, 40))
    for i in range(2):
        img.solid(tmp_path / "d" / "b" / f"big{i}.png", (0, i, 0), size=(40, 40))
    report = scan(tmp_path / "d", val_fraction=0, min_side=16)
    assert report.counts["tiny"] == 20 and report.min_side == 16
    text = str(report)
    assert sum(".png" in line for line in text.splitlines()) == 1  # no line per file
    lines = [line for line in text.splitlines() if "tiny images" in line]
    assert lines == [
        "  tiny images (kept): 20 with the shorter side below 16 px, e.g. a/tiny00.png,"
        " a/tiny01.png, a/tiny02.png … and 17 more (all in to_json())"
    ]
    payload = json.loads(report.to_json())
    assert payload["min_side"] == 16
    assert sorted(Path(w["path"]).name for w in payload["warnings"]) == [
        f"tiny{i:02d}.png" for i in range(20)
    ]
    assert {w["reason"] for w in payload["warnings"]} == {"12x40 px, below 16"}


def test_a_few_tiny_images_are_all_named_on_the_summary_line(img, tmp_path):
    for i in range(2):
        img.solid(tmp_path / "d" / "a" / f"t{i}.png", (i, 0, 0), size=(8, 8))
    report = scan(tmp_path / "d", val_fraction=0)
    lines = [line for line in str(report).splitlines() if "tiny images" in line]
    assert lines == [
        "  tiny images (kept): 2 with the shorter side below 32 px, e.g. a/t0.png, a/t1.png"
    ]


def test_duplicates_inside_one_split_are_counted_not_leakage(img, tmp_path):
    img.solid(tmp_path / "d" / "a" / "0.png", (1, 2, 3))
    shutil.copy(tmp_path / "d" / "a" / "0.png", tmp_path / "d" / "a" / "copy.png")
    img.solid(tmp_path / "d" / "b" / "0.png", (9, 2, 3))
    report = scan(tmp_path / "d", val_fraction=0)
    assert report.counts["duplicates"] == 1 and report.leakage == []


def test_report_json_and_quarantine_moves_not_deletes(messy_folder, tmp_path):
    root, _ = messy_folder
    report = scan(root, val_fraction=0)
    payload = json.loads(report.to_json(tmp_path / "out" / "report.json"))
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == payload
    assert payload["counts"] == EXPECTED_COUNTS
    assert sorted(i["kind"] for i in payload["skipped"]) == sorted(
        ["truncated", "zero_byte", "not_an_image", "corrupt", "unreadable"]
    )
    sizes = {Path(i.path).relative_to(root): Path(i.path).lstat().st_size for i in report.skipped}
    moves = report.quarantine(tmp_path / "quarantine")
    assert len(moves) == 5
    for relative, size in sizes.items():
        assert not (root / relative).is_symlink() and not (root / relative).exists()
        assert (tmp_path / "quarantine" / relative).lstat().st_size == size
    rescan = scan(root, val_fraction=0)
    assert rescan.counts["skipped"] == 0 and rescan.counts["good"] == 13


def test_arrays_divided_by_255_are_reported():
    images = np.random.default_rng(0).random((6, 8, 8, 3)).astype("float32")
    report = scan((images, [0, 1] * 3), val_fraction=0)
    assert report.pixel_range[1] <= 1.0
    assert "do not divide by 255" in str(report)
    assert report.class_counts == {"train": {"0": 3, "1": 3}}


def test_scan_rate_is_at_least_a_few_hundred_files_per_second(img, tmp_path):
    # The benchmark measures the real rate on 500x375 JPEGs; this guards against a regression
    # to serial full decoding on small files even on a busy 2-core machine.
    for i in range(300):
        img.noise(tmp_path / "d" / f"c{i % 2}" / f"{i}.jpg", size=(96, 72), seed=i, quality=90)
    report = scan(tmp_path / "d", val_fraction=0)
    assert report.counts["good"] == 300
    assert report.files_per_second > 200
