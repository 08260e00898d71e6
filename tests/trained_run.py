"""One tiny trained run on real image files, made by the real ``effnet-tl fit`` command once per
test session and shared by the tests of the commands, of prediction and of the exports.

The data: three classes of coloured squares on grey noise, PNG and JPEG files in ``train/``,
``val/`` and ``test/`` folders; the test split also holds JPEGs four times the model's input
size, which the evaluation pipeline decodes at a reduced DCT scale. The model: Lite0 with its
offline ImageNet weights at 32 px, a few epochs (~15 s on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import effnet_tl

COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
SPLITS = {"train": 16, "val": 5, "test": 6}
BIG_TEST_JPEGS = 2  # per class, 128x160 px
FIT_FLAGS = ["--variant", "lite0", "--weights", "imagenet", "--image-size", "32",
             "--batch-size", "8", "--head-epochs", "6", "--head-lr", "1e-2",
             "--finetune-epochs", "1", "--unfreeze-blocks", "1", "--augment", "light"]
REPO = Path(effnet_tl.__file__).resolve().parent.parent


def command_env() -> dict:
    """The environment of a command run as a user runs it, finding this checkout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_command(*args, cwd, timeout=300) -> subprocess.CompletedProcess:
    """``python -m effnet_tl.cli ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "effnet_tl.cli", *map(str, args)], cwd=cwd,
                          env=command_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def square_image(rng, colour, size=(40, 48)) -> np.ndarray:
    height, width = size
    image = rng.integers(90, 160, (height, width, 3)).astype(np.uint8)
    side = min(height, width) // 2
    y, x = rng.integers(0, height - side), rng.integers(0, width - side)
    image[y:y + side, x:x + side] = colour
    return image


def write_split_folder(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in SPLITS.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                suffix = "jpg" if i % 2 else "png"
                Image.fromarray(square_image(rng, colour)).save(folder / f"{i:02d}.{suffix}")
            if split == "test":
                for i in range(BIG_TEST_JPEGS):
                    image = square_image(rng, colour, size=(128, 160))
                    Image.fromarray(image).save(folder / f"big{i}.jpg", quality=92)
    return root


def make_trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(data, run)``: made on first use in this session's temporary folder, then reused."""
    base = tmp_path_factory.getbasetemp() / "shared_trained_run"
    data, run = base / "shapes", base / "run"
    if not (run / "model.keras").exists():
        write_split_folder(data)
        done = run_command("fit", data, "--num-classes", "3", *FIT_FLAGS, "--run-dir", run,
                           cwd=base)
        assert done.returncode == 0, done.stderr
    return data, run


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``(data, run)``: the session's tiny trained run (imported by the conftest.py files of
    the test folders that use it)."""
    return make_trained_run(tmp_path_factory)
