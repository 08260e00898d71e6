"""Input-pipeline benchmark: effnet_tl.data vs keras image_dataset_from_directory vs a bare loop.

Generates 1,080 JPEGs of 500x375 (benchmarks/common.make_jpeg_folder), then in one process and
alternating between candidates (median of 5 passes of 3 epochs each):

* the same on 120 phone-size JPEGs (2000x1500), where ``make_dataset`` decodes at a reduced
  DCT scale;
* images/s of ``make_dataset`` (224 px, batch 32, eval centre crop and stretch, no cache),
  ``keras.utils.image_dataset_from_directory`` on the same folder, and a bare
  ``tf.io.decode_jpeg`` + ``tf.image.resize`` tf.data loop;
* the doctor's scan rate (files/s, every file decoded);
* peak RSS of a fresh process that scans and iterates one training epoch (random-resized crop,
  no cache) over 2,000 and over 20,000 files. The 20,000-file folder is made of hard links to the
  generated JPEGs, so it costs no decoding work to build and reads the same bytes.

Run: ``python benchmarks/pipeline.py [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import alternate, make_jpeg_folder, print_table  # noqa: E402

REPEATS = 5
EPOCHS_PER_PASS = 3

IMAGE_SIZE = 224
KERAS = "keras image_dataset_from_directory"
BARE = "bare decode_jpeg + resize"
BATCH = 32


def linked_folder(source: Path, target: Path, count: int) -> Path:
    """``count`` hard links (falling back to symlinks) cycling over the JPEGs under ``source``."""
    files = sorted(source.glob("*/*.jpg"))
    if len(list(target.glob("*/*.jpg"))) == count:
        return target
    for index in range(count):
        original = files[index % len(files)]
        link = target / original.parent.name / f"link_{index:06d}.jpg"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists():
            continue
        try:
            os.link(original, link)
        except OSError:
            os.symlink(original, link)
    return target


def throughput(folder: Path, repeats: int = REPEATS) -> dict[str, float]:
    import keras
    import tensorflow as tf

    from effnet_tl.data import make_dataset, scan

    train = scan(folder, val_fraction=0).source.train
    ours_crop = make_dataset(
        train, image_size=IMAGE_SIZE, batch_size=BATCH, training=False, cache=None
    )
    ours_stretch = make_dataset(
        train, image_size=IMAGE_SIZE, batch_size=BATCH, training=False, resize="stretch", cache=None
    )
    # Default cache="auto": epoch 1 decodes, later epochs read resized images from memory.
    ours_cached = make_dataset(train, image_size=IMAGE_SIZE, batch_size=BATCH, training=False)
    ours_train = make_dataset(
        train, image_size=IMAGE_SIZE, batch_size=BATCH, training=True, cache=None
    )
    keras_ds = keras.utils.image_dataset_from_directory(
        str(folder),
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        batch_size=BATCH,
        shuffle=False,
        verbose=False,
    )

    def bare_load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, (IMAGE_SIZE, IMAGE_SIZE))

    bare = (
        tf.data.Dataset.from_tensor_slices(list(train.paths))
        .map(bare_load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )

    def count(dataset):
        # Several epochs per timed pass: on a shared 2-core machine one epoch (about a second)
        # is too short to average out other processes' bursts.
        def run() -> int:
            return sum(
                int(batch[0].shape[0]) if isinstance(batch, tuple) else int(batch.shape[0])
                for _ in range(EPOCHS_PER_PASS)
                for batch in dataset
            )

        return run

    return alternate(
        {
            "effnet_tl make_dataset (eval, center crop)": count(ours_crop),
            "effnet_tl make_dataset (eval, stretch)": count(ours_stretch),
            "effnet_tl make_dataset (train, random crop)": count(ours_train),
            "effnet_tl make_dataset (eval, default cache, epoch 2+)": count(ours_cached),
            KERAS: count(keras_ds),
            BARE: count(bare),
        },
        repeats=repeats,
    )


def scan_rate(folder: Path, repeats: int = 3) -> float:
    from effnet_tl.data import scan

    rates = []
    for _ in range(repeats):
        report = scan(folder, val_fraction=0)
        rates.append(report.files_per_second)
    return statistics.median(rates)


RSS_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
from effnet_tl.data import make_dataset, scan

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

report = scan({folder!r}, val_fraction=0)
ds = make_dataset(report.source.train, image_size={size}, batch_size={batch}, training=True,
                  cache=None)
before = rss_mb()
start, seen, during = time.perf_counter(), 0, before
for images, _ in ds:
    seen += int(images.shape[0])
    during = max(during, rss_mb())
seconds = time.perf_counter() - start
print(json.dumps({{"files": seen, "rss_before_mb": before, "rss_iterating_mb": during,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "images_per_s": seen / seconds, "scan_files_per_s": report.files_per_second}}))
"""


def peak_rss(folder: Path) -> dict:
    code = RSS_CHILD.format(
        repo=str(Path(__file__).resolve().parents[1]),
        folder=str(folder),
        size=IMAGE_SIZE,
        batch=BATCH,
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "effnet_tl_bench"))
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir)
    start = time.perf_counter()
    folder = make_jpeg_folder(work / "jpeg_1080", num_images=1080, num_classes=3, size=(500, 375))
    print(f"1,080 JPEGs 500x375 ready in {time.perf_counter() - start:.1f} s at {folder}")

    rates = throughput(folder)
    print_table(
        f"Input pipeline, 1,080 JPEGs 500x375 -> {IMAGE_SIZE} px, batch {BATCH} "
        f"(images/s, median of {REPEATS} passes of {EPOCHS_PER_PASS} epochs)",
        rates,
        baseline=KERAS,
    )
    ours = rates["effnet_tl make_dataset (eval, center crop)"]
    print(f"\n  ours (center crop) / keras: {ours / rates[KERAS]:.2f}  (target >= 1.5)")
    print(f"  ours (center crop) / bare:  {ours / rates[BARE]:.2f}  (target >= 0.9)")
    stretch = rates["effnet_tl make_dataset (eval, stretch)"]
    print(f"  ours (stretch) / bare:      {stretch / rates[BARE]:.2f}")

    print(f"\nDoctor scan (every file decoded): {scan_rate(folder):,.0f} files/s (median of 3)")

    photos = make_jpeg_folder(
        work / "jpeg_2000x1500_120", num_images=120, num_classes=3, size=(2000, 1500)
    )
    big = throughput(photos, repeats=REPEATS)
    print_table(
        f"Phone-size photos, 120 JPEGs 2000x1500 -> {IMAGE_SIZE} px (images/s, median of 5 passes; "
        "ours decodes at 1/4 scale in libjpeg)",
        big,
        baseline=KERAS,
    )

    if not args.skip_rss:
        small = linked_folder(folder, work / "links_2000", 2000)
        large = linked_folder(folder, work / "links_20000", 20000)
        results = {name: peak_rss(path) for name, path in (("2,000", small), ("20,000", large))}
        print("\nRSS of a fresh process: scan, then one training epoch (random crop, no cache)")
        for name, result in results.items():
            print(
                f"  {name:>6s} files: {result['files']:6d} seen, RSS before epoch "
                f"{result['rss_before_mb']:7.1f} MB, max while iterating "
                f"{result['rss_iterating_mb']:7.1f} MB, "
                f"process peak {result['peak_rss_mb']:7.1f} MB; "
                f"{result['images_per_s']:6.0f} img/s, "
                f"scan {result['scan_files_per_s']:5.0f} files/s"
            )
        for key, label in (
            ("rss_iterating_mb", "max RSS while iterating"),
            ("peak_rss_mb", "process peak RSS"),
        ):
            a, b = results["2,000"][key], results["20,000"][key]
            print(f"  {label}: 20,000 vs 2,000 files differ by {abs(b - a) / a:.1%} (target < 15%)")


if __name__ == "__main__":
    main()
