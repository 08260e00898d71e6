"""One fit on 1 process vs the same fit on N local worker processes (MultiWorkerMirroredStrategy).

Digits written as PNG files (the quick start's data: 1,437 training images, 360 test), Lite0
with its offline ImageNet weights at ``--image-size`` px, fixed epochs (no early stopping) and
the same *global* batch in both settings. Each run is a fresh process (the multi-worker one
through :func:`effnet_tl.launch.launch_local`); the two settings alternate, ``--repeats``
times, and the table shows medians: seconds per epoch of each phase (``phases.json``), the
whole run's wall time, test accuracy, and the N-process / 1-process ratio.

On one machine the workers share its cores, and each step adds a collective all-reduce
over localhost; the numbers say what that costs here, not what N machines would give.

    python benchmarks/multi_worker.py [--workers 2] [--repeats 3] [--image-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from effnet_tl.launch import launch_local  # noqa: E402

WORKER = """
import json, sys
from effnet_tl import fit
data, run_dir, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
fit(data, 10, run_dir=run_dir, overwrite=True, **settings)
"""


def run_once(data: Path, run_dir: Path, settings: dict, workers: int) -> dict:
    command = [sys.executable, "-c", WORKER, str(data), str(run_dir), json.dumps(settings)]
    started = time.perf_counter()
    if workers == 1:
        status = subprocess.run(command, stdout=subprocess.DEVNULL).returncode
    else:
        status = launch_local(command, workers, log_dir=run_dir.parent / f"logs-{run_dir.name}")
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the {workers}-process run failed with status {status}")
    phases = json.loads((run_dir / "phases.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    return {"wall": wall, "test": report["test"]["accuracy"],
            **{f"{name} s/epoch": phases[name]["seconds"] / max(1, phases[name]["epochs"])
               for name in ("head", "finetune") if name in phases}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    from effnet_tl.cli import write_digits

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effnet_tl-multi-worker-"))
    data = work / "digits"
    write_digits(data)
    settings = dict(variant="lite0", weights="imagenet", image_size=args.image_size,
                    batch_size=args.batch_size, head_epochs=6, finetune_epochs=4,
                    unfreeze_blocks=6, augment="light", early_stopping=False, seed=0,
                    verbose=0)
    results: dict[int, list[dict]] = {1: [], args.workers: []}
    for repeat in range(args.repeats):
        for workers in results:  # alternate: 1 process, then N, then 1 again ...
            results[workers].append(
                run_once(data, work / f"run-{workers}-{repeat}", settings, workers))
            print(f"repeat {repeat + 1}/{args.repeats}, {workers} process(es): "
                  f"{results[workers][-1]}", file=sys.stderr, flush=True)

    print(f"\nLite0 {args.image_size} px on digits ({os.cpu_count()} CPU cores), global batch "
          f"{args.batch_size}, head 6 + fine-tune 4 epochs (6 blocks), median of "
          f"{args.repeats} alternating runs")
    print(f"| | 1 process | {args.workers} worker processes | ratio |")
    print("|---|---|---|---|")
    for key in results[1][0]:
        one = statistics.median(row[key] for row in results[1])
        many = statistics.median(row[key] for row in results[args.workers])
        unit = "" if key == "test" else " s"
        print(f"| {key} | {one:.3f}{unit} | {many:.3f}{unit} | {many / one:.2f}x |")


if __name__ == "__main__":
    main()
