"""preview(): a real PNG of the expected size from arrays, folders and datasets, rows taken
across the classes in turn and every cell captioned with its class."""

import albumentations as A
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effnet_tl import augment
from effnet_tl.augment.preview import GAP_PIXELS, LABEL_PIXELS, label_strip, round_robin


def _expected_size(columns, rows, height, width, caption=0):
    return (columns * width + (columns + 1) * GAP_PIXELS,
            rows * (height + caption) + (rows + 1) * GAP_PIXELS)


def _cell(pixels, row, column, height, width, caption=LABEL_PIXELS):
    """(image, caption strip) of one grid cell."""
    top = GAP_PIXELS + row * (height + caption + GAP_PIXELS)
    left = GAP_PIXELS + column * (width + GAP_PIXELS)
    return (pixels[top:top + height, left:left + width],
            pixels[top + height:top + height + caption, left:left + width])


def test_preview_from_array_writes_png_with_originals_first(rng, tmp_path):
    images = rng.uniform(0, 255, (3, 40, 48, 3)).astype(np.float32)
    path = augment.preview(images, "medium", path=tmp_path / "grid.png", columns=4, rows=3,
                           seed=0, show=False)
    assert path == tmp_path / "grid.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid = Image.open(path)
    assert grid.format == "PNG" and grid.size == _expected_size(4, 3, 40, 48)
    pixels = np.asarray(grid.convert("RGB"))
    top, left = GAP_PIXELS + 40 + GAP_PIXELS, GAP_PIXELS  # row 1, column 0: the original
    np.testing.assert_array_equal(pixels[top:top + 40, left:left + 48], np.rint(images[1]))
    augmented = pixels[GAP_PIXELS:GAP_PIXELS + 40, left + 48 + GAP_PIXELS:left + 2 * 48 + GAP_PIXELS]
    assert np.abs(augmented.astype(float) - np.rint(images[0])).mean() > 1.0


def test_preview_from_folder(tmp_path, rng):
    for class_name in ("cat", "dog"):
        (tmp_path / "data" / class_name).mkdir(parents=True)
        for index in range(2):
            pixels = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / class_name / f"{index}.jpg")
    (tmp_path / "data" / "cat" / "broken.jpg").write_bytes(b"not an image")
    path = augment.preview(tmp_path / "data", "light", path=tmp_path / "f.png", columns=3,
                           rows=3, image_size=(32, 36), show=False)
    assert Image.open(path).size == _expected_size(3, 3, 32, 36, LABEL_PIXELS)


def test_folder_rows_take_the_classes_in_turn_and_every_cell_names_its_class(tmp_path):
    # Three classes of solid colours, sorted by class on disk (what used to fill every row
    # with the first class); one broken file that the doctor must skip.
    colours = {"apple": (200, 30, 30), "kiwi": (30, 200, 30), "plum": (30, 30, 200)}
    for name, colour in colours.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in range(3):
            image = Image.new("RGB", (30 + index, 20), colour)
            image.save(tmp_path / "data" / name / f"{index}.png")
    (tmp_path / "data" / "apple" / "0broken.jpg").write_bytes(b"not an image")
    path = augment.preview(tmp_path / "data", None, path=tmp_path / "g.png", columns=2, rows=5,
                           image_size=16, show=False)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[:2][::-1] == _expected_size(2, 5, 16, 16, LABEL_PIXELS)
    expected = ["apple", "kiwi", "plum", "apple", "kiwi"]
    for row, name in enumerate(expected):
        for column in range(2):  # augmentation off: the copy equals the original
            image, caption = _cell(pixels, row, column, 16, 16)
            np.testing.assert_array_equal(image, np.broadcast_to(colours[name], (16, 16, 3)))
            np.testing.assert_array_equal(caption, label_strip(name, 16))
    # The captions really differ per class (text is drawn, not a blank strip).
    assert not np.array_equal(label_strip("apple", 16), label_strip("kiwi", 16))
    assert (label_strip("apple", 16) < 128).any()


def test_flat_folder_is_previewed_without_captions(tmp_path, rng):
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
            tmp_path / f"{index}.png")
    path = augment.preview(tmp_path, "light", path=tmp_path / "out" / "flat.png", columns=2,
                           rows=2, image_size=(16, 18), show=False)
    assert Image.open(path).size == _expected_size(2, 2, 16, 18)


def test_round_robin_visits_classes_in_turn_keeping_order_within_a_class():
    assert round_robin([0, 0, 0, 1, 1, 2]).tolist() == [0, 3, 5, 1, 4, 2]
    assert round_robin(["b", "a", "b", "a"]).tolist() == [1, 0, 3, 2]
    assert round_robin([]).tolist() == []


def test_long_class_names_are_shortened_to_fit_the_cell():
    strip = label_strip("a_very_long_class_name_indeed", 30)
    assert strip.shape == (LABEL_PIXELS, 30, 3)
    assert (strip[:, -1] == 255).all()  # nothing drawn into the last column


def test_preview_from_batched_dataset_and_albumentations(rng, tmp_path):
    images = rng.uniform(0, 255, (5, 24, 24, 3)).astype(np.float32)
    labels = np.eye(5, dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    path = augment.preview(ds, A.Compose([A.HorizontalFlip(p=1.0)]), path=tmp_path / "a.png",
                           columns=2, rows=4, show=False)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[:2][::-1] == _expected_size(2, 4, 24, 24, LABEL_PIXELS)
    flipped, caption = _cell(pixels, 0, 1, 24, 24)
    np.testing.assert_array_equal(flipped, np.rint(images[0])[:, ::-1])
    np.testing.assert_array_equal(caption, label_strip("0", 24))


def test_dataset_sorted_by_class_still_shows_every_class(rng, tmp_path):
    images = rng.uniform(0, 255, (12, 8, 8, 3)).astype(np.float32)
    labels = np.repeat([0, 1, 2], 4)  # integer labels, sorted: 0 0 0 0 1 1 1 1 2 2 2 2
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    path = augment.preview(ds, "none", path=tmp_path / "d.png", columns=2, rows=4, show=False)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    for row, source_index in enumerate([0, 4, 8, 1]):  # class 0, 1, 2, then 0 again
        image, caption = _cell(pixels, row, 0, 8, 8)
        np.testing.assert_array_equal(image, np.rint(images[source_index]))
        np.testing.assert_array_equal(caption, label_strip(str(labels[source_index]), 8))


def test_preview_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="columns >= 2"):
        augment.preview(np.zeros((1, 8, 8, 3)), columns=1, show=False)
    with pytest.raises(ValueError, match="not a folder"):
        augment.preview(str(tmp_path / "missing"), show=False)
