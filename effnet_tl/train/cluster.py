"""Several worker processes training one model: who is the chief, what each one reads, and
how they agree.

With ``MultiWorkerMirroredStrategy`` every worker runs the same :func:`effnet_tl.fit` call.

* **Roles**: the chief (the ``chief`` task, else worker 0) writes the run folder; the others
  write theirs into a temporary folder that is removed at the end (:func:`worker_folder`).
  To resume, a restarted worker first copies the chief's resume state (:func:`copy_resume_state`):
  the run folder must be on storage every worker reads (one machine, NFS, a mounted bucket).
* **Data**: each worker decodes only its own files (:func:`shard_examples`, every N-th file),
  and every worker runs the same number of steps per epoch (:func:`steps_per_worker`), or the
  collective ops of the one with fewer steps would wait for ever.
* **Agreement**: :func:`all_agree` / :func:`any_worker` reduce a number over the workers, so
  decisions taken from local state (stop now, the run folder's state) are the same everywhere;
  :func:`broadcast_from_chief` hands the chief's decisions (a small JSON) to every worker.
* **Connecting**: :func:`waiting_for_workers` says what a worker waits for, gives up after
  :func:`connect_timeout`, and lets Ctrl-C through while TensorFlow waits for the others.

Example:
    >>> shard_examples(list(range(10)), Worker(index=1, count=3))
    [1, 4, 7]
    >>> steps_per_worker(num_examples=10, per_worker_batch=2, workers=3)
    1
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = [
    "Worker",
    "WorkerLost",
    "all_agree",
    "any_worker",
    "broadcast_from_chief",
    "connect_timeout",
    "copy_resume_state",
    "describe_peer_error",
    "is_multi_worker",
    "shard_examples",
    "steps_per_worker",
    "tf_config_workers",
    "waiting_for_workers",
    "worker_folder",
    "worker_of",
]

#: Seconds a worker waits for the others to connect before it gives up (the environment
#: variable ``EFFNET_TL_CONNECT_TIMEOUT`` overrides it: pods of a cluster job can start minutes
#: apart).
CONNECT_TIMEOUT = 600.0


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker run stopped (killed, crashed, or unreachable)."""


def describe_peer_error(error: Exception) -> str:
    """One line on why a collective op failed: which tasks stopped, without TensorFlow's
    function-node prefixes.

    Example:
        >>> describe_peer_error(RuntimeError("{{function_node x}} The following tasks are "
        ...     "unhealthy (stopped sending heartbeats):\\n/job:worker/replica:0/task:1\\nThe"))
        'worker task 1 stopped sending heartbeats (killed, crashed or unreachable)'
    """
    text = str(getattr(error, "message", None) or error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text).strip()
    # TensorFlow heads some errors with "Graph execution error:": the reason is further down.
    text = "\n".join(line for line in text.splitlines()
                     if line.strip() and line.strip() != "Graph execution error:")
    tasks = sorted(set(re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text)))
    if "unhealthy" in text and tasks:
        names = ", ".join(f"{job} task {index}" for job, index in tasks)
        return f"{names} stopped sending heartbeats (killed, crashed or unreachable)"
    first = text.splitlines()[0][:200] if text else "no message"
    return f"another worker stopped or cannot be reached ({type(error).__name__}: {first})"


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the cluster: ``index`` of ``count`` workers (0 is the chief)."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def tf_config_workers(environ=os.environ) -> int:
    """How many training tasks ``TF_CONFIG`` names (``chief`` + ``worker``); 0 when unset.

    Example:
        >>> tf_config_workers({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
        ...                                 '"task": {"type": "worker", "index": 0}}'})
        2
    """
    text = environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except (ValueError, AttributeError):
        raise ValueError(
            f"TF_CONFIG is not valid JSON: {text!r}; see "
            "https://www.tensorflow.org/guide/distributed_training#TF_CONFIG") from None
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def connect_timeout(environ=os.environ) -> float:
    """``EFFNET_TL_CONNECT_TIMEOUT`` seconds, else :data:`CONNECT_TIMEOUT`.

    Example:
        >>> connect_timeout({"EFFNET_TL_CONNECT_TIMEOUT": "30"})
        30.0
    """
    text = environ.get("EFFNET_TL_CONNECT_TIMEOUT")
    if text is None:
        return CONNECT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"EFFNET_TL_CONNECT_TIMEOUT={text!r} must be a number of seconds > 0")
    return value


#: The watcher process of :func:`waiting_for_workers` (Python only, no TensorFlow import).
_WATCHER = """
import os, select, signal, sys, time
parent, timeout, me, addresses = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]

def say(line):
    print("effnet_tl: " + line, file=sys.stderr, flush=True)

def stop(line, status):
    say(line)
    os.kill(parent, signal.SIGKILL)
    os._exit(status)

for number, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
    signal.signal(number, lambda *_, status=status: stop(
        me + ": interrupted while waiting for the other workers to connect", status))
started = time.monotonic()
next_line = started + float(sys.argv[5])
while True:
    if select.select([sys.stdin], [], [], 0.5)[0] and not sys.stdin.buffer.read(1):
        os._exit(0)  # the strategy is up: the parent closed the pipe
    waited = time.monotonic() - started
    if waited > timeout:
        stop(f"error: {me}: the other workers ({addresses}) did not all connect within "
             f"{timeout:.0f} s; start every worker with the same TF_CONFIG cluster list and its "
             "own index (EFFNET_TL_CONNECT_TIMEOUT=SECONDS waits longer)", 1)
    if time.monotonic() >= next_line:
        say(f"{me}: waiting for the other workers to connect ({addresses}; {waited:.0f} s so far)")
        next_line = time.monotonic() + 60
"""


@contextlib.contextmanager
def waiting_for_workers(*, timeout: float, quiet_for: float = 5.0):
    """Guard the start of a multi-worker strategy, which blocks until every worker connected.

    TensorFlow waits silently, holding the GIL, and swallows SIGTERM; a Python thread could
    not even run. So a small watcher *process* says what this worker waits for (after
    ``quiet_for`` seconds, then every minute), ends it with one line after ``timeout``
    seconds, and on Ctrl-C (the terminal signals the whole process group) ends it at once.
    Only SIGKILL gets through to it, so the exit status is then 137.
    The watcher exits as soon as the strategy is up. POSIX only; elsewhere nothing is watched.
    """
    if os.name != "posix":
        yield
        return
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster", {})
    addresses = cluster.get("chief", []) + cluster.get("worker", [])
    me = f"worker {config.get('task', {}).get('index', 0)} of {len(addresses) or 1}"
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(os.getpid()), str(timeout), me,
         ", ".join(addresses), str(quiet_for)], stdin=subprocess.PIPE)
    try:
        yield
    finally:
        watcher.stdin.close()
        watcher.wait()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True under ``MultiWorkerMirroredStrategy`` (even with one worker)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_of(strategy: tf.distribute.Strategy) -> Worker:
    """This process's :class:`Worker` (``Worker(0, 1)`` for single-process strategies)."""
    if not is_multi_worker(strategy):
        return Worker()
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    order = [("chief", i) for i in range(len(spec.get("chief", [])))] + \
            [("worker", i) for i in range(len(spec.get("worker", [])))]
    if not order:  # no TF_CONFIG: one local worker
        return Worker()
    return Worker(index=order.index((resolver.task_type, resolver.task_id)), count=len(order))


def shard_examples(examples, worker: Worker):
    """Every ``worker.count``-th example from ``worker.index`` on: this worker's files.

    Works on sequences and on :class:`~effnet_tl.data.FileExamples` / ``ArrayExamples``
    (their ``subset``); streams (``DatasetExamples``) are sharded with ``Dataset.shard``.
    """
    if worker.count == 1:
        return examples
    if hasattr(examples, "subset"):
        return examples.subset(np.arange(worker.index, len(examples), worker.count))
    if hasattr(examples, "dataset"):  # a stream: shard its elements, count what is left
        total = examples.num_examples
        labels = None if examples.labels is None else examples.labels[worker.index::worker.count]
        return dataclasses.replace(
            examples, dataset=examples.dataset.shard(worker.count, worker.index),
            num_examples=None if total is None else len(range(worker.index, total, worker.count)),
            labels=labels)
    return examples[worker.index::worker.count]


def steps_per_worker(*, num_examples: int, per_worker_batch: int, workers: int) -> int:
    """Steps per epoch that every worker's shard can fill with whole batches.

    The smallest shard holds ``num_examples // workers`` examples; every worker runs that many
    whole batches (at least one: the datasets repeat), so all meet at every collective step.
    """
    return max(1, (num_examples // workers) // per_worker_batch)


def _reduce(strategy, value: float, op) -> float:
    """``value`` reduced over every replica of every worker, with one traced function per
    strategy and op (a new trace per call would warn about retracing after five)."""
    functions = strategy.__dict__.setdefault("_effnet_tl_reduce", {})
    if op not in functions:
        @tf.function
        def reduce(local_value):
            return strategy.reduce(op, strategy.run(lambda: local_value), axis=None)

        functions[op] = reduce
    return float(functions[op](tf.constant(value, tf.float64)))


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True on every worker when ``flag`` is true on any of them (a collective: all must call)."""
    if not is_multi_worker(strategy):
        return bool(flag)
    return _reduce(strategy, 1.0 if flag else 0.0, tf.distribute.ReduceOp.SUM) > 0


def all_agree(strategy: tf.distribute.Strategy, value: float) -> bool:
    """Whether every worker passed the same ``value`` (a collective: all must call)."""
    if not is_multi_worker(strategy):
        return True
    replicas = strategy.num_replicas_in_sync
    total = _reduce(strategy, float(value), tf.distribute.ReduceOp.SUM)
    squares = _reduce(strategy, float(value) ** 2, tf.distribute.ReduceOp.SUM)
    # Equal values <=> zero variance: sum(v^2) * n == sum(v)^2.
    return abs(squares * replicas - total * total) <= 1e-9 * max(1.0, total * total)


def worker_folder(chief_root: Path, worker: Worker) -> Path:
    """Where this worker writes its run files: the run folder for the chief, else an empty
    temporary folder named after the run (the caller removes it; one left by a killed worker
    is emptied by the next start of the same run).

    Example:
        >>> worker_folder(Path("runs/flowers"), Worker(0, 2))
        PosixPath('runs/flowers')
    """
    if worker.is_chief:
        return Path(chief_root)
    run = hashlib.sha1(str(Path(chief_root).resolve()).encode("utf-8")).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"effnet_tl-worker{worker.index}-{run}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


#: What a worker needs from the chief's run folder to resume where the chief is.
RESUME_FILES = ("config.json", "phases.json", "history.csv", "model.keras")


def copy_resume_state(chief_root: Path, own_root: Path) -> None:
    """Copy the chief's resume state (settings, finished phases, history, kept model and
    per-phase backups) into a non-chief worker's folder, replacing what it held."""
    chief_root, own_root = Path(chief_root), Path(own_root)
    for name in RESUME_FILES:
        if (chief_root / name).exists():
            shutil.copy2(chief_root / name, own_root / name)
    if (own_root / "backup").exists():
        shutil.rmtree(own_root / "backup")
    if (chief_root / "backup").exists():
        shutil.copytree(chief_root / "backup", own_root / "backup")


#: The most JSON bytes :func:`broadcast_from_chief` carries.
BROADCAST_BYTES = 16384


def broadcast_from_chief(strategy: tf.distribute.Strategy, payload: dict) -> dict:
    """The chief's ``payload`` on every worker (a collective: all must call; the others'
    payloads are ignored). Decisions taken on the chief alone reach every worker this way,
    so no floating-point difference between machines can make the workers train differently.

    Example:
        >>> broadcast_from_chief(tf.distribute.get_strategy(), {"flips": False})
        {'flips': False}
    """
    if not is_multi_worker(strategy):
        return payload
    data = json.dumps(payload, sort_keys=True).encode("utf-8")
    if len(data) > BROADCAST_BYTES:
        raise ValueError(f"broadcast_from_chief carries at most {BROADCAST_BYTES} bytes of JSON; "
                         f"got {len(data)}")
    buffer = np.zeros(BROADCAST_BYTES, np.float32)  # bytes 0..255 are exact in float32
    buffer[:len(data)] = np.frombuffer(data, np.uint8)

    @tf.function
    def share(values):
        def contribute():
            first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
            return values * tf.cast(first, tf.float32)  # replica 0 lives on the chief

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(contribute), axis=None)

    shared = share(tf.constant(buffer)).numpy().astype(np.uint8)
    return json.loads(shared[:np.flatnonzero(shared)[-1] + 1].tobytes().decode("utf-8"))
