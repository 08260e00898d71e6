"""Throughput of our EfficientNet-B0 vs keras.applications.EfficientNetB0, same process.

Full fine-tuning train step and inference, 224 px, batch 32, alternating between the two
models, median of ``--repeats`` timed passes of ``--steps`` batches each.

    python benchmarks/backbone.py [--repeats 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import alternate, print_table  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import effnet_tl  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    shape = (args.size, args.size, 3)
    models = {
        "effnet_tl.backbone('b0')": effnet_tl.backbone("b0", include_top=True, input_shape=shape),
        "keras.applications.EfficientNetB0": keras.applications.EfficientNetB0(
            weights=None, include_top=True, input_shape=shape),
    }
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch,) + shape).astype("float32"))
    labels = tf.constant(keras.utils.to_categorical(rng.integers(0, 1000, args.batch), 1000))

    def train_runner(model):
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="categorical_crossentropy")

        def run():
            for _ in range(args.steps):
                model.train_on_batch(images, labels)
            return args.steps * args.batch
        return run

    def infer_runner(model):
        predict = tf.function(lambda x: model(x, training=False))

        def run():
            for _ in range(args.steps):
                predict(images).numpy()
            return args.steps * args.batch
        return run

    baseline = "keras.applications.EfficientNetB0"
    train = alternate({n: train_runner(m) for n, m in models.items()}, repeats=args.repeats)
    print_table(f"train step, {args.size}px, batch {args.batch} (img/s)", train, baseline)
    infer = alternate({n: infer_runner(m) for n, m in models.items()}, repeats=args.repeats)
    print_table(f"inference, {args.size}px, batch {args.batch} (img/s)", infer, baseline)


if __name__ == "__main__":
    main()
