"""One image file: judge it by content (never by extension) and decode it to RGB with Pillow.

:func:`inspect_file` is the doctor's per-file check; :func:`load_rgb` is the conversion path the
pipeline and the TFRecord writer use for files TensorFlow's decoders get wrong (CMYK JPEGs,
EXIF-rotated photos, palette and 16-bit PNGs, other formats).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

import numpy as np

# Problems that make a file unusable; such files are skipped and listed.
PROBLEMS = ("zero_byte", "not_an_image", "truncated", "corrupt", "unreadable")
# Conversions applied on the way to 8-bit RGB; such files are kept.
CONVERSIONS = ("grayscale", "rgba", "palette", "cmyk", "16bit", "exif_orientation", "other_format")

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "BMP": {".bmp", ".dib"},
    "TIFF": {".tif", ".tiff"},
    "WEBP": {".webp"},
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class FileCheck:
    """What the doctor learned about one file.

    Attributes:
        path: the file.
        problem: one of :data:`PROBLEMS`, or ``None`` for a usable image.
        reason: a human-readable explanation of the problem.
        format: the real format from the content (``"JPEG"``, ``"PNG"``...), if recognised.
        mode: Pillow's mode before conversion (``"RGB"``, ``"CMYK"``, ``"I;16"``...).
        width, height: size in pixels as stored (before EXIF rotation).
        conversions: what is converted on the way to RGB (see :data:`CONVERSIONS`).
        decoder: ``"jpeg"`` / ``"png"`` (TensorFlow's fast decoders are exact for this file) or
            ``"pillow"`` (needs the conversion path); ``None`` for unusable files.
        digest: BLAKE2b-128 of the bytes, for duplicate and leakage detection.
        extension_mismatch: the extension names another format (a PNG called .jpg): fine, noted.
    """

    path: str
    problem: str | None = None
    reason: str = ""
    format: str | None = None
    mode: str | None = None
    width: int = 0
    height: int = 0
    conversions: tuple[str, ...] = ()
    decoder: str | None = None
    digest: str | None = None
    extension_mismatch: bool = False
    orientation: int = 1

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def display_size(self) -> tuple[int, int]:
        """(height, width) once EXIF orientation is applied (5 to 8 swap the sides)."""
        if self.orientation in (5, 6, 7, 8):
            return self.width, self.height
        return self.height, self.width


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes, or ``None``.

    Example:
        >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n...."), sniff_format(b"hello")
        ('PNG', None)
    """
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def inspect_file(path: str) -> FileCheck:
    """Read and fully decode ``path``; classify it. Never raises for a bad file.

    JPEGs are decoded with DCT scaling (Pillow's ``draft``): every entropy-coded byte is still
    read, so truncation and corruption are caught, at a third of the cost of a full decode.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "empty.jpg")
        >>> open(p, "wb").close()
        >>> inspect_file(p).problem
        'zero_byte'
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return FileCheck(path, "unreadable", f"{type(error).__name__}: {error.strerror or error}")
    if not data:
        return FileCheck(path, "zero_byte", "file is empty (0 bytes)")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    sniffed = sniff_format(data)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if sniffed:
            return FileCheck(
                path,
                "corrupt",
                f"starts like a {sniffed} but its header is damaged",
                sniffed,
                digest=digest,
            )
        head = data[:8]
        return FileCheck(
            path, "not_an_image", f"not an image (starts with {head!r})", digest=digest
        )
    except Exception as error:  # noqa: BLE001 - any decoder failure means a bad file
        return FileCheck(
            path, "corrupt", f"{type(error).__name__}: {error}", sniffed, digest=digest
        )

    fmt, mode = image.format, image.mode
    width, height = image.size
    try:
        conversions, fast, orientation = _conversions(image, data)
        if fmt == "JPEG":
            # Decode at 1/8 scale: enough to read every byte, 40 % cheaper than a full decode.
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Exception as error:  # noqa: BLE001
        message = f"{type(error).__name__}: {error}"
        problem = "truncated" if "truncat" in str(error).lower() else "corrupt"
        return FileCheck(path, problem, message, fmt, mode, width, height, digest=digest)
    finally:
        image.close()
    if width < 1 or height < 1:
        return FileCheck(
            path, "corrupt", f"image has size {width}x{height}", fmt, mode, digest=digest
        )
    extension = os.path.splitext(path)[1].lower()
    mismatch = bool(extension) and fmt in _EXTENSIONS and extension not in _EXTENSIONS[fmt]
    decoder = ("jpeg" if fmt == "JPEG" else "png") if fast else "pillow"
    return FileCheck(
        path,
        None,
        "",
        fmt,
        mode,
        width,
        height,
        tuple(conversions),
        decoder,
        digest,
        mismatch,
        orientation,
    )


def _conversions(image, data: bytes) -> tuple[list[str], bool, int]:
    """(conversions, whether TensorFlow's decoder matches :func:`load_rgb`, EXIF orientation)."""
    fmt, mode = image.format, image.mode
    conversions: list[str] = []
    if fmt == "PNG" and len(data) >= 26:
        bit_depth, color_type = data[24], data[25]
        if bit_depth == 16:
            conversions.append("16bit")
        conversions += {
            0: ["grayscale"],
            3: ["palette"],
            4: ["grayscale", "rgba"],
            6: ["rgba"],
        }.get(color_type, [])
        # tf.io.decode_png(channels=3) matches Pillow's RGB for 8-bit gray, RGB and RGBA
        # (alpha dropped); palettes, gray+alpha, 16-bit and sub-byte depths go through Pillow.
        return conversions, bit_depth == 8 and color_type in (0, 2, 6), 1
    if mode in ("L", "1", "LA", "I", "F") or mode.startswith("I;16"):
        conversions.append("grayscale")
    if mode.startswith("I;16") or mode == "I":
        conversions.append("16bit")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        conversions.append("rgba")
    if mode == "P":
        conversions.append("palette")
    if mode == "CMYK":
        conversions.append("cmyk")
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        orientation = 1
    if orientation != 1:
        conversions.append("exif_orientation")
    if fmt == "JPEG":
        return conversions, mode in ("RGB", "L") and orientation == 1, orientation
    conversions.append("other_format")
    return conversions, False, orientation


def load_rgb(path) -> np.ndarray:
    """Decode any image file Pillow reads into an 8-bit RGB array ``(H, W, 3)``.

    EXIF orientation is applied; CMYK, palette and grayscale become RGB; 16-bit samples are
    scaled to 8 bits (Pillow's own ``convert`` clips them instead); alpha is dropped, as
    ``tf.io.decode_png(channels=3)`` does, so both decode paths agree.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> p = os.path.join(tempfile.mkdtemp(), "g16.png")
        >>> Image.fromarray(np.full((2, 3), 65535, np.uint16)).save(p)
        >>> load_rgb(p).shape, int(load_rgb(p).max())
        ((2, 3, 3), 255)
    """
    if isinstance(path, bytes):
        path = path.decode()
    with open(path, "rb") as handle:
        return decode_rgb(handle.read())


def decode_rgb(data: bytes) -> np.ndarray:
    """:func:`load_rgb` for the bytes of a file (used inside ``tf.numpy_function``)."""
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as image:
        return pil_to_rgb(image)


def pil_to_rgb(image) -> np.ndarray:
    """A PIL image as 8-bit RGB ``(H, W, 3)`` by :func:`load_rgb`'s rules (EXIF orientation,
    16-bit scaling, palettes, CMYK, alpha dropped).

    Example:
        >>> from PIL import Image
        >>> pil_to_rgb(Image.new("P", (3, 2))).shape
        (2, 3, 3)
    """
    from PIL import ImageOps

    image.seek(0)  # first frame of animations
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
