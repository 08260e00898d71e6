"""TFLite (LiteRT) and ONNX conversion of a trained classifier, and runners for the results.

Both go through Keras' own exporters (``model.export(format="litert" | "onnx")``), which trace
``model(x, training=False)``: the input is float32 ``[batch, H, W, 3]`` RGB pixels in [0, 255]
(normalisation is inside the model), the output the softmax probabilities.

* TFLite float32: TensorFlow Lite builtin ops only (no Flex delegate needed).
* TFLite float16: float16 weights (half the file), computed in float32 on CPUs.
* TFLite int8: full-integer ops (``TFLITE_BUILTINS_INT8``), calibrated on a representative set
  of training images; uint8 input (the pixels themselves: scale ~1, zero point 0) and uint8
  probabilities (scale 1/256). :func:`run_tflite` applies each tensor's scale and zero point.
* ONNX: tf2onnx (the ``onnx`` extra: ``pip install "effnet_tl[onnx]"``), run with onnxruntime.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings

import numpy as np

__all__ = ["ExportError", "onnx_versions", "run_onnx", "run_tflite", "tflite_interpreter",
           "write_onnx", "write_tflite"]

ONNX_EXTRA = ("tf2onnx", "onnxruntime")


class ExportError(ValueError):
    """A model that cannot be exported as asked, or whose export disagrees with it."""


@contextlib.contextmanager
def _converter_quiet():
    """The converters and interpreters print notes on file descriptor 2 and deprecation
    warnings: hide both; a failure still raises, with its message."""
    from effnet_tl.quiet import stderr_silenced

    with stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_tflite(model, path, *, quantize: str | None = None, representative=None) -> None:
    """Convert to a ``.tflite`` file: float32 (``quantize=None``), ``"float16"`` or ``"int8"``.

    Args:
        model: the Keras classifier.
        path: the ``.tflite`` file to write.
        quantize: ``None``, ``"float16"`` or ``"int8"``.
        representative: float32 ``(N, H, W, 3)`` training images (``"int8"`` only).
    """
    import tensorflow as tf

    ops = tf.lite.OpsSet
    options: dict = {"target_spec": {"supported_ops": [ops.TFLITE_BUILTINS]}}
    if quantize == "float16":
        options.update(optimizations=[tf.lite.Optimize.DEFAULT],
                       target_spec={"supported_ops": [ops.TFLITE_BUILTINS],
                                    "supported_types": [tf.float16]})
    elif quantize == "int8":
        if representative is None or not len(representative):
            raise ExportError("int8 quantization needs representative training images")
        images = np.asarray(representative, np.float32)
        options.update(
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=lambda: ([images[i:i + 1]] for i in range(len(images))),
            target_spec={"supported_ops": [ops.TFLITE_BUILTINS_INT8]},
            inference_input_type=tf.uint8, inference_output_type=tf.uint8)
    elif quantize is not None:
        raise ExportError(f"quantize must be None, 'float16' or 'int8'; got {quantize!r}")
    try:
        with _converter_quiet():
            model.export(str(path), format="litert", verbose=False, **options)
    except Exception as error:  # the converter raises many kinds
        raise ExportError(f"the TFLite converter (TensorFlow {tf.__version__}) could not convert "
                          f"the model{' to ' + quantize if quantize else ''}: "
                          f"{_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def tflite_interpreter(path):
    """LiteRT's interpreter (``ai-edge-litert``) when installed, else TensorFlow's copy."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with _converter_quiet():  # tf.lite.Interpreter's deprecation notice
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    return interpreter


def run_tflite(path, pixels: np.ndarray) -> np.ndarray:
    """Probabilities of a ``.tflite`` classifier, one image at a time (quantized IO handled)."""
    interpreter = tflite_interpreter(path)
    given = interpreter.get_input_details()[0]
    taken = interpreter.get_output_details()[0]
    out = []
    with _converter_quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        for image in np.asarray(pixels, np.float32):
            interpreter.set_tensor(given["index"], _quantized(image[None], given))
            interpreter.invoke()
            out.append(_dequantized(interpreter.get_tensor(taken["index"]), taken)[0])
    return np.stack(out) if out else np.zeros((0, taken["shape"][-1]), np.float32)


def _quantized(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if details["dtype"] == np.float32 or not scale:
        return values.astype(details["dtype"])
    limits = np.iinfo(details["dtype"])
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max) \
        .astype(details["dtype"])


def _dequantized(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if details["dtype"] == np.float32 or not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def onnx_versions() -> dict[str, str]:
    """Versions of the ``onnx`` extra's packages; :class:`ExportError` naming the extra when
    one is missing."""
    missing = [name for name in ONNX_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}, not installed: "
                          'pip install "effnet_tl[onnx]" (tf2onnx converts, onnxruntime checks '
                          "the result)")
    from importlib.metadata import version

    return {name: version(name) for name in ONNX_EXTRA}


def write_onnx(model, path) -> None:
    """Convert to ONNX with tf2onnx (through ``model.export(format="onnx")``)."""
    import tensorflow as tf

    versions = onnx_versions()
    try:
        with _converter_quiet():
            model.export(str(path), format="onnx", verbose=False)
    except Exception as error:
        raise ExportError(f"tf2onnx {versions['tf2onnx']} could not convert the model with "
                          f"TensorFlow {tf.__version__}: {_first_line(error)}") from error


def run_onnx(path, pixels: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Probabilities of an ONNX classifier under onnxruntime's CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    pixels = np.asarray(pixels, np.float32)
    out = [session.run(None, {name: pixels[start:start + batch_size]})[0]
           for start in range(0, len(pixels), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
