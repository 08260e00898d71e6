"""Time to accuracy: the keras.io fine-tuning recipe vs effnet_tl.fit defaults, same run.

Same pretrained backbone (EfficientNet-Lite0, offline ImageNet weights), same data (scikit-learn
digits as PNG folders, stratified 80/20 train/test, 10 % of train for validation), same image
size and the same epoch budget (phase 1 + phase 2 epochs). The keras.io recipe
("Image classification via fine-tuning with EfficientNet"): RandomRotation(0.15),
RandomTranslation(0.1, 0.1), RandomFlip(), RandomContrast(0.1) in the model; head
GlobalAveragePooling2D -> BatchNormalization -> Dropout(0.2) -> Dense(softmax); phase 1 frozen
backbone with Adam(1e-2); phase 2 the top 20 layers unfrozen with BatchNormalization frozen,
Adam(1e-5). effnet_tl.fit runs with its defaults except image_size, the epoch budget and the
val split. Prints test accuracy and wall time of both, and the ratios; and, for time to the
recipe's accuracy, the same fit call stopped after its head phase (finetune_epochs=0). The
three alternate (who goes first flips every repeat); medians of ``--repeats`` runs, and the
median of the per-repeat time ratios.

    python -m benchmarks.time_to_accuracy [--epochs1 4] [--epochs2 4] [--image-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _keras_applications_layer_count(layer) -> int:
    """How many layers keras.applications uses for what is one layer of ours."""
    from effnet_tl.layers import FusedMBConv, MBConv

    if not isinstance(layer, (MBConv, FusedMBConv)):
        return 1
    count = 3 if layer.expand_ratio != 1 else 0          # expand conv, BN, activation
    count += 3 if isinstance(layer, MBConv) else 0       # depthwise conv, BN, activation
    count += 5 if layer.se is not None else 0            # squeeze, reshape, reduce, expand, excite
    count += 2                                           # project conv, BN
    count += 2 if layer.has_residual else 0              # drop, add
    return count


def _top_layers_holding(base, keras_layers: int) -> int:
    """Number of our top-level layers that hold the top ``keras_layers`` keras.applications layers."""
    total = 0
    for taken, layer in enumerate(reversed(base.layers), start=1):
        total += _keras_applications_layer_count(layer)
        if total >= keras_layers:
            return taken
    return len(base.layers)


def keras_io_recipe(source, image_size, epochs1, epochs2, batch_size=32):
    import keras

    from effnet_tl import backbone
    from effnet_tl.data import make_dataset

    def data(examples, training):
        return make_dataset(examples, image_size=image_size, batch_size=batch_size,
                            training=training, resize="center_crop", seed=0)

    train, val, test = data(source.train, True), data(source.val, False), data(source.test, False)
    augment = keras.Sequential([
        keras.layers.RandomRotation(factor=0.15), keras.layers.RandomTranslation(0.1, 0.1),
        keras.layers.RandomFlip(), keras.layers.RandomContrast(factor=0.1),
    ], name="img_augmentation")
    inputs = keras.Input((image_size, image_size, 3))
    base = backbone("lite0", weights="imagenet", input_shape=(image_size, image_size, 3))
    base.trainable = False
    x = base(augment(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    outputs = keras.layers.Dense(source.num_classes, activation="softmax", name="pred")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, epochs=epochs1, validation_data=val, verbose=2)
    # Phase 2: the top 20 layers of the backbone, BatchNorm frozen (the recipe's unfreeze_model).
    # Our blocks are single layers; count them in keras.applications' per-op layers instead.
    base.trainable = True
    for layer in base.layers[:-_top_layers_holding(base, 20)]:
        layer.trainable = False
    for layer in base._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, epochs=epochs1 + epochs2, initial_epoch=epochs1, validation_data=val,
              verbose=2)
    return float(model.evaluate(test, verbose=0)[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs1", type=int, default=4)
    parser.add_argument("--epochs2", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args(argv)

    from effnet_tl.cli import write_digits
    from effnet_tl.data import scan
    from effnet_tl.train import fit

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effnet_tl_tta_"))
    write_digits(work / "digits")
    source = scan(work / "digits", val_fraction=0.1, seed=0).source

    def recipe():
        return keras_io_recipe(source, args.image_size, args.epochs1, args.epochs2)

    def our_fit(name, finetune_epochs):
        def run():
            result = fit(work / "digits", 10, variant="lite0", weights="imagenet",
                         image_size=args.image_size, head_epochs=args.epochs1,
                         finetune_epochs=finetune_epochs, val_fraction=0.1,
                         run_dir=work / "runs" / f"{name}-{time.time_ns()}", verbose=2)
            return result.test_accuracy
        return run

    candidates = {
        "keras.io recipe": recipe,
        f"effnet_tl.fit, {args.epochs1}+{args.epochs2} epochs": our_fit("full", args.epochs2),
        # Time to the recipe's accuracy: the same call stopped after its (cheap) head phase.
        f"effnet_tl.fit, head phase only ({args.epochs1} epochs)": our_fit("head", 0),
    }
    names = list(candidates)
    results = {name: [] for name in names}  # (accuracy, seconds) per repeat
    for repeat in range(args.repeats):
        # Alternate who goes first, so no one always pays the process's cold start.
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            accuracy = candidates[name]()
            results[name].append((accuracy, time.perf_counter() - start))

    baseline = names[0]
    print()
    print(f"digits test split, Lite0 ImageNet, {args.image_size} px, "
          f"{args.epochs1}+{args.epochs2} epochs, same machine, same run, "
          f"median of {args.repeats} alternating repeats")
    base_seconds = [seconds for _, seconds in results[baseline]]
    for name in names:
        accuracies = [accuracy for accuracy, _ in results[name]]
        seconds = [s for _, s in results[name]]
        time_ratios = [s / b for s, b in zip(seconds, base_seconds)]
        accuracy = statistics.median(accuracies)
        print(f"  {name:<40s}: test accuracy {accuracy:.2%}  wall {statistics.median(seconds):5.1f} s"
              f"  ratio vs recipe: accuracy "
              f"{accuracy / max(statistics.median(a for a, _ in results[baseline]), 1e-9):.3f}x"
              f"  time {statistics.median(time_ratios):.2f}x"
              f"  (runs: {', '.join(f'{a:.1%}/{s:.0f}s' for a, s in results[name])})")
    print("  goal: accuracy >= the recipe's at <= 0.5x its wall time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
