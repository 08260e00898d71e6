"""Start N worker processes on this machine, each with its ``TF_CONFIG``: multi-worker training
tried on one machine before a cluster.

Each worker gets a free localhost port and the same cluster list; worker 0 (the chief) prints
to this terminal, the others write ``worker<i>.log`` in ``log_dir`` (by default a temporary
folder, removed when every worker succeeded). When one worker fails the others notice within
seconds (their collective ops fail) and exit; whatever is still running after ``grace`` seconds
is terminated. On a real cluster run one command per machine instead,
each with its own ``TF_CONFIG`` (README, "Scale out").

Example:
    >>> configs = tf_configs(["localhost:2001", "localhost:2002"])
    >>> configs[1]["task"], configs[1]["cluster"]["worker"]
    ({'type': 'worker', 'index': 1}, ['localhost:2001', 'localhost:2002'])
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

__all__ = ["free_ports", "launch_local", "tf_configs"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on localhost now (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind(("localhost", 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def tf_configs(addresses: Sequence[str]) -> list[dict]:
    """One ``TF_CONFIG`` per worker address (worker 0 is the chief)."""
    cluster = {"worker": list(addresses)}
    return [{"cluster": cluster, "task": {"type": "worker", "index": index}}
            for index in range(len(addresses))]


def launch_local(command: Sequence[str], workers: int, *, log_dir: str | os.PathLike | None = None,
                 grace: float = 120.0, env: dict | None = None) -> int:
    """Run ``command`` as ``workers`` processes that train together; return an exit status.

    Args:
        command: The program and its arguments (e.g. ``[sys.executable, "train.py"]``); every
            worker runs the same command.
        workers: Number of processes (>= 1).
        log_dir: Where workers 1.. write their output (default: a new temporary folder,
            removed when all of them succeed).
        grace: Seconds the others may take to exit after one failed before they are stopped.
        env: Environment for the workers (default: this process's).

    Returns:
        0 when every worker exited 0; else the first failing worker's status (128 + N for a
        worker killed by signal N, as a shell reports it; 130 on Ctrl-C).
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1. Received: workers={workers!r}")
    if not command:
        raise ValueError("launch_local needs a command to run, e.g. ['effnet-tl', 'fit', ...]")
    temporary = log_dir is None
    logs = Path(tempfile.mkdtemp(prefix="effnet_tl-launch-")) if temporary else Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    configs = tf_configs([f"localhost:{port}" for port in free_ports(workers)])
    processes, files = [], []
    try:
        for index, config in enumerate(configs):
            output = None
            if index:
                output = open(logs / f"worker{index}.log", "w")
                files.append(output)
            processes.append(subprocess.Popen(
                list(command), stdout=output, stderr=subprocess.STDOUT if output else None,
                env={**(os.environ if env is None else env), "TF_CONFIG": json.dumps(config)}))
    except OSError as error:  # e.g. no such program: nothing may keep running
        _stop(processes)
        for output in files:
            output.close()
        if temporary:
            shutil.rmtree(logs, ignore_errors=True)
        raise ValueError(f"cannot start {command[0]!r} ({error.strerror}); give an effnet-tl "
                         "subcommand (fit ...) or a program on PATH") from None
    if workers > 1:
        kept = " (removed if all succeed)" if temporary else ""
        print(f"effnet_tl: started {workers} workers; worker 0 prints here, the others write "
              f"{logs}/worker<i>.log{kept}", file=sys.stderr, flush=True)
    try:
        status = _wait(processes, grace)
    except KeyboardInterrupt:
        _stop(processes)
        status = 130
    finally:
        for output in files:
            output.close()
    for index, process in enumerate(processes):
        if index and process.returncode not in (0, None) and status != 130:
            print(f"effnet_tl: worker {index} {_ended(process.returncode)}; its output: "
                  f"{logs / f'worker{index}.log'}", file=sys.stderr, flush=True)
    if status == 0 and temporary:
        shutil.rmtree(logs, ignore_errors=True)
    return status


def _ended(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


def _status(returncode: int) -> int:
    """A shell's exit status for a process's return code (-N: killed by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def _wait(processes, grace: float) -> int:
    """Wait for all; after the first failure give the rest ``grace`` seconds, then stop them."""
    failed_at, status = None, 0
    while True:
        states = [process.poll() for process in processes]  # every one polled, each round
        if all(state is not None for state in states):
            break
        failed = [state for state in states if state not in (None, 0)]
        if failed and failed_at is None:
            failed_at, status = time.monotonic(), _status(failed[0])
        if failed_at is not None and time.monotonic() - failed_at > grace:
            _stop(processes)
            break
        time.sleep(0.2)
    if status == 0:
        status = next((_status(p.returncode) for p in processes
                       if p.returncode not in (0, None)), 0)
    return status


def _stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
