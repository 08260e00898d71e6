"""``effnet-tl predict RUN IMAGE... | DIR``: classify files with a trained run.

stdout holds the predictions as JSON (or, with ``--output``, a short summary and the file).
A file that is not a usable image is named on stderr and the others are still predicted; the
exit status is then 1.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from effnet_tl.commands.common import (
    Progress,
    UsageError,
    add_inference_options,
    add_run_argument,
    print_json,
    say,
)

OUTPUT_SUFFIXES = (".csv", ".json")


def add_parser(commands) -> argparse.ArgumentParser:
    from effnet_tl.cli import _positive_int

    parser = commands.add_parser(
        "predict", help="classify image files or folders with a trained run",
        description="Classify images with a run's model: each file is decoded, cropped and "
        "resized as the fit report's evaluation read it. Folders give every file under them. "
        "Prints JSON on stdout; files that are not usable images are named on stderr, the "
        "others still predicted, and the exit status is 1.")
    add_run_argument(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files and folders")
    parser.add_argument("--top-k", type=_positive_int, default=3, metavar="K",
                        help="most likely classes listed per image (default: %(default)s)")
    parser.add_argument("--output", metavar="FILE", default=None,
                        help="write the predictions to FILE.csv (one row per image: path, "
                             "label, confidence, then the top K) or FILE.json (default: JSON "
                             "on stdout)")
    add_inference_options(parser)
    return parser


def records(predictions, top_k: int) -> list[dict]:
    """One JSON-ready dict per predicted image."""
    ranked = predictions.top_k(top_k)
    return [{"path": source, "label": label, "confidence": float(confidence),
             "top_k": [{"label": name, "probability": p} for name, p in top]}
            for source, label, confidence, top in zip(predictions.sources, predictions.labels,
                                                       predictions.confidences, ranked)]


def write_csv(path: Path, rows: list[dict], top_k: int) -> None:
    header = ["path", "label", "confidence"]
    for rank in range(2, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            line = [row["path"], row["label"], f"{row['confidence']:.6f}"]
            for item in row["top_k"][1:]:
                line += [item["label"], f"{item['probability']:.6f}"]
            writer.writerow(line)


def run(args: argparse.Namespace) -> int:
    from effnet_tl.train.run import load_run, write_json

    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output must end in .csv or .json, got {args.output!r}")
    result = load_run(args.run)
    predictions = _predict(result, args)
    if not predictions.sources and not predictions.skipped:
        raise ValueError(f"no image files in {' '.join(args.images)}")
    top_k = min(args.top_k, len(result.class_names))
    rows = records(predictions, top_k)
    skipped = [{"path": path, "reason": reason} for path, reason in predictions.skipped]
    for item in skipped:
        say(f"warning: skipped {item['path']}: {item['reason']}")
    payload = {"run": str(result.run_dir), "tta": args.tta, "predictions": rows,
               "skipped": skipped}
    if output is None:
        print_json(payload)
    else:
        if output.suffix.lower() == ".csv":
            output.parent.mkdir(parents=True, exist_ok=True)
            write_csv(output, rows, top_k)
        else:
            write_json(output, payload)
        print_json({"output": str(output), "predicted": len(rows), "skipped": skipped})
    if skipped:
        say(f"error: {len(skipped)} of {len(rows) + len(skipped)} files could not be read "
            f"(named above); the other {len(rows)} {'was' if len(rows) == 1 else 'were'} "
            "predicted")
        return 1
    return 0


def _predict(result, args):
    from effnet_tl.inference.predict import predict_images

    return predict_images(result.model, result.class_names, result.config, args.images,
                          batch_size=args.batch_size, tta=args.tta, errors="skip",
                          progress=Progress("predicted", noun="readable images"))
