"""GPU smoke test: effnet_tl's GPU path on a real GPU, and what mixed precision and XLA pay.

Checks (the script exits 1 when one fails):

1. TensorFlow sees a GPU; ``get_strategy("auto")`` trains on it; the dtype policy is
   ``mixed_float16``; augmentation runs inside the model (on the GPU).
2. ``effnet_tl.fit`` trains end to end on a generated JPEG folder (Lite0, its ImageNet weights
   when the ``lite`` extra is installed, else random ones), the classifier's output is float32
   (the head stays float32 under mixed precision), and the saved model reloads.
3. Throughput of a full fine-tuning train step (EfficientNet-B0, 224 px, ``--batch``):
   float32 vs mixed_float16, each with XLA off and on (Keras ``jit_compile``), alternating,
   median of ``--repeats`` passes; ratios against float32 without XLA. NVIDIA's published
   TF2 B0 training figures for one A100 are ~1,200 img/s (TF32) and ~3,450 img/s (AMP).

Without a GPU it says so and exits 0 having measured nothing (this is what CI sees).

    python benchmarks/gpu_smoke.py [--batch 64] [--steps 20] [--repeats 3] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import alternate, make_jpeg_folder, print_table  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FAILURES: list[str] = []


def check(condition: bool, what: str) -> None:
    print(f"  [{'ok' if condition else 'FAILED'}] {what}", flush=True)
    if not condition:
        FAILURES.append(what)


def check_placement_and_policy() -> None:
    from effnet_tl.augment import choose_placement
    from effnet_tl.train.strategy import get_strategy, mixed_precision_policy_for

    strategy = get_strategy("auto")
    print(f"strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s)")
    check(mixed_precision_policy_for(strategy) == "mixed_float16", "policy is mixed_float16")
    check(choose_placement(strategy) == "model", "augmentation placed in the model (GPU)")
    with strategy.scope():
        variable = tf.Variable(1.0)
    check("GPU" in variable.device.upper(), f"variables on the GPU ({variable.device})")


def check_fit(work: Path) -> None:
    from effnet_tl import fit
    from effnet_tl.models.weights import WeightsUnavailableError

    data = make_jpeg_folder(work / "jpegs", num_images=600, num_classes=3, size=(320, 240))
    settings = dict(variant="lite0", image_size=160, head_epochs=3, finetune_epochs=3,
                    unfreeze_blocks=4, early_stopping=False, run_dir=work / "run", verbose=2,
                    overwrite=True)
    try:
        result = fit(data, 3, weights="imagenet", **settings)
    except WeightsUnavailableError:
        print("  (Lite0 ImageNet weights not installed: training from random weights)")
        result = fit(data, 3, weights=None, **settings)
    check(result.config["settings"]["model"]["mixed_precision"] == "mixed_float16",
          "fit resolved mixed_float16")
    output = result.model(np.zeros((2, 160, 160, 3), "float32"))
    check(output.dtype == "float32", f"the classifier's output is float32 ({output.dtype})")
    reloaded = keras.saving.load_model(result.paths.model, safe_mode=True)
    check(reloaded is not None, "model.keras reloads with safe_mode=True")
    print(f"  fit: {result.metrics['seconds']:.1f} s, validation accuracy "
          f"{result.val_accuracy:.3f}, phases {result.metrics['phase_seconds']}")


def train_step_rates(batch: int, steps: int, repeats: int) -> dict[str, float]:
    from effnet_tl.classifier import build_classifier

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)
    candidates = {}
    for policy in ("float32", "mixed_float16"):
        for jit in (False, True):
            keras.mixed_precision.set_dtype_policy(policy)
            model = build_classifier(10, variant="b0", weights=None, image_size=224)
            model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                          loss="categorical_crossentropy", jit_compile=jit)

            def run(model=model):
                model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
                return steps * batch

            candidates[f"B0 train step, {policy}, XLA {'on' if jit else 'off'}"] = run
    keras.mixed_precision.set_dtype_policy("float32")
    return alternate(candidates, repeats=repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("gpu_smoke: TensorFlow sees no GPU here: nothing checked or measured. Run this "
              "on a GPU machine (pip install 'tensorflow[and-cuda]').")
        return 0
    details = tf.config.experimental.get_device_details(gpus[0])
    print(f"GPU: {details.get('device_name', gpus[0].name)} x{len(gpus)}, TensorFlow "
          f"{tf.__version__}, Keras {keras.__version__}")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effnet_tl-gpu-"))
    print("\n1. placement and policy")
    check_placement_and_policy()
    print("\n2. fit end to end")
    check_fit(work)
    print("\n3. train-step throughput")
    rates = train_step_rates(args.batch, args.steps, args.repeats)
    print_table(f"images/s, batch {args.batch}, median of {args.repeats}", rates,
                baseline="B0 train step, float32, XLA off")
    print(f"\n{len(FAILURES)} check(s) failed" + (f": {FAILURES}" if FAILURES else ""))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
