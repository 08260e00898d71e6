"""The ``effnet-tl`` command.

    effnet-tl fit DATASET_DIR --num-classes N [--variant lite0] [--image-size 224] ...
    effnet-tl demo [--work-dir DIR]        # the README's quick start (digits, Lite0, offline)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------- demo

def write_digits(root: Path, *, seed: int = 0) -> dict:
    """Write digits as root/{train,test}/<digit>/<index>.png; returns the split's arrays."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    indices = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        indices, test_size=0.2, stratify=digits.target, random_state=seed
    )
    for split, chosen in (("train", train_idx), ("test", test_idx)):
        for index in chosen:
            folder = root / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{index:04d}.png"
            if not path.exists():
                Image.fromarray(images[index], mode="L").save(path)
    return {
        "x_train": digits.data[train_idx], "y_train": digits.target[train_idx],
        "x_test": digits.data[test_idx], "y_test": digits.target[test_idx],
    }


def baseline_accuracy(split: dict) -> float:
    """Logistic regression on the 64 raw pixels (standardised): ≈ 96-97 % on this split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    model.fit(split["x_train"], split["y_train"])
    return float(model.score(split["x_test"], split["y_test"]))


# The settings of the README's main job (everything else is effnet_tl.fit's default).
QUICKSTART_SETTINGS = dict(
    variant="lite0",
    weights="imagenet",
    image_size=64,
    finetune_epochs=10,
    unfreeze_blocks=10,
    finetune_views=10,  # a fresh augmentation every epoch, still computed below the top blocks
    finetune_lr=3e-4,
    # Digits are not mirror-symmetric: the default preset without its horizontal flip.
    augment=None,  # filled in main() (needs effnet_tl.augment)
    val_fraction=0.1,
)


def demo_main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="effnet-tl demo: Lite0 on digits vs logistic regression")
    parser.add_argument("--work-dir", default=None, help="where to write data/ and runs/ "
                        "(default: a new temporary folder)")
    parser.add_argument("--image-size", type=int, default=QUICKSTART_SETTINGS["image_size"])
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effnet_tl_quickstart_"))
    data_dir = work / "digits"
    started = time.perf_counter()
    split = write_digits(data_dir)
    baseline = baseline_accuracy(split)

    from effnet_tl.augment import AugmentSpec
    from effnet_tl import fit

    settings = dict(QUICKSTART_SETTINGS, image_size=args.image_size)
    settings["augment"] = AugmentSpec(
        max_rotation_degrees=10.0, max_translation_fraction=0.1, max_zoom_fraction=0.1,
        max_brightness_delta=0.1, max_contrast_fraction=0.1, interpolation="nearest",
    )
    result = fit(
        data_dir, 10, run_dir=work / "runs" / "digits-lite0", verbose=args.verbose, **settings
    )
    seconds = time.perf_counter() - started
    fitted = result.test_accuracy
    print()
    print(f"digits, stratified 80/20 split ({len(split['y_train'])} train / "
          f"{len(split['y_test'])} test images)")
    print(f"  logistic regression on raw pixels : {baseline:.2%}")
    print(f"  effnet_tl.fit lite0 (ImageNet)    : {fitted:.2%}  "
          f"(val {result.val_accuracy:.2%}, {seconds:.0f} s total)")
    print(f"  run folder: {result.run_dir}")
    if fitted <= baseline:
        print("FAILED: fine-tuning did not beat the logistic-regression baseline", file=sys.stderr)
        return 1
    print(f"OK: fine-tuned Lite0 beats the baseline by {100 * (fitted - baseline):.1f} points")
    return 0



# --------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effnet-tl", description="Fine-tune EfficientNet on a folder of images.")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="two-phase fine-tuning; writes runs/<name>/")
    fit.add_argument("dataset_dir")
    fit.add_argument("--num-classes", type=int, required=True)
    fit.add_argument("--variant", default="b0")
    fit.add_argument("--weights", default="imagenet", help="'imagenet', 'none' or a weights file")
    fit.add_argument("--image-size", type=int, default=None)
    fit.add_argument("--run-dir", default=None)
    fit.add_argument("--runs-root", default="runs")
    fit.add_argument("--name", default=None)
    fit.add_argument("--batch-size", type=int, default=None)
    fit.add_argument("--head-epochs", type=int, default=None)
    fit.add_argument("--finetune-epochs", type=int, default=None)
    fit.add_argument("--unfreeze-blocks", default="auto", help="a count, a block name, 'all' or 'auto'")
    fit.add_argument("--finetune-views", default="auto",
                     help="cached views of the training set for fine-tuning: a count (0: no "
                          "cache) or 'auto'")
    fit.add_argument("--head-lr", type=float, default=None)
    fit.add_argument("--finetune-lr", type=float, default=None)
    fit.add_argument("--label-smoothing", type=float, default=0.1)
    fit.add_argument("--augment", default="medium", help="none, light, medium or heavy")
    fit.add_argument("--val-fraction", type=float, default=0.2)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--strategy", default=None)
    fit.add_argument("--tensorboard", action="store_true")
    fit.add_argument("--overwrite", action="store_true")
    fit.add_argument("--verbose", type=int, default=1)

    demo = commands.add_parser("demo", help="the quick start: Lite0 on scikit-learn's digits")
    demo.add_argument("--work-dir", default=None)
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--verbose", type=int, default=2)
    return parser


def _unfreeze(value: str):
    """A count argument ("3") as an int; names and "auto"/"all" as given."""
    return int(value) if value.isdigit() else value


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    if args.command == "demo":
        forwarded = ["--image-size", str(args.image_size), "--verbose", str(args.verbose)]
        if args.work_dir:
            forwarded += ["--work-dir", args.work_dir]
        return demo_main(forwarded)

    from effnet_tl import fit

    result = fit(
        args.dataset_dir, args.num_classes, variant=args.variant,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=args.image_size, run_dir=args.run_dir, runs_root=args.runs_root,
        name=args.name, batch_size=args.batch_size, head_epochs=args.head_epochs,
        finetune_epochs=args.finetune_epochs, unfreeze_blocks=_unfreeze(args.unfreeze_blocks),
        finetune_views=_unfreeze(args.finetune_views), head_lr=args.head_lr, finetune_lr=args.finetune_lr,
        label_smoothing=args.label_smoothing, augment=args.augment,
        val_fraction=args.val_fraction, seed=args.seed, strategy=args.strategy,
        tensorboard=args.tensorboard, overwrite=args.overwrite, verbose=args.verbose,
    )
    summary = {"run_dir": str(result.run_dir), "val_accuracy": result.val_accuracy,
               "test_accuracy": result.test_accuracy, "stopped": result.stopped}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
