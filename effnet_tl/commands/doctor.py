"""``effnet-tl doctor DATA``: the dataset doctor's report, as text or JSON.

Exit status: 0 when the data is clean, 1 when the report found a problem that is still in the
data (unusable files not quarantined, byte-identical files across splits, a class missing from a
split) or the data could not be read, 2 for bad arguments.
"""

from __future__ import annotations

import argparse

from effnet_tl.commands.common import say


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "doctor", help="check every image of a dataset: unusable files named with the reason, "
                       "leakage between splits, imbalance",
        description="Decode every file of a dataset once and report what is wrong: unusable "
        "files (named, with the reason), conversions, tiny images, byte-identical files across "
        "splits, classes missing from a split, class imbalance. Exit status 1 when a problem "
        "remains in the data (2: bad arguments).")
    parser.add_argument("data", help="a folder of class folders (or train/, val/, test/ "
                        "folders of them), a .csv of paths and labels, or tfds:NAME")
    parser.add_argument("--json", action="store_true", help="print the report as JSON "
                        "(default: off: a readable summary)")
    parser.add_argument("--quarantine", metavar="DIR", default=None,
                        help="move (never delete) every unusable file under DIR, keeping its "
                             "path relative to DATA (default: leave files in place)")
    parser.add_argument("--min-side", type=int, default=32, metavar="N",
                        help="warn about images whose shorter side is below N pixels "
                             "(default: %(default)s)")
    return parser


def remaining_problems(report) -> list[str]:
    """What is still wrong with the data after the scan (and quarantine)."""
    problems = []
    left = len(report.skipped) - len(report.quarantined)
    if left:
        problems.append(f"{left} unusable file{'s' * (left != 1)}")
    if report.leakage:
        problems.append(f"{len(report.leakage)} groups of byte-identical files across splits")
    if report.missing_classes:
        problems.append(f"classes missing from a split: {report.missing_classes}")
    return problems


def run(args: argparse.Namespace) -> int:
    from effnet_tl.data import scan

    say(f"checking every file of {args.data}")
    report = scan(args.data, val_fraction=0.0, min_side=args.min_side,
                  quarantine_dir=args.quarantine)
    print(report.to_json() if args.json else str(report), end="" if args.json else "\n")
    problems = remaining_problems(report)
    if problems:
        say("found " + "; ".join(problems) + " (listed above; exit status 1)")
        return 1
    return 0
