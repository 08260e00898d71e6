"""``effnet-tl variants [NAME...]``: each variant's resolution, parameters and FLOPs.

Every row builds the classifier (random weights, nothing downloaded) and counts it with
:func:`effnet_tl.models.profile`: parameters with a ``--num-classes`` head (1000: the ImageNet
figures keras.applications and the papers quote) and multiply-adds for one image at the
variant's own resolution, the papers' "FLOPs".
"""

from __future__ import annotations

import argparse

from effnet_tl.commands.common import UsageError, print_json, say


def add_parser(commands) -> argparse.ArgumentParser:
    from effnet_tl.cli import _positive_int

    parser = commands.add_parser(
        "variants", help="list the EfficientNet variants: resolution, parameters, FLOPs",
        description="Build each variant (random weights, offline) and count its parameters "
        "and multiply-adds for one image at its native resolution (the EfficientNet papers' "
        "FLOPs). All variants take about a minute on 2 CPU cores; name some to be quicker.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="variants to list, e.g. b0 lite0 v2-s (default: all of them)")
    parser.add_argument("--num-classes", type=_positive_int, default=1000, metavar="N",
                        help="classes of the head counted in the parameters (default: "
                             "%(default)s, as the papers)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON rows instead of a table (default: off)")
    return parser


def run(args: argparse.Namespace) -> int:
    from effnet_tl.classifier import build_classifier
    from effnet_tl.models import VARIANTS, get_variant
    from effnet_tl.models.profile import format_variant_table, variant_table

    try:
        specs = [get_variant(name) for name in args.names] or list(VARIANTS.values())
    except ValueError as error:
        raise UsageError(str(error)) from error

    def builders():
        for index, spec in enumerate(specs, 1):
            say(f"building {spec.name} ({index}/{len(specs)})")
            yield spec.name, lambda spec=spec: build_classifier(
                args.num_classes, variant=spec, weights=None)

    rows = variant_table(builders())
    if args.json:
        print_json([{"variant": row.name, "family": spec.family,
                     "resolution": list(row.resolution), "params": row.total_params,
                     "gmacs": round(row.gmacs, 4), "width": spec.width, "depth": spec.depth,
                     "dropout_rate": spec.dropout_rate} for row, spec in zip(rows, specs)])
    else:
        print(format_variant_table(rows))
    return 0
