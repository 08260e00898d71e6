"""``effnet-tl launch --workers N COMMAND ...``: N local worker processes training together.

``COMMAND`` is an ``effnet-tl`` subcommand (``fit data/ 5 --variant lite0``) or any program
(``python train.py``); each worker runs it with its own ``TF_CONFIG``, so ``fit`` trains under
``MultiWorkerMirroredStrategy`` (:mod:`effnet_tl.launch`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from effnet_tl.commands.common import UsageError


def add_parser(commands) -> argparse.ArgumentParser:
    from effnet_tl.cli import _positive_int

    parser = commands.add_parser(
        "launch", help="run a command as N local workers that train together (multi-worker)",
        description="Start N processes on this machine, each with a TF_CONFIG naming all of "
        "them (free localhost ports), to try multi-worker training before a cluster. Worker 0 "
        "prints here; the others write worker<i>.log. On a cluster, run one command per "
        "machine with its own TF_CONFIG instead (README: Scale out).",
        epilog="example: effnet-tl launch --workers 2 fit data/flowers --num-classes 5 "
               "--variant lite0")
    parser.add_argument("--workers", type=_positive_int, default=2, metavar="N",
                        help="worker processes (default: %(default)s)")
    parser.add_argument("--log-dir", default=None, metavar="DIR",
                        help="where workers 1.. write their logs (default: a temporary folder)")
    parser.add_argument("worker_command", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                        help="an effnet-tl subcommand with its arguments, or a program")
    return parser


def run(args: argparse.Namespace) -> int:
    from effnet_tl.commands import COMMANDS
    from effnet_tl.launch import launch_local

    command = list(args.worker_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("launch needs a command after its options, e.g. "
                         "'effnet-tl launch --workers 2 fit data/flowers --num-classes 5'")
    env = None
    if command[0] in ("fit", "demo", *COMMANDS):
        # The installed entry point: `python -m` would put the current folder first on the
        # import path, and the parent folder of a clone holds another effnet_tl/.
        script = Path(sys.executable).with_name("effnet-tl")
        if script.exists():
            command = [str(script), *command]
        else:
            command = [sys.executable, "-m", "effnet_tl.cli", *command]
            env = {**os.environ, "PYTHONSAFEPATH": "1"}  # Python >= 3.11: no current folder
    return launch_local(command, args.workers, log_dir=args.log_dir, env=env)
