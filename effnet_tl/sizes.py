"""One rule for image sizes, shared by the data layer, the augmenters and the model side.

This module imports nothing from the package (and nothing heavy), so any module can use it
without an import cycle.
"""

from __future__ import annotations

import numbers
from typing import Sequence

__all__ = ["RESIZE_POLICIES", "image_size_pair"]

#: How an image reaches the model's input size (:mod:`effnet_tl.data.transforms` applies them).
RESIZE_POLICIES = ("crop", "center_crop", "random_crop", "pad", "stretch")

_ACCEPTED = "an int (square) or a (height, width) pair of positive ints"


def image_size_pair(
    image_size: int | Sequence[int] | None, *, default: int | Sequence[int] | None = None
) -> tuple[int, int]:
    """Return ``image_size`` as ``(height, width)`` ints.

    Args:
        image_size: ``224`` (square), ``(height, width)`` (any sequence of two integers, NumPy
            integers included), or ``None`` for ``default``.
        default: used when ``image_size`` is ``None``, read by the same rule.

    Returns:
        ``(height, width)``, both positive Python ints.

    Raises:
        ValueError: ``image_size`` (and ``default``) is ``None``, not an int or a pair of ints,
            or not positive. The message echoes the value and says what is accepted.

    Example:
        >>> image_size_pair(224), image_size_pair((240, 320)), image_size_pair(None, default=64)
        ((224, 224), (240, 320), (64, 64))
        >>> image_size_pair((0, 32))
        Traceback (most recent call last):
        ...
        ValueError: image_size=(0, 32) is not positive; accepted: an int (square) or ...
    """
    if image_size is None:
        if default is None:
            raise ValueError(f"image_size=None and no default; accepted: {_ACCEPTED}")
        return image_size_pair(default)
    if _is_int(image_size):
        pair = (int(image_size), int(image_size))
    else:
        try:
            values = [] if isinstance(image_size, (str, bytes)) else list(image_size)
        except TypeError:
            values = []
        if len(values) != 2 or not all(_is_int(v) for v in values):
            raise ValueError(f"image_size={image_size!r} is not valid; accepted: {_ACCEPTED}")
        pair = (int(values[0]), int(values[1]))
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"image_size={image_size!r} is not positive; accepted: {_ACCEPTED}")
    return pair


def _is_int(value) -> bool:
    # bool is an int to Python but never a size; floats (224.0) are refused rather than guessed.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
