"""See what an augmentation does before training with it: a PNG grid of augmented samples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from effnet_tl.augment.albumentations_adapter import AlbumentationsAdapter, is_albumentations
from effnet_tl.augment.fused import FusedAugment
from effnet_tl.augment.pipeline import build_augmenter
from effnet_tl.augment.presets import DEFAULT_PRESET

_IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
GAP_PIXELS = 2  # white gutter between (and around) grid cells


def preview(source: Any, preset: Any = DEFAULT_PRESET, *, path: str | os.PathLike | None = None,
            columns: int = 4, rows: int = 4, seed: int = 0,
            image_size: tuple[int, int] = (224, 224), show: bool | None = None) -> Path:
    """Write a PNG grid: one source image per row, the original first, augmented copies after.

    MixUp/CutMix are not drawn (they need labels and pair images); everything else in the preset
    is, exactly as training would apply it.

    Args:
        source: A folder of images (class sub-folders or flat), a ``tf.data.Dataset`` of images or
            ``(images, labels)`` (batched or not), or a NumPy array (N, H, W, 3) / (H, W, 3) with
            pixels in [0, 255].
        preset: A preset name, :class:`AugmentSpec`, Keras layer(s), or an albumentations Compose.
        path: Where to write the PNG; default ``<tmp>/effnet_tl_preview/<preset>_seed<seed>.png``.
        columns: Cells per row (the first is the original image).
        rows: Number of source images.
        seed: Seed of the augmentation draws.
        image_size: (height, width) folder images are resized to (arrays/datasets keep theirs).
        show: Display inline (IPython). Default: when running inside IPython.

    Returns:
        The PNG path. Its size is ``columns * W + (columns + 1) * 2`` by
        ``rows * H + (rows + 1) * 2`` pixels for H x W images.

    Example:
        >>> import numpy as np, tempfile, os
        >>> images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        >>> out = preview(images, "medium", path=os.path.join(tempfile.mkdtemp(), "p.png"),
        ...               columns=3, rows=2, show=False)
        >>> out.suffix
        '.png'
    """
    if columns < 2 or rows < 1:
        raise ValueError(f"preview needs columns >= 2 and rows >= 1, got columns={columns}, rows={rows}")
    images = _load_source(source, rows, image_size)
    count = images.shape[0]
    if count == 0:
        raise ValueError(f"no images found in {source!r}")
    augmented = _augment_copies(images, preset, columns - 1, seed)  # [count, columns - 1, H, W, 3]

    height, width = images.shape[1], images.shape[2]
    grid = np.full(
        (rows * height + (rows + 1) * GAP_PIXELS, columns * width + (columns + 1) * GAP_PIXELS, 3),
        255, np.uint8,
    )
    for row in range(count):
        cells = [images[row]] + list(augmented[row])
        for column, cell in enumerate(cells):
            top = GAP_PIXELS + row * (height + GAP_PIXELS)
            left = GAP_PIXELS + column * (width + GAP_PIXELS)
            grid[top:top + height, left:left + width] = np.clip(np.rint(cell), 0, 255).astype(np.uint8)

    if path is None:
        name = preset if isinstance(preset, str) else type(preset).__name__
        path = Path(tempfile.gettempdir()) / "effnet_tl_preview" / f"{name}_seed{seed}.png"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(grid).save(path, format="PNG")
    if show is None:
        show = _in_ipython()
    if show:
        from IPython.display import Image as IPythonImage, display

        display(IPythonImage(filename=str(path)))
    return path


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _augment_copies(images: np.ndarray, preset: Any, copies: int, seed: int) -> np.ndarray:
    count = images.shape[0]
    # Copy c of image r sits at index r * copies + c of one batch: one vectorised call.
    tiled = np.repeat(images, copies, axis=0).astype(np.float32)
    if is_albumentations(preset) or isinstance(preset, AlbumentationsAdapter):
        adapter = preset if isinstance(preset, AlbumentationsAdapter) else AlbumentationsAdapter(preset, seed)
        out = np.stack([adapter.apply_numpy(image, adapter.element_seed(0, index))
                        for index, image in enumerate(tiled)])
        return out.reshape((count, copies) + out.shape[1:])
    layer = build_augmenter(preset, seed=seed)
    if isinstance(layer, FusedAugment):
        out = layer.augment(tiled, tf.constant([seed, 0], tf.int64)).numpy()
    else:
        out = np.asarray(layer(tiled, training=True))
    return out.reshape((count, copies) + out.shape[1:])


def _load_source(source: Any, count: int, image_size: tuple[int, int]) -> np.ndarray:
    if isinstance(source, tf.data.Dataset):
        return _take_from_dataset(source, count)
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"preview source {str(source)!r} is not a folder")
        try:
            from effnet_tl.data import make_dataset, resolve_source
        except ImportError:  # the data layer is optional for a preview
            return _load_folder(folder, count, image_size)
        # The data layer lists class folders, skips unreadable files, decodes and resizes.
        examples = resolve_source(folder, val_fraction=0.0)
        ds = make_dataset(examples, image_size=tuple(image_size), batch_size=count, training=False,
                          resize="stretch", cache=False, shuffle=False)
        return _take_from_dataset(ds, count)
    array = np.asarray(source)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"preview needs images (N, H, W, 3) or (H, W, 3); got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[:count].astype(np.float32)


def _take_from_dataset(ds: tf.data.Dataset, count: int) -> np.ndarray:
    spec = ds.element_spec
    if isinstance(spec, tuple):
        ds = ds.map(lambda *parts: parts[0])
        spec = spec[0]
    if spec.shape.rank == 4:
        ds = ds.unbatch()
    images = [np.asarray(image, np.float32) for image in ds.take(count)]
    return np.stack(images) if images else np.zeros((0, 1, 1, 3), np.float32)


def _load_folder(folder: Path, count: int, image_size: tuple[int, int]) -> np.ndarray:
    # Fallback when effnet_tl.data is absent: a small private loader (tf.io decode + resize), round-robin over class folders so the grid
    # shows several classes. Unreadable files are skipped: a preview must not die on one bad JPEG.
    groups: dict[Path, list[Path]] = {}
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix.lower() in _IMAGE_EXTENSIONS and not file.name.startswith("."):
            groups.setdefault(file.parent, []).append(file)
    ordered: list[Path] = []
    queues = [list(files) for files in groups.values()]
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    images = []
    for file in ordered:
        if len(images) == count:
            break
        try:
            image = tf.io.decode_image(tf.io.read_file(str(file)), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            continue
        images.append(tf.image.resize(tf.cast(image, tf.float32), image_size).numpy())
    if not images:
        raise ValueError(f"no readable images under {str(folder)!r}")
    return np.stack(images)
