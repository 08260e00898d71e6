"""Exports of a trained run, each checked against the Keras model on real images.

``export_run(run_dir, "savedmodel" | "tflite" | "onnx", quantize=None | "float16" | "int8")``
writes into ``<run>/export/``: ``savedmodel/`` (a serving signature on JPEG/PNG bytes that
decodes, crops and resizes as evaluation does), ``model_float32.tflite``,
``model_float16.tflite``, ``model_int8.tflite``, ``model.onnx``, and ``README.md``, the card:
input contract, preprocessing, labels (``labels.txt``) and the measured agreement of each file.
"""

from effnet_tl.export.converters import ExportError
from effnet_tl.export.exporter import (
    FILES,
    FORMATS,
    QUANTIZATIONS,
    ExportResult,
    artifact_kind,
    export_run,
)

__all__ = ["FILES", "FORMATS", "QUANTIZATIONS", "ExportError", "ExportResult", "artifact_kind",
           "export_run"]
