"""preview(): a real PNG of the expected size from arrays, folders and datasets."""

import albumentations as A
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effnet_tl import augment
from effnet_tl.augment.preview import GAP_PIXELS


def _expected_size(columns, rows, height, width):
    return (columns * width + (columns + 1) * GAP_PIXELS, rows * height + (rows + 1) * GAP_PIXELS)


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
    assert Image.open(path).size == _expected_size(3, 3, 32, 36)


def test_private_folder_loader_skips_broken_files(tmp_path, rng):
    from effnet_tl.augment.preview import _load_folder

    for class_name in ("a", "b"):
        (tmp_path / class_name).mkdir()
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
            tmp_path / class_name / "x.png")
    (tmp_path / "a" / "y.jpg").write_bytes(b"broken")
    images = _load_folder(tmp_path, 5, (16, 16))
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.float32


def test_preview_from_batched_dataset_and_albumentations(rng, tmp_path):
    images = rng.uniform(0, 255, (5, 24, 24, 3)).astype(np.float32)
    labels = np.eye(5, dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    path = augment.preview(ds, A.Compose([A.HorizontalFlip(p=1.0)]), path=tmp_path / "a.png",
                           columns=2, rows=4, show=False)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[:2][::-1] == _expected_size(2, 4, 24, 24)
    flipped = pixels[GAP_PIXELS:GAP_PIXELS + 24, 2 * GAP_PIXELS + 24:2 * GAP_PIXELS + 48]
    np.testing.assert_array_equal(flipped, np.rint(images[0])[:, ::-1])


def test_preview_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="columns >= 2"):
        augment.preview(np.zeros((1, 8, 8, 3)), columns=1, show=False)
    with pytest.raises(ValueError, match="not a folder"):
        augment.preview(str(tmp_path / "missing"), show=False)
