"""The export card: ``export/manifest.json`` (every export's contract and check) rendered as
``export/README.md``, and ``export/labels.txt`` (one class name a line, in output order)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CONTRACTS", "record", "render"]

_PIXELS = ("float32 `[batch, {h}, {w}, 3]`: RGB pixels in **[0, 255]** (do not divide by 255 "
           "or normalise: the model does that inside), decoded, cropped and resized as under "
           "*Preprocessing*")
_PROBABILITIES = "float32 `[batch, {c}]`: softmax probabilities, columns in `labels.txt` order"

CONTRACTS = {
    "savedmodel": {
        "title": "TensorFlow SavedModel",
        "input": "signature `serving_default`: `image_bytes`, string `[batch]`, each the bytes "
                 "of a JPEG or PNG file (GIF/BMP: first frame), decoded inside the graph. "
                 f"Signature `serving_pixels`: `images`, {_PIXELS}",
        "output": "`probabilities` (" + _PROBABILITIES + "), `top_k_indices` int32 "
                  "`[batch, {k}]`, `top_k_classes` string `[batch, {k}]`, "
                  "`top_k_probabilities` float32 `[batch, {k}]`",
        "load": '`tf.saved_model.load("savedmodel").signatures["serving_default"]'
                '(image_bytes=tf.constant([open("cat.jpg", "rb").read()]))`',
    },
    "tflite-float32": {
        "title": "TFLite / LiteRT, float32",
        "input": _PIXELS.replace("batch", "1"),
        "output": _PROBABILITIES.replace("batch", "1"),
        "load": '`ai_edge_litert.interpreter.Interpreter("model_float32.tflite")` '
                "(or `tf.lite.Interpreter`)",
    },
    "tflite-float16": {
        "title": "TFLite / LiteRT, float16 weights",
        "input": _PIXELS.replace("batch", "1"),
        "output": _PROBABILITIES.replace("batch", "1"),
        "load": '`Interpreter("model_float16.tflite")`',
    },
    "tflite-int8": {
        "title": "TFLite / LiteRT, full-integer int8",
        "input": "uint8 `[1, {h}, {w}, 3]`: the pixels quantized with the input tensor's "
                 "scale and zero point (`round(pixel / scale + zero_point)`; measured "
                 "here: {input_quantization})",
        "output": "uint8 `[1, {c}]`: probabilities as `(q - zero_point) * scale` "
                  "({output_quantization})",
        "load": '`Interpreter("model_int8.tflite")`; calibrated on {representative} training '
                "images",
    },
    "onnx": {
        "title": "ONNX (tf2onnx)",
        "input": "`{input_name}`, " + _PIXELS + " (NHWC, as the Keras model)",
        "output": "`{output_name}`, " + _PROBABILITIES,
        "load": '`onnxruntime.InferenceSession("model.onnx")`',
    },
}
ORDER = tuple(CONTRACTS)


def record(folder: Path, model: dict, entry: dict) -> dict:
    """Add (or replace) ``entry`` in ``folder/manifest.json``; rewrite the card and labels."""
    from effnet_tl.train.run import read_json, write_json

    manifest = read_json(folder / "manifest.json") or {}
    if manifest.get("model") != model:  # another model: its exports are gone or stale
        manifest = {"model": model, "artifacts": {}}
    manifest["artifacts"][entry["kind"]] = entry
    write_json(folder / "manifest.json", manifest)
    (folder / "labels.txt").write_text("\n".join(model["class_names"]) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(render(manifest), encoding="utf-8")
    return manifest


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def render(manifest: dict) -> str:
    """The card's Markdown text."""
    model = manifest["model"]
    height, width = model["image_size"]
    names = model["class_names"]
    artifacts = [manifest["artifacts"][kind] for kind in ORDER if kind in manifest["artifacts"]]
    more = f", … ({len(names)} in all)" if len(names) > 20 else ""
    lines = [
        f"# {model['run']}: exported models",
        "",
        (f"EfficientNet-{model['variant']} classifier fine-tuned by effnet_tl; "
         f"{len(names)} classes; input {height}x{width} RGB. Written by `effnet-tl export`; "
         "every file here was checked against the Keras model (`../model.keras`) on real "
         "images before it was kept."),
        "",
        "## Labels",
        "",
        f"`labels.txt`, one name a line, in output order: {', '.join(names[:20])}{more}.",
        "",
        "## Preprocessing (what every pixel input expects)",
        "",
        (f"Decode to 8-bit RGB; {_crop_words(model['resize'], height, width)}; resize "
         f"bilinearly to {height}x{width} (TensorFlow's `tf.image.resize`: half-pixel centres, "
         "no antialiasing); keep float values in [0, 255]. JPEGs at least twice the output "
         "size are decoded at a reduced libjpeg DCT scale (1/2, 1/4, 1/8) first, as "
         "effnet_tl's evaluation does. `effnet_tl.inference.read_pixels(paths, "
         f"({height}, {width}), resize={model['resize']!r})` does exactly this; the "
         "SavedModel's `serving_default` signature does it in the graph. EXIF orientation is "
         "not applied by the SavedModel (rotate such photos first; effnet_tl's Python path "
         "applies it)."),
        "",
        "## Files and measured agreement with the Keras model",
        "",
        ("| file | format | size | images | max abs diff (probability) | top-1 agreement | "
         "accuracy Keras / export | rule | check |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in artifacts:
        check = entry["check"]
        lines.append(
            f"| `{entry['file']}` | {CONTRACTS[entry['kind']]['title']} | {_size(entry['bytes'])} "
            f"| {check['images']} | {check['max_abs_diff']:.2e} | {check['top1_agreement']:.1%} "
            f"| {check['keras_accuracy']:.1%} / {check['export_accuracy']:.1%} | {check['rule']} "
            f"| {'passed' if check['passed'] else '**FAILED**'} |")
    if artifacts:
        lines += ["", f"Checked on {artifacts[-1]['check']['source']}."]
    for entry in artifacts:
        contract = CONTRACTS[entry["kind"]]
        fields = dict(h=height, w=width, c=len(names), k=entry.get("top_k", 5),
                      **entry.get("details", {}))
        lines += ["", f"## `{entry['file']}`: {contract['title']}", "",
                  f"- input: {contract['input'].format(**fields)}",
                  f"- output: {contract['output'].format(**fields)}",
                  f"- load: {contract['load'].format(**fields)}",
                  f"- made with: {json.dumps(entry['versions'])[1:-1]}"]
        if entry["kind"] == "tflite-int8":
            lines.append(f"- accuracy drop on the check images: "
                         f"{100 * entry['check']['accuracy_drop']:.1f} points")
    return "\n".join(lines) + "\n"


def _crop_words(resize: str, height: int, width: int) -> str:
    if resize == "pad":
        return "keep the whole image, padded with black to the output's aspect ratio"
    if resize == "stretch":
        return "keep the whole image (the aspect ratio is not kept)"
    return (f"take the largest centred window with the output's aspect ratio ({width}:{height}; "
            "its sides rounded half up)")
