"""``effnet-tl export RUN --format savedmodel|tflite|onnx [--quantize float16|int8]``."""

from __future__ import annotations

import argparse

from effnet_tl.commands.common import UsageError, add_run_argument, print_json, say


def add_parser(commands) -> argparse.ArgumentParser:
    from effnet_tl.cli import _positive_int
    from effnet_tl.export import FORMATS, QUANTIZATIONS

    parser = commands.add_parser(
        "export", help="export a trained run as a SavedModel, TFLite or ONNX file, checked "
                       "against the Keras model",
        description="Write RUN/export/: a SavedModel whose serving signature takes JPEG/PNG "
        "bytes, a TFLite (LiteRT) model in float32, float16 or int8, or an ONNX model "
        "(pip install \"effnet_tl[onnx]\"); each is checked against the Keras model on the "
        "run's test images (else its validation images) and described in RUN/export/README.md. "
        "Prints a JSON summary; exit status 1 when the export disagrees with the model.")
    add_run_argument(parser)
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="what to write (default: %(default)s)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="tflite only: float16 weights, or int8 full-integer calibrated on "
                             "training images (default: float32)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="labelled images to check on (and calibrate int8 with) when the "
                             "run's dataset is elsewhere (default: the run's dataset, as "
                             "recorded in its config.json)")
    parser.add_argument("--top-k", type=_positive_int, default=5, metavar="K",
                        help="classes the SavedModel's top_k outputs return (default: "
                             "%(default)s)")
    return parser


def run(args: argparse.Namespace) -> int:
    from effnet_tl.export import artifact_kind, export_run

    try:
        artifact_kind(args.format, args.quantize)
    except ValueError as error:
        raise UsageError(str(error)) from error
    result = export_run(args.run, args.format, quantize=args.quantize, data=args.data,
                        top_k=args.top_k, progress=say)
    print_json(result.to_dict())
    return 0
