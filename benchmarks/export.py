"""Every export format of one trained run: file size, per-image latency, agreement with Keras.

Fine-tunes Lite0 (its offline ImageNet weights) on scikit-learn's digits written as PNG files
(the quick start's data) at ``--image-size`` pixels (the head only: the backbone runs once),
exports it in every format with ``effnet_tl.export.export_run`` (each checked against the Keras
model on the test images; one that fails its check is still timed), then times one image at a
time through each runtime: the median of ``--repeats`` passes over
``--images`` test images, after a warm-up pass. Keras and the SavedModel's ``serving_pixels``
take the decoded pixels; ``serving_default`` takes the PNG bytes (its time includes decoding);
TFLite runs in TensorFlow's interpreter, ONNX in onnxruntime (CPU), both with their default
threads.

    python benchmarks/export.py [--image-size 224] [--head-epochs 20] [--images 50]
                                [--repeats 3] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from effnet_tl import fit
from effnet_tl.cli import write_digits
from effnet_tl.export import ExportError, ExportResult, artifact_kind, export_run
from effnet_tl.export.converters import tflite_interpreter
from effnet_tl.export.savedmodel import BYTES_SIGNATURE, PIXELS_SIGNATURE
from effnet_tl.inference import read_pixels
from effnet_tl.train.feature_cache import inference_function
from effnet_tl.train.run import read_json

EXPORTS = [("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8"),
           ("onnx", None)]


def median_ms(run_one, items, repeats: int) -> float:
    """Median over ``repeats`` passes of the mean milliseconds per item (one warm-up pass)."""
    for item in items[:3]:
        run_one(item)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            run_one(item)
        passes.append(1000 * (time.perf_counter() - start) / len(items))
    return statistics.median(passes)


def failed_export(result, kind):
    """An export that failed its check is kept on disk and in the manifest: time it too."""
    entry = (read_json(result.paths.export / "manifest.json") or {}).get("artifacts", {}).get(kind)
    if entry is None:
        return None
    path = result.paths.export / entry["file"]
    return ExportResult(kind, path, entry["bytes"], entry["check"], path.parent / "README.md")


def tflite_runner(path):
    interpreter = tflite_interpreter(path)
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = given["quantization"]

    def run_one(image):
        if given["dtype"] != np.float32:
            image = np.clip(np.round(image / scale + zero), 0, 255).astype(given["dtype"])
        interpreter.set_tensor(given["index"], image[None])
        interpreter.invoke()
        return interpreter.get_tensor(taken["index"])
    return run_one


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--head-epochs", type=int, default=20)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effnet_tl_export_bench_"))
    write_digits(work / "digits")
    started = time.perf_counter()
    result = fit(work / "digits", 10, run_dir=work / "run", variant="lite0", weights="imagenet",
                 image_size=args.image_size, head_epochs=args.head_epochs, finetune_epochs=0,
                 verbose=0)
    print(f"fit: test accuracy {result.test_accuracy:.3f} in {time.perf_counter() - started:.0f} s")

    made = {}
    for format, quantize in EXPORTS:
        started = time.perf_counter()
        try:
            done = export_run(result, format, quantize=quantize)
        except ExportError as error:
            print(f"{format} {quantize or ''}: {error}")
            done = failed_export(result, artifact_kind(format, quantize))
            if done is None:  # not written (e.g. no onnx extra): nothing to time
                continue
        made[done.kind] = done
        print(f"{done.kind}: exported and checked in {time.perf_counter() - started:.0f} s")

    files = sorted((work / "digits" / "test").rglob("*.png"))[:args.images]
    pixels = list(read_pixels(files, result.image_size, resize="center_crop"))
    encoded = [tf.constant([f.read_bytes()]) for f in files]
    keras_one = inference_function(result.model)
    # (label, export kind or None for the Keras model, run one item, items)
    runners = [("keras (model.keras)", None, lambda x: keras_one(x[None]), pixels)]
    if "savedmodel" in made:
        signatures = tf.saved_model.load(str(made["savedmodel"].path)).signatures
        serve_bytes, serve_pixels = signatures[BYTES_SIGNATURE], signatures[PIXELS_SIGNATURE]
        runners += [
            ("savedmodel, serving_default (PNG bytes in)", "savedmodel",
             lambda data: serve_bytes(image_bytes=data), encoded),
            ("savedmodel, serving_pixels", "savedmodel",
             lambda x: serve_pixels(images=tf.constant(x[None])), pixels)]
    runners += [(kind, kind, tflite_runner(made[kind].path), pixels)
                for kind in ("tflite-float32", "tflite-float16", "tflite-int8") if kind in made]
    if "onnx" in made:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(made["onnx"].path),
                                               providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        runners.append(("onnx (onnxruntime)", "onnx",
                        lambda x: session.run(None, {name: x[None]}), pixels))

    checked = next(iter(made.values())).check["images"] if made else 0
    print(f"\nLite0 at {args.image_size} px, 10 classes; ms per image one at a time over "
          f"{len(files)} test images (median of {args.repeats} passes, {os.cpu_count()} CPU "
          f"cores); agreement with the Keras model on {checked} test images")
    print("| runtime | file size | ms / image | max abs diff vs Keras | top-1 agreement | "
          "test accuracy, Keras -> export |")
    print("|---|---|---|---|---|---|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, kind, run_one, items in runners:
            ms = median_ms(run_one, items, args.repeats)
            if kind is None:
                size, columns = result.paths.model.stat().st_size, "| | "
            else:
                size, check = made[kind].size_bytes, made[kind].check
                columns = (f"{check['max_abs_diff']:.1e} | {check['top1_agreement']:.1%}"
                           f"{'' if check['passed'] else ' (FAILED: ' + check['rule'] + ')'} | "
                           f"{check['keras_accuracy']:.1%} -> {check['export_accuracy']:.1%}")
            print(f"| {label} | {size / 2**20:.1f} MiB | {ms:.2f} | {columns} |")

if __name__ == "__main__":
    main()
