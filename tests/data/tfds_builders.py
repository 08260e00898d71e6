"""Real TensorFlow Datasets builders for tests, registered on import, that never leave the machine.

``EffnetTlTestShapes`` "downloads" a zip of grayscale PNGs of varying sizes that a test writes
(through tfds' ``dl_manager``, as a published dataset does); ``EffnetTlTestColors`` has its own
validation split; ``EffnetTlTestUnreachable`` downloads from a closed port on this machine.
"""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

SHAPES = "effnet_tl_test_shapes"
COLORS = "effnet_tl_test_colors"
UNREACHABLE = "effnet_tl_test_unreachable"
CLASSES = ("circle", "square", "triangle")
TRAIN_COUNTS = {"circle": 12, "square": 8, "triangle": 4}  # imbalanced: ratio 3
TEST_COUNTS = {"circle": 2, "square": 2, "triangle": 2}


def image_classes_info(builder, *, channels: int, names) -> tfds.core.DatasetInfo:
    """An image classification dataset's info: uint8 images of any size, class labels."""
    return tfds.core.DatasetInfo(
        builder=builder,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, channels)),
            "label": tfds.features.ClassLabel(names=list(names)),
        }),
        supervised_keys=("image", "label"),
    )


class EffnetTlTestShapes(tfds.core.GeneratorBasedBuilder):
    """Grayscale PNGs of varying sizes, read from the zip archive at ``ARCHIVE``."""

    VERSION = tfds.core.Version("1.0.0")
    ARCHIVE: str | None = None  # set by the test: the "download URL", a local file
    preparations = 0  # how many times tfds ran the download-and-prepare step

    def _info(self):
        return image_classes_info(self, channels=1, names=CLASSES)

    def _split_generators(self, dl_manager):
        type(self).preparations += 1
        root = dl_manager.download_and_extract(type(self).ARCHIVE)
        return {split: self._generate_examples(root / split) for split in ("train", "test")}

    def _generate_examples(self, folder):
        for path in sorted(folder.glob("*/*.png")):
            yield f"{path.parent.name}/{path.name}", {"image": path, "label": path.parent.name}


class EffnetTlTestColors(tfds.core.GeneratorBasedBuilder):
    """RGB images of varying sizes with train, validation and test splits of their own."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return image_classes_info(self, channels=3, names=("red", "green"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(10, 0),
                "validation": self._generate_examples(4, 100),
                "test": self._generate_examples(4, 200)}

    def _generate_examples(self, count, offset):
        for i in range(count):
            image = np.full((8 + i, 12, 3), offset + i, np.uint8)
            yield f"{offset}_{i}", {"image": image, "label": i % 2}


class EffnetTlTestUnreachable(tfds.core.GeneratorBasedBuilder):
    """Its download host, ``URL``, refuses every connection."""

    VERSION = tfds.core.Version("1.0.0")
    URL: str | None = None
    download_attempts = 0

    def _info(self):
        return image_classes_info(self, channels=3, names=("a", "b"))

    def _split_generators(self, dl_manager):
        type(self).download_attempts += 1
        dl_manager.download(type(self).URL)
        raise AssertionError("the download of a closed port cannot succeed")

    def _generate_examples(self):  # pragma: no cover - never reached
        yield from ()


def write_shapes_archive(folder: Path) -> tuple[Path, dict[int, tuple[str, str, Path]]]:
    """PNG files of every class and split, zipped; returns (zip, {id: (split, class, path)}).

    Each image is a grayscale noise picture of its own size whose top-left pixel is its id,
    so any pipeline's output can be traced back to its file.
    """
    rng = np.random.default_rng(0)
    truth, next_id = {}, 1
    for split, counts in (("train", TRAIN_COUNTS), ("test", TEST_COUNTS)):
        for name, count in counts.items():
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                height, width = 24 + 3 * (i % 4), 40 - 2 * (i % 5)
                pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
                pixels[0, 0] = next_id
                path = folder / split / name / f"{i:02d}.png"
                Image.fromarray(pixels, "L").save(path)
                truth[next_id] = (split, name, path)
                next_id += 1
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as bundle:
        for _, _, path in truth.values():
            bundle.write(path, path.relative_to(folder))
    return archive, truth


def closed_port() -> int:
    """A localhost TCP port nothing listens on: a connection there is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
