"""What the subcommands share: progress lines on stderr, JSON on stdout, flag types."""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["Progress", "UsageError", "add_dataset_arguments", "add_inference_options",
           "add_run_argument",
           "comma_separated", "print_json", "say"]


class UsageError(ValueError):
    """A bad argument value, found before any data is read (exit status 2)."""


def comma_separated(cast, what: str):
    """An argparse type: ``"1,2"`` -> a tuple of ``cast`` values, else a one-line error.

    Example:
        >>> comma_separated(int, "integers")("3,5")
        (3, 5)
    """
    def parse(value: str) -> tuple:
        try:
            return tuple(cast(part) for part in value.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} separated by commas, got {value!r}") from None
    return parse


def say(line: str) -> None:
    """One progress or warning line on stderr, ``effnet-tl: ...``."""
    print(f"effnet-tl: {line}", file=sys.stderr, flush=True)


def print_json(payload) -> None:
    """The command's result on stdout, alone (``| jq`` works)."""
    print(json.dumps(payload, indent=2, default=str))


class Progress:
    """``progress(done, total)`` callback: a line on stderr at most every ``every`` seconds,
    and one at the end."""

    def __init__(self, verb: str, every: float = 5.0, noun: str = "images"):
        self.verb, self.every, self.noun, self.last = verb, every, noun, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.every:
            self.last = now
            say(f"{self.verb} {done}/{total} {self.noun}")


def add_dataset_arguments(parser, dest: str = "dataset") -> None:
    """The dataset positional and ``--num-classes``, as fit and scale-search take them."""
    from effnet_tl.cli import _positive_int

    parser.add_argument(dest, help="a folder with one subfolder per class (or train/, val/, "
                        "test/ folders of them), a .csv of paths and labels, or tfds:NAME")
    parser.add_argument("--num-classes", type=_positive_int, default=None, metavar="N",
                        help="number of classes, checked against the data before training "
                             "(default: the classes found, counted)")


def add_run_argument(parser) -> None:
    parser.add_argument("run", help="a finished run folder (what 'effnet-tl fit' wrote: "
                        "model.keras, labels.json, config.json)")


def add_inference_options(parser) -> None:
    """``--tta`` and ``--batch-size``, as predict and evaluate take them."""
    from effnet_tl.cli import _positive_int

    parser.add_argument("--tta", action="store_true",
                        help="average each image with its left-right mirror; refused for a "
                             "run that trained without flips (default: off)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                        help="images per forward pass (default: %(default)s)")
