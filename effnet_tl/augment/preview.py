"""See what an augmentation does before training with it: a PNG grid of augmented samples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from effnet_tl.augment.albumentations_adapter import AlbumentationsAdapter, is_albumentations
from effnet_tl.augment.fused import FusedAugment
from effnet_tl.augment.pipeline import build_augmenter
from effnet_tl.augment.presets import DEFAULT_PRESET, augmentation_off
from effnet_tl.sizes import image_size_pair

GAP_PIXELS = 2  # white gutter between (and around) grid cells
LABEL_PIXELS = 14  # caption strip under each cell, when the images have classes
# At most this many elements of a dataset are read to find samples of several classes.
DATASET_SCAN_LIMIT = 256


def preview(source: Any, preset: Any = DEFAULT_PRESET, *, path: str | os.PathLike | None = None,
            columns: int = 4, rows: int = 4, seed: int = 0,
            image_size: int | tuple[int, int] = (224, 224), show: bool | None = None) -> Path:
    """Write a PNG grid: one source image per row, the original first, augmented copies after.

    Rows are drawn across the classes in turn (round-robin: one image of each class, then a
    second of each...), and every cell is captioned with its class name: a folder's class
    folder, a dataset's label index. MixUp/CutMix are not drawn (they need labels and pair
    images); everything else in the preset is, exactly as training would apply it.

    Args:
        source: A folder of images (class sub-folders, a train/val split, or flat), a
            ``tf.data.Dataset`` of images or ``(images, labels)`` (batched or not), or a NumPy
            array (N, H, W, 3) / (H, W, 3) with pixels in [0, 255] (no classes: no captions).
        preset: A preset name, :class:`AugmentSpec`, Keras layer(s), an albumentations Compose,
            or ``None``/``"none"`` (see :func:`augmentation_off`: the copies equal the original).
        path: Where to write the PNG; default ``<tmp>/effnet_tl_preview/<preset>_seed<seed>.png``.
        columns: Cells per row (the first is the original image).
        rows: Number of source images.
        seed: Seed of the augmentation draws.
        image_size: ``(height, width)`` (or one int) folder images are resized to (arrays and
            datasets keep theirs).
        show: Display inline (IPython). Default: when running inside IPython.

    Returns:
        The PNG path. Its size is ``columns * W + (columns + 1) * 2`` by
        ``rows * (H + c) + (rows + 1) * 2`` pixels for H x W images, where the caption strip
        ``c`` is :data:`LABEL_PIXELS` when the images have classes, else 0.

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
    images, labels = _load_source(source, rows, image_size_pair(image_size))
    count = images.shape[0]
    if count == 0:
        raise ValueError(f"no images found in {source!r}")
    augmented = _augment_copies(images, preset, columns - 1, seed)  # [count, columns - 1, H, W, 3]

    height, width = images.shape[1], images.shape[2]
    caption = LABEL_PIXELS if labels is not None else 0
    grid = np.full(
        (rows * (height + caption) + (rows + 1) * GAP_PIXELS,
         columns * width + (columns + 1) * GAP_PIXELS, 3),
        255, np.uint8,
    )
    for row in range(count):
        cells = [images[row]] + list(augmented[row])
        top = GAP_PIXELS + row * (height + caption + GAP_PIXELS)
        strip = None if labels is None else label_strip(labels[row], width)
        for column, cell in enumerate(cells):
            left = GAP_PIXELS + column * (width + GAP_PIXELS)
            pixels = np.clip(np.rint(cell), 0, 255).astype(np.uint8)
            grid[top:top + height, left:left + width] = pixels
            if strip is not None:
                grid[top + height:top + height + caption, left:left + width] = strip

    if path is None:
        name = preset if isinstance(preset, str) else type(preset).__name__
        path = Path(tempfile.gettempdir()) / "effnet_tl_preview" / f"{name}_seed{seed}.png"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, format="PNG")
    if show is None:
        show = _in_ipython()
    if show:
        from IPython.display import Image as IPythonImage, display

        display(IPythonImage(filename=str(path)))
    return path


def label_strip(text: str, width: int) -> np.ndarray:
    """The caption under a cell: ``text`` in black on white, shortened with "…" to fit.

    Example:
        >>> strip = label_strip("cat", 40)
        >>> strip.shape, strip.dtype.name, bool((strip < 128).any())
        ((14, 40, 3), 'uint8', True)
    """
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (width, LABEL_PIXELS), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    fitted = str(text)
    while len(fitted) > 1 and draw.textlength(fitted, font=font) > width - 2:
        fitted = fitted[:-2] + "…" if len(fitted) > 2 else fitted[:1]
    draw.text((1, 0), fitted, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


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
    if augmentation_off(preset):
        return tiled.reshape((count, copies) + tiled.shape[1:])
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


def round_robin(labels: Any) -> np.ndarray:
    """Indices that visit the classes in turn: the first of each class, then the second...

    Classes are visited in sorted order; within a class the original order is kept.

    Example:
        >>> round_robin([0, 0, 0, 1, 1, 2]).tolist()
        [0, 3, 5, 1, 4, 2]
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        return np.zeros(0, np.int64)
    # Rank of each example inside its class, then sort by (rank, class); stable keeps order.
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.r_[0, np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1]
    rank_sorted = np.arange(labels.size) - np.repeat(starts, np.diff(np.r_[starts, labels.size]))
    rank = np.empty(labels.size, np.int64)
    rank[order] = rank_sorted
    return np.lexsort((labels, rank))


def _load_source(source: Any, count: int,
                 image_size: tuple[int, int]) -> tuple[np.ndarray, list[str] | None]:
    """(images float32 [n <= count, H, W, 3], class name per image or None)."""
    if isinstance(source, tf.data.Dataset):
        return _take_from_dataset(source, count)
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"preview source {str(source)!r} is not a folder")
        return _load_folder(folder, count, image_size)
    array = np.asarray(source)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"preview needs images (N, H, W, 3) or (H, W, 3); got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[:count].astype(np.float32), None


def _take_from_dataset(ds: tf.data.Dataset, count: int) -> tuple[np.ndarray, list[str] | None]:
    spec = ds.element_spec
    labelled = isinstance(spec, tuple) and len(spec) >= 2
    image_spec = spec[0] if isinstance(spec, tuple) else spec
    if labelled:
        ds = ds.map(lambda *parts: (parts[0], parts[1]))
    if image_spec.shape.rank == 4:
        ds = ds.unbatch()
    if not labelled:
        images = [np.asarray(image, np.float32) for image in ds.take(count)]
        return (np.stack(images) if images else np.zeros((0, 1, 1, 3), np.float32)), None
    # Keep at most `count` images per class (no class fills more rows), then take turns.
    kept: dict[int, list[np.ndarray]] = {}
    for image, label in ds.take(max(count, DATASET_SCAN_LIMIT)):
        label = np.asarray(label)
        bucket = kept.setdefault(int(label.argmax()) if label.ndim else int(label), [])
        if len(bucket) < count:
            bucket.append(np.asarray(image, np.float32))
    turns = [(c, kept[c][i]) for i in range(count) for c in sorted(kept) if i < len(kept[c])]
    turns = turns[:count]
    if not turns:
        return np.zeros((0, 1, 1, 3), np.float32), None
    return np.stack([image for _, image in turns]), [str(c) for c, _ in turns]


def _load_folder(folder: Path, count: int,
                 image_size: tuple[int, int]) -> tuple[np.ndarray, list[str] | None]:
    # The data layer lists class folders, skips unreadable files, decodes and resizes.
    from effnet_tl.data import FileExamples, check_examples, make_dataset, resolve_source
    from effnet_tl.data.sources import is_hidden_or_system

    flat = not any(p.is_dir() and not is_hidden_or_system(p.name) for p in folder.iterdir())
    if flat:
        files = sorted(str(p) for p in folder.iterdir()
                       if p.is_file() and not is_hidden_or_system(p.name))
        examples = FileExamples(files, np.zeros(len(files), np.int64), ("",))
    else:
        examples = resolve_source(folder, val_fraction=0.0).train
    order = round_robin(examples.labels)
    # Check candidates in round-robin order, a chunk at a time, until enough good files are
    # found: a preview of a big folder must not wait for the doctor to read every file.
    good = []
    for start in range(0, len(order), count):
        checked, _ = check_examples(examples.subset(order[start:start + count]))
        good.append(checked)
        if sum(len(g) for g in good) >= count:
            break
    checked = FileExamples(
        [p for g in good for p in g.paths],
        np.concatenate([g.labels for g in good]) if good else [],
        examples.class_names,
        decoders=tuple(d for g in good for d in g.decoders),
        sizes=np.concatenate([g.sizes for g in good]) if good else None,
    )
    if not len(checked):
        return np.zeros((0, 1, 1, 3), np.float32), None
    # Skipped files leave gaps in the turns: take turns again among the good ones.
    picked = checked.subset(round_robin(checked.labels)[:count])
    ds = make_dataset(picked, image_size=image_size, batch_size=count, training=False,
                      resize="stretch", cache=False, shuffle=False)
    batches = [(x.numpy(), y.numpy().argmax(-1)) for x, y in ds]
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    return images, None if flat else [examples.class_names[i] for i in labels]
