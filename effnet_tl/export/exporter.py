""":func:`export_run`: a finished run's model as a SavedModel, TFLite or ONNX file, checked.

Order of work: the check images first (a missing dataset fails in seconds, before any slow
conversion), the Keras model's probabilities on them, the conversion, the export's
probabilities, the verdict (:mod:`effnet_tl.export.checks`), then the card. An export that
fails its check stays on disk for inspection, marked FAILED in the card, and raises
:class:`~effnet_tl.export.converters.ExportError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
from pathlib import Path

import numpy as np

from effnet_tl.export.card import CONTRACTS, record
from effnet_tl.export.checks import check_set, judge, measure, representative_pixels
from effnet_tl.export.converters import (
    ExportError,
    onnx_versions,
    run_onnx,
    run_tflite,
    write_onnx,
    write_tflite,
)
from effnet_tl.export.savedmodel import run_savedmodel, write_savedmodel

__all__ = ["FILES", "FORMATS", "QUANTIZATIONS", "ExportResult", "artifact_kind", "export_run"]

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8")
FILES = {"savedmodel": "savedmodel", "tflite-float32": "model_float32.tflite",
         "tflite-float16": "model_float16.tflite", "tflite-int8": "model_int8.tflite",
         "onnx": "model.onnx"}


def artifact_kind(format: str, quantize: str | None = None) -> str:
    """``"savedmodel"``, ``"tflite-float32"``, ``"tflite-float16"``, ``"tflite-int8"`` or
    ``"onnx"``; a bad combination raises ``ValueError`` naming what is accepted.

    Example:
        >>> artifact_kind("tflite"), artifact_kind("tflite", "int8")
        ('tflite-float32', 'tflite-int8')
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}")
    if quantize is not None and format != "tflite":
        raise ValueError(f"quantize={quantize!r} applies to the tflite format only (got "
                         f"format={format!r})")
    return f"tflite-{quantize or 'float32'}" if format == "tflite" else format


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote and measured.

    Attributes:
        kind: the artifact kind (see :func:`artifact_kind`).
        path: the file (the folder, for a SavedModel).
        size_bytes: its size on disk.
        check: the agreement with the Keras model (``max_abs_diff``, ``top1_agreement``,
            ``keras_accuracy``, ``export_accuracy``, ``accuracy_drop``, ``rule``, ``passed``).
        card: the ``README.md`` card describing every export of the run.
    """

    kind: str
    path: Path
    size_bytes: int
    check: dict
    card: Path

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "bytes": self.size_bytes,
                "check": self.check, "card": str(self.card)}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size


def _keras_probabilities(model, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    from effnet_tl.train.feature_cache import inference_function

    predict = inference_function(model)
    return np.concatenate([predict(pixels[start:start + batch_size]).numpy()
                           for start in range(0, len(pixels), batch_size)])


def _versions(kind: str) -> dict:
    import keras
    import tensorflow as tf

    import effnet_tl

    versions = {"effnet_tl": effnet_tl.__version__, "tensorflow": tf.__version__,
                "keras": keras.__version__}
    return {**versions, **(onnx_versions() if kind == "onnx" else {})}


def _tflite_details(path: Path) -> dict:
    from effnet_tl.export.converters import tflite_interpreter

    interpreter = tflite_interpreter(path)

    def words(details):
        scale, zero_point = details["quantization"]
        return f"{np.dtype(details['dtype']).name}, scale {scale:.6g}, zero point {zero_point}"

    return {"input_quantization": words(interpreter.get_input_details()[0]),
            "output_quantization": words(interpreter.get_output_details()[0])}


def _onnx_details(path: Path) -> dict:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {"input_name": session.get_inputs()[0].name,
            "output_name": session.get_outputs()[0].name}


def export_run(run, format: str = "savedmodel", *, quantize: str | None = None, data=None,
               top_k: int = 5, progress=None) -> ExportResult:
    """Export a finished run into ``<run>/export/`` and check it against the Keras model.

    Args:
        run: a run folder or its :class:`~effnet_tl.train.run.FitResult`.
        format: ``"savedmodel"`` (serving signature on image bytes), ``"tflite"`` or ``"onnx"``
            (the ``onnx`` extra).
        quantize: TFLite only: ``"float16"`` or ``"int8"`` (full-integer; calibrated on up to
            100 training images).
        data: labelled images to check on (and calibrate int8 with) instead of the run's own
            dataset (its test split, else its validation split).
        top_k: classes the SavedModel's ``top_k_*`` outputs return.
        progress: called with a line of text before each slow step.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ValueError: a bad format/quantize value, or a run folder that cannot be read.
        ExportError: the conversion failed, the ``onnx`` extra is missing, no check images
            are found, or the export disagrees with the Keras model beyond its rule.

    Example (not run here: it needs a trained run):
        >>> from effnet_tl.export import export_run
        >>> export_run("runs/flowers-b0", "tflite", quantize="int8").check  # doctest: +SKIP
    """
    from effnet_tl.inference.images import eval_policy
    from effnet_tl.train.run import FitResult, load_run

    kind = artifact_kind(format, quantize)
    say = progress or (lambda line: None)
    versions = _versions(kind)  # a missing onnx extra fails here, before anything slow
    result = run if isinstance(run, FitResult) else load_run(run)
    settings = result.config.get("settings", {})
    resize = eval_policy(settings.get("data", {}).get("resize"))
    checks = check_set(result, data)
    say(f"checking on {len(checks.labels)} images of {checks.source}")
    reference = _keras_probabilities(result.model, checks.pixels)

    folder = result.paths.export
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILES[kind]
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    details: dict = {}
    if kind == "tflite-int8":
        representative = representative_pixels(result, data)
        details["representative"] = len(representative)
        say(f"calibrating int8 on {len(representative)} training images and converting")
    else:
        representative = None
        say(f"converting {result.paths.model} to {CONTRACTS[kind]['title']}")
    if kind == "savedmodel":
        write_savedmodel(result.model, result.class_names, path, resize=resize, top_k=top_k)
        candidate = run_savedmodel(path, checks.encoded)
    elif kind == "onnx":
        write_onnx(result.model, path)
        details.update(_onnx_details(path))
        candidate = run_onnx(path, checks.pixels)
    else:
        write_tflite(result.model, path, quantize=quantize, representative=representative)
        details.update(_tflite_details(path))
        candidate = run_tflite(path, checks.pixels)

    measures = measure(reference, candidate, checks.labels)
    check = {"source": checks.source, **measures, **judge(kind, measures)}
    model = {"run": result.run_dir.name, "variant": settings.get("model", {}).get("variant"),
             "image_size": list(result.image_size), "resize": resize,
             "class_names": list(result.class_names)}
    entry = {"kind": kind, "file": FILES[kind], "bytes": _size(path), "top_k": top_k,
             "check": check, "details": details, "versions": versions,
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    record(folder, model, entry)
    if not check["passed"]:
        raise ExportError(
            f"{path} disagrees with the Keras model on {checks.source}: {check['rule']} failed "
            f"(max abs diff {measures['max_abs_diff']:.2e}, top-1 agreement "
            f"{measures['top1_agreement']:.1%}, accuracy {measures['keras_accuracy']:.1%} -> "
            f"{measures['export_accuracy']:.1%}); kept for inspection, marked FAILED in "
            f"{folder / 'README.md'}")
    return ExportResult(kind, path, entry["bytes"], check, folder / "README.md")
