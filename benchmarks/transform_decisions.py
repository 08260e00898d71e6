"""How often ``fit`` keeps or drops each transform, per dataset: the shipped rule against the
previous one, on the same runs.

``augment="auto"`` (the default) lets the head, trained on frozen features, classify the
validation images mirrored and zoomed, and drops a transform that changes the answer
(:func:`effnet_tl.train.adaptive.loses_confidence` for flips,
:func:`~effnet_tl.train.adaptive.changes_answers` for zoom). Rotation is no longer probed: the
same test dropped it in 46 of 48 runs on the far datasets here, though no class here changes
under 15 degrees (results files from before keep its counts). Small validation sets make
that decision noisy. This benchmark runs ``fit`` up to its decisions
(one fine-tuning epoch) on the datasets of :mod:`benchmarks.default_quality`, for several seeds
and validation fractions, records how many validation images each transform turned wrong and
right (and, for flips, how much less the head trusts the true class), and sets the shipped
rule's decision beside what the previous rule (2 standard deviations of changed answers, for
every transform) decides from the same counts.

What is right is known by construction: mirroring changes the class of glyphs (b/d, p/q ...),
digits and arrows, not of photo crops or gratings; zooming changes a grating's class (its
spatial frequency). A wrongly kept flip costs ~20 points on glyphs (measured: 72-80 % against
~96 %); a wrongly dropped one on photos cost nothing measurable (the best grid setting there
has no flips).

    python -m benchmarks.transform_decisions [--seeds 6] [--val-fractions 0.1,0.2]
                                             [--datasets glyphs,photos] [--work-dir DIR]
                                             [--out results.json]
    python -m benchmarks.transform_decisions --table results.json   # README table

About 15 s per run on the 2-core CPU machine (the default: 5 datasets x 2 fractions x 6
seeds, ~16 minutes). Needs ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import in_fresh_process  # noqa: E402

#: Transforms that change the class, by construction of each dataset.
CHANGES_CLASS = {"digits": {"flips"}, "glyphs": {"flips"}, "arrows": {"flips"},
                 "photos": set(), "textures": {"zoom"}}


def previous_rule(lost: int, gained: int, images: int) -> bool:
    """The rule before this benchmark: drop when the net loss reaches 2 standard deviations
    (``2 sqrt(lost + gained)``) and 2 % of the images, for every transform."""
    return lost > gained and lost - gained >= max(2 * math.sqrt(lost + gained), 0.02 * images)


def decisions_of(name: str, val_fraction: float, seeds: list[int], work: str) -> list[dict]:
    """Run fit up to its decisions for every seed; one record per run (in a child process)."""
    from benchmarks import default_quality as quality
    from effnet_tl import fit
    from effnet_tl.quiet import quiet_tensorflow

    quiet_tensorflow()
    data = quality.prepare(name, Path(work), False)
    classes = len(quality.split_counts(data)["train"])
    records = []
    for seed in seeds:
        run_dir = Path(work) / "runs" / f"{name}-{val_fraction}-{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            result = fit(data, classes, variant="lite0", weights="imagenet", image_size=64,
                         seed=seed, val_fraction=val_fraction, finetune_epochs=1,
                         run_dir=run_dir, verbose=0)
        decided = result.metrics["decisions"] or {}
        record = dict(seed=seed, seconds=round(time.perf_counter() - started, 1),
                      val_images=result.config["source"]["num_val"],
                      head_val_accuracy=decided.get("domain", {}).get("head_val_accuracy"),
                      probes={k: dict(lost=v["turned_wrong"], gained=v["turned_right"],
                                      kept=v["kept"], nll_increase=v.get("nll_increase"),
                                      nll_increase_t=v.get("nll_increase_t"))
                              for k, v in decided.items() if isinstance(v, dict) and "kept" in v})
        print(f"  {name} val {val_fraction} seed {seed}: " + ", ".join(
            f"{k} {'kept' if p['kept'] else 'OFF'} ({p['lost']} wrong, {p['gained']} right)"
            for k, p in record["probes"].items()), flush=True)
        records.append(record)
        shutil.rmtree(run_dir, ignore_errors=True)
    return records


def summary_rows(results: dict) -> list[str]:
    """The README table: per dataset and validation fraction, the runs that dropped each
    transform (flips under both rules; zoom keeps the answer-counting rule; rotation "n/a"
    where runs no longer probe it)."""
    rows = ["| dataset (val_fraction) | val images | mirroring changes the class | flips "
            "dropped, previous rule | flips dropped, shipped rule | rotation dropped | "
            "zoom dropped |", "|---|---|---|---|---|---|---|"]
    for key, records in results.items():
        name, fraction = key.split("@")
        images = sorted(r["val_images"] for r in records)[len(records) // 2]
        runs = len(records)
        flips = [r["probes"]["flips"] for r in records]
        before = sum(previous_rule(f["lost"], f["gained"], r["val_images"])
                     for f, r in zip(flips, records))
        now = sum(not f["kept"] for f in flips)
        dropped = {t: f"{sum(not r['probes'][t]['kept'] for r in records)}/{runs}"
                   if all(t in r["probes"] for r in records) else "n/a"
                   for t in ("rotation", "zoom")}
        zoom_note = " (changes the class)" if "zoom" in CHANGES_CLASS[name] else ""
        rows.append(f"| {name} ({fraction}) | {images} | "
                    f"{'yes' if 'flips' in CHANGES_CLASS[name] else 'no'} | {before}/{runs} | "
                    f"{now}/{runs} | {dropped['rotation']} | {dropped['zoom']}{zoom_note} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--val-fractions", default="0.1,0.2")
    parser.add_argument("--datasets", default=",".join(CHANGES_CLASS))
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--out", default=None, help="write every run as JSON")
    parser.add_argument("--table", default=None, metavar="RESULTS_JSON",
                        help="print the README table from an --out file and exit")
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(summary_rows(json.loads(Path(args.table).read_text()))))
        return 0
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CHANGES_CLASS))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {sorted(CHANGES_CLASS)}")
    work = args.work_dir or tempfile.mkdtemp(prefix="effnet_tl_transforms_")
    results, started = {}, time.time()
    for fraction in [float(f) for f in args.val_fractions.split(",")]:
        for name in names:
            # A fresh process per (dataset, fraction): TensorFlow keeps memory per model.
            results[f"{name}@{fraction}"] = in_fresh_process(
                decisions_of, name, fraction, list(range(args.seeds)), work)
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\n{time.time() - started:.0f} s in all")
    print("\n".join(summary_rows(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
