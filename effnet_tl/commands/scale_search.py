"""``effnet-tl scale-search DATA --num-classes N``: compound-scaling coefficients for this data.

Runs :func:`effnet_tl.scaling.search`: short from-scratch trials of grid points (α, β, γ)
whose measured cost is twice the base's, one progress line per trial on stderr, then the trial
table on stderr and the JSON summary (chosen coefficients, every trial, the plot) on stdout.
Rerunning the same command loads the finished trials from the search folder.

Example:
    >>> import argparse
    >>> commands = argparse.ArgumentParser().add_subparsers()
    >>> args = add_parser(commands).parse_args(["data", "--num-classes", "2", "--budget", "3",
    ...                                         "--gamma", "1,1.4", "--subset", "all"])
    >>> settings(args)["budget"], settings(args)["grid"]["gamma"], settings(args)["subset"]
    (3, (1.0, 1.4), None)
"""

from __future__ import annotations

import argparse
import sys

from effnet_tl.commands.common import (
    UsageError,
    add_dataset_arguments,
    comma_separated,
    print_json,
)

_numbers = comma_separated(float, "numbers")


def _subset(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'all', got {value!r}")
    return int(value)


def add_parser(commands) -> argparse.ArgumentParser:
    from effnet_tl.cli import _positive_int
    from effnet_tl.scaling import DEFAULT_GRID, SearchSettings

    defaults = SearchSettings()
    parser = commands.add_parser(
        "scale-search", help="search depth/width/resolution coefficients (alpha, beta, gamma) "
                             "on this data with short trials",
        description="The compound-scaling search of Tan & Le (2019) on your data: grid points "
        "(alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ 2 whose measured multiply-adds are "
        "2^phi x the base's train briefly from scratch on a subset at a reduced base resolution; "
        "the best held-out accuracy wins (ties within one standard error: the most accurate per "
        "multiply-add). Prints the trial table on stderr and a JSON summary on stdout; rerunning "
        "the same command loads finished trials.")
    add_dataset_arguments(parser)
    parser.add_argument("--budget", type=_positive_int, default=defaults.budget, metavar="N",
                        help="candidates to train, one short trial each (default: %(default)s)")
    for name, grows in (("alpha", "depth"), ("beta", "width"), ("gamma", "resolution")):
        values = DEFAULT_GRID[name]
        parser.add_argument(f"--{name}", type=_numbers, default=values, metavar="X[,X...]",
                            help=f"grid values of the {grows} base (default: {values[0]:g} to "
                                 f"{values[-1]:g} by {values[1] - values[0]:.2g})")
    parser.add_argument("--phi", type=float, default=defaults.phi, metavar="X",
                        help="compound coefficient of the candidates (default: %(default)s)")
    parser.add_argument("--base", default=defaults.base, metavar="VARIANT",
                        help="the network to grow (default: %(default)s)")
    for name in ("width", "depth"):
        parser.add_argument(f"--base-{name}", type=float, default=None, metavar="X",
                            help=f"{name} multiplier of the base instead of the variant's: a "
                                 "smaller base makes the trials cheaper (default: the "
                                 "variant's)")
    parser.add_argument("--base-resolution", type=_positive_int, default=None, metavar="N",
                        help="input side of the base in the trials (default: half the base's)")
    parser.add_argument("--epochs", type=_positive_int, default=defaults.epochs, metavar="N",
                        help="epochs per trial (default: %(default)s)")
    parser.add_argument("--subset", type=_subset, default=defaults.subset, metavar="{N,all}",
                        help="at most N training and N held-out images (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="trial batch (default: 16 below 320 images, else 32)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        metavar="X", help="peak AdamW rate of every trial (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, metavar="X",
                        help="held-out share when the data has no val split, and the share of "
                             "the training subset that picks a trial's kept epoch "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, metavar="N",
                        help="seeds splits, initialisation and shuffling (default: %(default)s)")
    parser.add_argument("--flops-tolerance", type=float, default=defaults.flops_tolerance,
                        metavar="X", help="relative tolerance on the measured cost "
                                          "(default: %(default)s)")
    parser.add_argument("--product-tolerance", type=float, default=defaults.product_tolerance,
                        metavar="X", help="relative tolerance on alpha*beta^2*gamma^2 = 2 "
                                          "(default: %(default)s)")
    parser.add_argument("--search-dir", default=None, metavar="DIR",
                        help="the search folder (default: runs/<data>-<base>-scale-search)")
    parser.add_argument("--strategy", default=None, metavar="KIND",
                        help="tf.distribute strategy of the trials: auto, cpu, gpu, mirrored, "
                             "tpu (default: auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a search folder holding trials of other settings "
                             "(default: off)")
    return parser


def _base(args: argparse.Namespace):
    """``--base``, or with ``--base-width``/``--base-depth`` the custom variant they make."""
    if args.base_width is None and args.base_depth is None:
        return args.base
    from effnet_tl.models import custom_variant, get_variant

    try:
        spec = get_variant(args.base)
        return custom_variant(width=args.base_width, depth=args.base_depth, base=spec,
                              resolution=args.base_resolution or spec.resolution)
    except ValueError as error:
        raise UsageError(str(error)) from error


def settings(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`effnet_tl.scaling.search` the flags give."""
    return {"budget": args.budget, "phi": args.phi, "base": _base(args),
            "grid": {"alpha": args.alpha, "beta": args.beta, "gamma": args.gamma},
            "base_resolution": args.base_resolution, "epochs": args.epochs,
            "subset": args.subset, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "val_fraction": args.val_fraction,
            "seed": args.seed, "flops_tolerance": args.flops_tolerance,
            "product_tolerance": args.product_tolerance, "search_dir": args.search_dir,
            "strategy": args.strategy, "overwrite": args.overwrite}


def check(args: argparse.Namespace) -> dict:
    """The search's keyword arguments, checked: bad values are usage errors, then a missing
    dataset path fails (nothing here loads TensorFlow: the command line calls it first)."""
    from effnet_tl.data.sources import check_path_source
    from effnet_tl.scaling import SearchSettings

    options = settings(args)
    try:
        SearchSettings(**options)
    except ValueError as error:
        raise UsageError(str(error)) from error
    check_path_source(args.dataset)
    return options


def run(args: argparse.Namespace) -> int:
    from effnet_tl.scaling import search

    options = check(args)
    result = search(args.dataset, args.num_classes, **options)
    print(result.format_table(), file=sys.stderr, flush=True)
    print_json(result.to_dict())
    return 0
