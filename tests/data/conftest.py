"""Writers for real image files of every good, odd and bad kind the data layer must handle."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def _mkparent(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def solid(path, color, size=(48, 40), fmt=None, mode="RGB", **save_kwargs) -> Path:
    """A solid-colour image; ``size`` is (width, height)."""
    path = _mkparent(path)
    Image.new(mode, size, color).save(path, format=fmt, **save_kwargs)
    return path


def noise(path, size=(64, 48), seed=0, fmt=None, **save_kwargs) -> Path:
    """A random RGB image (width, height); returns the path."""
    path = _mkparent(path)
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt, **save_kwargs)
    return path


def palette_png(path, color, size=(48, 40)) -> Path:
    path = _mkparent(path)
    Image.new("RGB", size, color).convert("P", palette=Image.ADAPTIVE, colors=4).save(path)
    return path


def png16(path, value, size=(48, 40)) -> Path:
    path = _mkparent(path)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint16)).save(path)
    return path


def exif_jpeg(path, color, orientation=6, size=(48, 40)) -> Path:
    path = _mkparent(path)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", size, color).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path


def truncated_jpeg(path) -> Path:
    buffer = io.BytesIO()
    array = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    _mkparent(path).write_bytes(data[: int(len(data) * 0.7)])
    return Path(path)


def corrupt_jpeg(path) -> Path:
    """JPEG signature intact, header segments overwritten with garbage."""
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (10, 20, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    data[20:200] = np.random.default_rng(2).integers(0, 256, 180, dtype=np.uint8).tobytes()
    _mkparent(path).write_bytes(bytes(data))
    return Path(path)


def write(path, data: bytes) -> Path:
    _mkparent(path).write_bytes(data)
    return Path(path)


def dangling_symlink(path) -> Path:
    path = _mkparent(path)
    os.symlink(str(path) + ".missing-target", path)
    return path


@pytest.fixture
def img():
    return SimpleNamespace(
        solid=solid,
        noise=noise,
        palette_png=palette_png,
        png16=png16,
        exif_jpeg=exif_jpeg,
        truncated_jpeg=truncated_jpeg,
        corrupt_jpeg=corrupt_jpeg,
        write=write,
        dangling_symlink=dangling_symlink,
    )


@pytest.fixture
def messy_folder(tmp_path):
    """A class-folder dataset with every bad and odd kind of file the doctor must handle.

    Returns (root, good) where good maps each good file path to (class name, expected RGB
    colour); every good image is a single distinct colour so the pipeline's output can be traced
    back to its file.
    """
    root = tmp_path / "messy"
    cats, dogs = root / "cats", root / "dogs"
    good: dict[str, tuple[str, tuple[int, int, int]]] = {}

    def keep(path, label, color):
        good[str(path)] = (label, color)

    keep(solid(cats / "good1.jpg", (200, 30, 30), quality=95), "cats", (200, 30, 30))
    keep(solid(cats / "good2.jpeg", (30, 200, 30), quality=95), "cats", (30, 200, 30))
    keep(solid(cats / "gray.jpg", 90, mode="L", quality=95), "cats", (90, 90, 90))
    keep(solid(cats / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK", quality=95), "cats", (255, 0, 0))
    keep(exif_jpeg(cats / "exif.jpg", (30, 30, 200)), "cats", (30, 30, 200))
    keep(solid(cats / "png_named.jpg", (200, 200, 30), fmt="PNG"), "cats", (200, 200, 30))
    truncated_jpeg(cats / "truncated.jpg")
    write(cats / "zero.jpg", b"")
    solid(cats / "._good1.jpg", (1, 2, 3), fmt="PNG")  # AppleDouble: ignored even if decodable
    write(cats / ".DS_Store", b"\x00\x00\x00\x01Bud1")

    keep(solid(dogs / "good.png", (30, 200, 200)), "dogs", (30, 200, 200))
    keep(solid(dogs / "rgba.png", (200, 30, 200, 128), mode="RGBA"), "dogs", (200, 30, 200))
    keep(palette_png(dogs / "palette.png", (120, 60, 0)), "dogs", (120, 60, 0))
    keep(png16(dogs / "g16.png", 40 * 257), "dogs", (40, 40, 40))
    keep(solid(dogs / "tiny.png", (0, 120, 60), size=(16, 12)), "dogs", (0, 120, 60))
    keep(solid(dogs / "sub" / "nested.png", (150, 150, 250)), "dogs", (150, 150, 250))
    keep(solid(dogs / "bitmap.bmp", (250, 150, 100)), "dogs", (250, 150, 100))
    write(dogs / "text.jpg", b"this is not an image\n")
    corrupt_jpeg(dogs / "corrupt.jpg")
    dangling_symlink(dogs / "unreadable.jpg")
    write(dogs / "Thumbs.db", b"\xd0\xcf\x11\xe0")

    (root / "empty").mkdir()
    write(root / "empty" / ".DS_Store", b"\x00")
    write(root / "__MACOSX" / "cats" / "._good1.jpg", b"\x00\x05\x16\x07")
    write(root / "README.txt", b"my dataset\n")
    return root, good
