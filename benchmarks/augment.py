"""Input-block throughput: decode + resize + augmentation, ours vs the keras.io recipe.

Same generated JPEG folder as the pipeline benchmark (1,080 JPEGs, 500x375, 3 classes), decoded
and resized to 224 px in tf.data, batched by 32. Candidates, timed alternately in one process:

* bare: decode + resize only (the input-path limit);
* keras.io recipe: RandomRotation(0.15), RandomTranslation(0.1, 0.1), RandomFlip(),
  RandomContrast(0.1) mapped per image in tf.data (keras.io "Image classification via
  fine-tuning with EfficientNet");
* effnet_tl medium (our default path): effnet_tl.augment.augment_dataset(ds, "medium") on batches;
* effnet_tl medium, nearest: the same with nearest-neighbour resampling instead of bilinear;
* effnet_tl heavy: RandAugment + Inception crop + MixUp/CutMix.

Run: python -m benchmarks.augment [--folder PATH] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

from benchmarks.common import alternate, make_jpeg_folder, print_table

IMAGE_SIZE = (224, 224)
BATCH_SIZE = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=os.environ.get(
        "EFFNET_TL_BENCH_JPEGS", str(Path(tempfile.gettempdir()) / "effnet_tl_bench_jpegs")))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from effnet_tl import augment

    root = make_jpeg_folder(args.folder)
    files = sorted(str(path) for path in root.glob("*/*.jpg"))
    num_classes = len({Path(f).parent.name for f in files})
    class_index = {name: i for i, name in enumerate(sorted({Path(f).parent.name for f in files}))}
    labels = [class_index[Path(f).parent.name] for f in files]

    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, IMAGE_SIZE), tf.one_hot(label, num_classes)

    def decoded():
        return tf.data.Dataset.from_tensor_slices((files, labels)).map(
            load, num_parallel_calls=tf.data.AUTOTUNE)

    keras_io = keras.Sequential([
        keras.layers.RandomRotation(factor=0.15),
        keras.layers.RandomTranslation(height_factor=0.1, width_factor=0.1),
        keras.layers.RandomFlip(),
        keras.layers.RandomContrast(factor=0.1),
    ])
    medium_nearest = dataclasses.replace(augment.get_preset("medium"), interpolation="nearest")
    pipelines = {
        "bare decode + resize": decoded().batch(BATCH_SIZE),
        "keras.io recipe": decoded().map(
            lambda x, y: (keras_io(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        ).batch(BATCH_SIZE),
        "effnet_tl medium (default)": augment.augment_dataset(
            decoded().batch(BATCH_SIZE), "medium", seed=0),
        "effnet_tl medium, nearest": augment.augment_dataset(
            decoded().batch(BATCH_SIZE), medium_nearest, seed=0),
        "effnet_tl heavy": augment.augment_dataset(decoded().batch(BATCH_SIZE), "heavy", seed=0),
    }

    def timed(ds):
        ds = ds.prefetch(tf.data.AUTOTUNE)

        def run() -> int:
            count = 0
            for images, _ in ds:
                count += int(images.shape[0])
            return count

        return run

    rates = alternate({name: timed(ds) for name, ds in pipelines.items()}, repeats=args.repeats)
    print_table(f"decode + resize {IMAGE_SIZE[0]} px + augmentation, {len(files)} JPEGs, "
                f"{os.cpu_count()} CPU cores (images/s, median of {args.repeats})",
                rates, "bare decode + resize")
    ours = rates["effnet_tl medium (default)"]
    print(f"\n  medium vs keras.io recipe: {ours / rates['keras.io recipe']:.2f}x (target >= 3)")
    print(f"  medium vs bare decode + resize: {ours / rates['bare decode + resize']:.2f}x "
          "(target >= 0.5)")


if __name__ == "__main__":
    main()
