"""What prediction reads: the inputs a user hands over, and image files read as evaluation reads them.

:func:`expand_inputs` turns paths, folders, arrays and PIL images (or a list of them) into one
``(source, item)`` pair per image. :func:`file_batches` checks files with the dataset doctor
(a bad file is named with its reason, never a crash halfway) and reads the good ones through
:func:`effnet_tl.data.make_dataset`, the evaluation pipeline itself: the same decoder, crop
window and bilinear resize as the fit report.

Files are read in two groups, JPEGs and the rest: the pipeline decodes large JPEGs at a reduced
DCT scale only when every file of a dataset is a JPEG, so reading each group on its own gives
every file the pixels it gets when read alone, whatever else was passed with it. The exported
SavedModel decodes one file at a time and matches that.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["eval_policy", "expand_inputs", "file_batches", "read_pixels"]


def eval_policy(resize: str | None) -> str:
    """The evaluation view of a run's resize policy: crops evaluate as the centre crop.

    Example:
        >>> eval_policy("crop"), eval_policy("random_crop"), eval_policy("pad"), eval_policy(None)
        ('center_crop', 'center_crop', 'pad', 'center_crop')
    """
    from effnet_tl.data.transforms import _eval_policy

    return _eval_policy(resize or "center_crop")


def _is_pil(item) -> bool:
    return hasattr(item, "getexif") and hasattr(item, "convert")


def _one_image(array: np.ndarray) -> bool:
    return array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))


def expand_inputs(images) -> list[tuple[str, Any]]:
    """One ``(source, item)`` per image: a file path (a folder gives every file under it, sorted,
    hidden and system files left out), an array ``(H, W[, C])`` or a PIL image.

    ``source`` is the path, or ``"<array i>"`` / ``"<PIL image i>"`` for the i-th input.

    Example:
        >>> [source for source, _ in expand_inputs(np.zeros((2, 4, 4, 3)))]
        ['<array 0>', '<array 1>']
    """
    from effnet_tl.data.folders import _walk_files

    if isinstance(images, (str, os.PathLike)) or _is_pil(images) or (
            isinstance(images, np.ndarray) and _one_image(images)):
        images = [images]
    items: list[tuple[str, Any]] = []
    for position, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if os.path.isdir(path):
                items += [(file, file) for file in _walk_files(Path(path), [])]
            else:
                items.append((path, path))
        elif _is_pil(item):
            items.append((f"<PIL image {position}>", item))
        else:
            array = np.asarray(item)
            if not _one_image(array):
                raise ValueError(f"input {position} is an array of shape {array.shape}; expected "
                                 "one image (H, W[, 1|3|4]) or a batch (N, H, W[, 1|3|4])")
            items.append((f"<array {position}>", array))
    return items


def file_batches(
    paths: Sequence[str],
    image_size: tuple[int, int],
    *,
    resize: str,
    batch_size: int,
) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]], list[tuple[str, str]]]:
    """Check ``paths`` with the doctor, then read the good ones in batches.

    Returns:
        ``(batches, skipped)``: ``batches`` yields ``(positions, pixels)``, the indices into
        ``paths`` and their float32 ``(n, H, W, 3)`` pixels in [0, 255]; ``skipped`` holds
        ``(path, reason)`` for every file that is not a usable image (known before reading).
    """
    from effnet_tl.data.doctor import check_examples
    from effnet_tl.data.examples import FileExamples

    paths = [os.fspath(path) for path in paths]
    if not paths:
        return iter(()), []
    examples = FileExamples(tuple(paths), np.zeros(len(paths), np.int64), ("?",))
    checked, issues = check_examples(examples)
    where: dict[str, list[int]] = defaultdict(list)  # a file may be given twice
    for position, path in enumerate(paths):
        where[path].append(position)
    skipped = [(issue.path, issue.reason) for issue in issues]
    for path, _ in skipped:
        where[path].pop(0)
    positions = np.asarray([where[path].pop(0) for path in checked.paths], np.int64)
    return _read_groups(checked, positions, image_size, eval_policy(resize), batch_size), skipped


def _read_groups(checked, positions, image_size, policy, batch_size):
    from effnet_tl.data.pipeline import make_dataset

    jpeg = np.asarray([decoder == "jpeg" for decoder in checked.decoders], bool)
    for group in (np.flatnonzero(jpeg), np.flatnonzero(~jpeg)):
        if not len(group):
            continue
        examples = checked.subset(group)
        dataset = make_dataset(examples, image_size=image_size, batch_size=batch_size,
                               training=False, resize=policy, cache=None, shuffle=False)
        read = 0
        for pixels, _ in dataset:
            yield positions[group[read:read + len(pixels)]], pixels.numpy()
            read += len(pixels)
        if read != len(group):  # the pipeline logs and drops what TensorFlow cannot decode
            raise ValueError(f"TensorFlow could not decode {len(group) - read} of {len(group)} "
                             f"files that the doctor accepted: {list(examples.paths)}")


def read_pixels(paths: Sequence[str], image_size, *, resize: str, batch_size: int = 64):
    """All of ``paths`` as one float32 array, in order; a bad file raises ``ValueError``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
        >>> Image.new("RGB", (30, 20), (255, 0, 0)).save(path)
        >>> read_pixels([path], (8, 8), resize="center_crop")[0, 4, 4].tolist()
        [255.0, 0.0, 0.0]
    """
    batches, skipped = file_batches(paths, tuple(image_size), resize=resize,
                                    batch_size=batch_size)
    if skipped:
        raise ValueError(f"{len(skipped)} of {len(paths)} files are not usable images: "
                         + "; ".join(f"{path}: {reason}" for path, reason in skipped))
    out = np.zeros((len(paths), *image_size, 3), np.float32)
    for positions, pixels in batches:
        out[positions] = pixels
    return out
