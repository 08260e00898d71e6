"""TFLite float32/float16/int8 and ONNX exports agree with the Keras model on real test images.

Each export checks itself (effnet_tl.export.checks); these tests check again with their own
runtime calls: the interpreter or onnxruntime fed the pixels ``read_pixels`` gives the Keras
model (the test split of the shared run, big JPEGs included).
"""

import dataclasses
import importlib.util
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from effnet_tl.export import ExportError, export_run, exporter
from effnet_tl.inference import read_pixels
from effnet_tl.train.run import load_run

pytestmark = [pytest.mark.xdist_group("trained_run"),
              pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")]

HAS_ONNX = all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnxruntime"))


@pytest.fixture(scope="module")
def run_copy(trained, tmp_path_factory):
    """A copy of the shared run (exports write into it) and the Keras model's answers."""
    data, run = trained
    copy = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export", "evaluations"))
    result = load_run(copy)
    files = sorted((data / "test").rglob("*.*"))
    pixels = read_pixels(files, (32, 32), resize="center_crop")
    return result, pixels, result.model.predict(pixels, verbose=0)


def tflite_probabilities(path, pixels):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = given["quantization"]
    out_scale, out_zero = taken["quantization"]
    rows = []
    for image in pixels:
        if given["dtype"] == np.uint8:
            image = np.clip(np.round(image / scale + zero), 0, 255).astype(np.uint8)
        interpreter.set_tensor(given["index"], image[None])
        interpreter.invoke()
        row = interpreter.get_tensor(taken["index"])[0]
        rows.append((row.astype(np.float32) - out_zero) * out_scale if out_scale else row)
    return np.stack(rows)


def test_tflite_float32_gives_the_keras_probabilities(run_copy):
    result, pixels, keras_p = run_copy
    done = export_run(result, "tflite")
    assert done.path.name == "model_float32.tflite" and done.check["passed"]
    assert np.abs(tflite_probabilities(done.path, pixels) - keras_p).max() <= 1e-4


@pytest.mark.slow
def test_tflite_float16_agrees_on_the_top_class(run_copy):
    result, pixels, keras_p = run_copy
    done = export_run(result, "tflite", quantize="float16")
    got = tflite_probabilities(done.path, pixels)
    assert np.mean(got.argmax(axis=1) == keras_p.argmax(axis=1)) >= 0.99
    assert done.size_bytes < 0.6 * (result.paths.model.stat().st_size)


def test_tflite_int8_agrees_on_the_top_class_and_reports_the_accuracy_drop(run_copy):
    result, pixels, keras_p = run_copy
    done = export_run(result, "tflite", quantize="int8")
    got = tflite_probabilities(done.path, pixels)
    agreement = np.mean(got.argmax(axis=1) == keras_p.argmax(axis=1))
    assert agreement >= 0.95
    assert done.check["top1_agreement"] == pytest.approx(agreement)
    labels = np.repeat(np.arange(3), 8)  # the sorted test files: 8 per class
    drop = np.mean(keras_p.argmax(1) == labels) - np.mean(got.argmax(1) == labels)
    assert done.check["accuracy_drop"] == pytest.approx(drop)
    card = done.card.read_text()
    assert f"accuracy drop on the check images: {100 * drop:.1f} points" in card
    assert "calibrated on 48 training images" in card  # the train split: 16 per class
    assert tf.lite.Interpreter(model_path=str(done.path)).get_input_details()[0]["dtype"] \
        == np.uint8


@pytest.mark.skipif(not HAS_ONNX, reason='the onnx extra is not installed '
                                         '(pip install "effnet_tl[onnx]")')
def test_onnx_gives_the_keras_probabilities(run_copy):
    import onnxruntime

    result, pixels, keras_p = run_copy
    done = export_run(result, "onnx")
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]  # no stray constant inputs
    got = session.run(None, {"image": pixels})[0]
    assert np.abs(got - keras_p).max() <= 1e-4
    manifest = json.loads((done.path.parent / "manifest.json").read_text())
    assert manifest["artifacts"]["onnx"]["versions"]["tf2onnx"]


def test_a_missing_onnx_extra_is_named(run_copy, monkeypatch):
    result, _, _ = run_copy
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(ExportError, match=r'ONNX export needs tf2onnx, not installed: pip '
                                          r'install "effnet_tl\[onnx\]"'):
        export_run(result, "onnx")


def test_an_export_that_disagrees_fails_and_is_marked_in_the_card(run_copy, monkeypatch):
    result, _, _ = run_copy
    monkeypatch.setattr(exporter, "write_tflite", lambda model, path, **_: path.write_bytes(b""))
    monkeypatch.setattr(exporter, "_tflite_details", lambda path: {})
    monkeypatch.setattr(exporter, "run_tflite", lambda path, pixels: np.full(
        (len(pixels), 3), 1 / 3, np.float32))
    with pytest.raises(ExportError, match=r"model_float32.tflite disagrees with the Keras model "
                                          r".*max_abs_diff <= 0.0001 failed"):
        export_run(result, "tflite")
    assert "| `model_float32.tflite` | TFLite / LiteRT, float32 | 0 KiB | 24 |" in \
        result.paths.export.joinpath("README.md").read_text()
    assert "**FAILED**" in result.paths.export.joinpath("README.md").read_text()


def test_without_the_runs_dataset_an_export_asks_for_data(run_copy, tmp_path):
    result, _, _ = run_copy
    config = dict(result.config, source={**result.config["source"],
                                         "dataset": str(tmp_path / "moved")})
    moved = dataclasses.replace(result, config=config)
    with pytest.raises(ExportError, match=r"dataset '.*moved' \(config.json\) is not found .*"
                                          r"pass labelled images"):
        export_run(moved, "savedmodel")
