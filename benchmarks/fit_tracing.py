"""fit's wall time with its optimizer and metrics built before the train step is traced,
against Keras' deferred build (the same fit call, alternating, one process).

On the default strategy Keras creates the optimizer's and the compiled metrics' variables
inside the first trace of the train step, and TensorFlow then traces the step again (a
``tf.function`` that created variables is retraced without creating them). ``fit`` builds
them first (:func:`effnet_tl.compat.build_for_training`); the baseline here turns that off.
Data: the glyphs set of ``benchmarks/default_quality.py`` (800 training images, 64 px),
``fit``'s defaults with Lite0 ImageNet weights. Prints the median wall time, the median
fine-tuning phase time and the train-step traces of each, and the ratios.

    python -m benchmarks.fit_tracing [--repeats 3] [--dataset glyphs]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common  # noqa: F401  (sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads)


def timed_fit(data_dir: Path, run_dir: Path, *, prebuilt: bool) -> dict:
    """One default ``fit`` (Lite0, 64 px); wall seconds, phase seconds, train-step traces."""
    from effnet_tl import compat, fit
    from effnet_tl.train import step

    traces = []
    original_step, original_build = step.replica_train_step, compat.build_for_training

    def counting_step(model, *args, **kwargs):
        traces.append(model.name)
        return original_step(model, *args, **kwargs)

    step.replica_train_step = counting_step
    if not prebuilt:
        compat.build_for_training = lambda model, spec: None
    try:
        started = time.perf_counter()
        result = fit(data_dir, run_dir=run_dir, variant="lite0", weights="imagenet",
                     image_size=64, verbose=0)
        seconds = time.perf_counter() - started
    finally:
        step.replica_train_step, compat.build_for_training = original_step, original_build
    return {"seconds": seconds, "phases": result.metrics["phase_seconds"],
            "traces": len(traces), "val_accuracy": result.val_accuracy}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", default="glyphs", help="a dataset of default_quality.py")
    args = parser.parse_args(argv)

    from benchmarks.default_quality import DATASETS
    from effnet_tl.quiet import quiet_tensorflow

    quiet_tensorflow()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data_dir = DATASETS[args.dataset][0](work / args.dataset, 0)
        timed_fit(data_dir, work / "warm-up", prebuilt=True)  # imports, weights, first traces
        runs = {"built first (fit)": [], "deferred (Keras)": []}
        for repeat in range(args.repeats):
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
            for name in order:
                record = timed_fit(data_dir, work / f"{repeat}-{len(runs[name])}-{name[:5]}",
                                   prebuilt=name.startswith("built"))
                runs[name].append(record)
                print(f"repeat {repeat}: {name:<18s} {record['seconds']:6.1f} s, fine-tuning "
                      f"{record['phases']['finetune']:5.1f} s, {record['traces']} train-step "
                      f"traces, val accuracy {record['val_accuracy']:.3f}", flush=True)
    medians = {name: {key: statistics.median(r[key] if key != "finetune" else
                                             r["phases"]["finetune"] for r in records)
                      for key in ("seconds", "finetune", "traces")}
               for name, records in runs.items()}
    ours, keras_default = medians["built first (fit)"], medians["deferred (Keras)"]
    print(f"\n{args.dataset}, fit defaults, Lite0 64 px, medians of {args.repeats}:")
    for name, median in medians.items():
        print(f"  {name:<18s} {median['seconds']:6.1f} s  (fine-tuning {median['finetune']:5.1f} s,"
              f" {median['traces']:.0f} train-step traces)")
    print(f"  time ratio built first / deferred: {ours['seconds'] / keras_default['seconds']:.2f}"
          f"  (fine-tuning phase: {ours['finetune'] / keras_default['finetune']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
