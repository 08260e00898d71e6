"""``effnet-tl evaluate RUN DATA``: the fit report of a trained run on new labelled data."""

from __future__ import annotations

import argparse

from effnet_tl.commands.common import (
    add_inference_options,
    add_run_argument,
    print_json,
    say,
)


def add_parser(commands) -> argparse.ArgumentParser:
    from effnet_tl.cli import _int_list
    from effnet_tl.inference.evaluate import SPLITS

    parser = commands.add_parser(
        "evaluate", help="the fit report (accuracy, top-k, per-class, confusion matrix) of a "
                         "trained run on new labelled data",
        description="Evaluate a run's model on labelled images: accuracy, top-k accuracy, "
        "per-class precision/recall/F1 and the confusion matrix, as the fit report computes "
        "them, with its plots. Writes report.json and PNG plots; prints a JSON summary.")
    add_run_argument(parser)
    parser.add_argument("data", help="labelled images: a folder of class folders (or train/, "
                        "val/, test/ folders of them), a .csv of paths and labels, or tfds:NAME")
    parser.add_argument("--split", choices=SPLITS, default="auto",
                        help="which split of DATA; auto: its test split, else its validation "
                             "split, else every image (default: %(default)s)")
    parser.add_argument("--top-k", type=_int_list, default=None, metavar="K[,K...]",
                        help="k values of the top-k accuracy (default: the run's)")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="folder for report.json and the plots (default: "
                             "RUN/evaluations/<data>-<split>/)")
    add_inference_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from effnet_tl.inference.evaluate import evaluate
    from effnet_tl.train.run import load_run

    result = load_run(args.run)
    say(f"evaluating {result.run_dir} on {args.data}")
    report = evaluate(result, args.data, split=args.split, top_k=args.top_k,
                      batch_size=args.batch_size, tta=args.tta, output_dir=args.output)
    for item in report["skipped"]:
        say(f"warning: skipped {item['path']}: {item['reason']}")
    keys = ("split", "num_examples", "accuracy", "top_k_accuracy", "macro_avg", "tta")
    print_json({**{key: report[key] for key in keys}, "skipped": len(report["skipped"]),
                **report["files"]})
    return 0
