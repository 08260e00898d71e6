"""``effnet-tl scale --phi X``: compound-scaling multipliers and the variant they give.

Depth ``alpha**phi``, width ``beta**phi``, resolution ``gamma**phi`` of the base network
(:func:`effnet_tl.compound_scaling`), and the resulting :func:`effnet_tl.custom_variant`: its
resolution and, stage by stage, blocks, output channels and stride after rounding.
"""

from __future__ import annotations

import argparse

from effnet_tl.commands.common import UsageError, print_json


def add_parser(commands) -> argparse.ArgumentParser:
    from effnet_tl.models.scaling import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA

    parser = commands.add_parser(
        "scale", help="compound scaling: the multipliers for a coefficient phi and the "
                      "variant they give",
        description="Compound scaling (Tan & Le 2019): depth alpha^phi, width beta^phi, "
        "resolution gamma^phi of the base network, FLOPs growing about 2^phi; prints the "
        "multipliers and the resulting variant, stage by stage.")
    parser.add_argument("--phi", type=float, required=True, metavar="X",
                        help="compound coefficient (0: the base network; fractions allowed) "
                             "(required)")
    parser.add_argument("--base", default="b0", metavar="VARIANT",
                        help="the network to scale (default: %(default)s)")
    for name, value, grows in (("alpha", PAPER_ALPHA, "depth"), ("beta", PAPER_BETA, "width"),
                               ("gamma", PAPER_GAMMA, "resolution")):
        parser.add_argument(f"--{name}", type=float, default=value, metavar="X",
                            help=f"base of the {grows} multiplier (default: %(default)s, the "
                                 "paper's)")
    parser.add_argument("--profile", action="store_true",
                        help="also build the variant (random weights) and count its parameters "
                             "and FLOPs (default: off)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON instead of text (default: off)")
    return parser


def describe(args: argparse.Namespace) -> tuple[dict, object]:
    """The scaling as a dict (what ``--json`` prints) and the scaled ``VariantSpec``."""
    from effnet_tl.models import compound_scaling, custom_variant, scaled_stage_layout

    multipliers = compound_scaling(args.phi, args.alpha, args.beta, args.gamma)
    spec = custom_variant(args.phi, base=args.base, alpha=args.alpha, beta=args.beta,
                          gamma=args.gamma)
    stages: list[dict] = []
    for block in scaled_stage_layout(spec):
        if block["name"].endswith("a"):  # block3a starts stage 3
            stages.append({"stage": len(stages) + 1, "block": block["block"], "repeats": 0,
                           "filters": block["filters_out"], "stride": block["strides"],
                           "kernel": block["kernel_size"], "expand": block["expand_ratio"]})
        stages[-1]["repeats"] += 1
    return {
        "phi": args.phi, "alpha": args.alpha, "beta": args.beta, "gamma": args.gamma,
        "multipliers": {"depth": multipliers.depth, "width": multipliers.width,
                        "resolution": multipliers.resolution,
                        "flops": multipliers.flops_factor},
        "variant": {"name": spec.name, "base": args.base, "width": spec.width,
                    "depth": spec.depth, "resolution": spec.resolution,
                    "dropout_rate": spec.dropout_rate, "stages": stages},
    }, spec


def run(args: argparse.Namespace) -> int:

    try:
        scaled, spec = describe(args)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.profile:
        from effnet_tl.classifier import build_classifier
        from effnet_tl.models import profile

        counted = profile(build_classifier(1000, variant=spec, weights=None))
        scaled["variant"].update(params=counted.total_params, gmacs=round(counted.gmacs, 4))
    if args.json:
        print_json(scaled)
    else:
        print(_text(scaled))
    return 0


def _text(scaled: dict) -> str:
    m, v = scaled["multipliers"], scaled["variant"]
    counted = (f", {v['params']:,} params, {v['gmacs']:.3f} GMACs (1000 classes)"
               if "params" in v else "")
    lines = [
        (f"compound scaling phi={scaled['phi']:g} (alpha={scaled['alpha']:g}, "
         f"beta={scaled['beta']:g}, gamma={scaled['gamma']:g}) of {v['base']}:"),
        (f"  depth x{m['depth']:.4f}, width x{m['width']:.4f}, resolution "
         f"x{m['resolution']:.4f} -> FLOPs x{m['flops']:.3f} (depth * width^2 * resolution^2)"),
        (f"variant {v['name']}: width {v['width']:.4f}, depth {v['depth']:.4f}, "
         f"{v['resolution']} px, dropout {v['dropout_rate']:g}{counted}"),
        (f"  {'stage':>5} {'block':<12} {'repeats':>7} {'filters':>7} {'stride':>6} "
         f"{'kernel':>6} {'expand':>6}"),
    ]
    lines += [f"  {s['stage']:>5} {s['block']:<12} {s['repeats']:>7} {s['filters']:>7} "
              f"{s['stride']:>6} {s['kernel']:>6} {s['expand']:>6}" for s in v["stages"]]
    return "\n".join(lines)
