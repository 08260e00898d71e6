"""What a TPU needs that a CPU or GPU does not, each decision a small function of plain inputs.

Colab and Cloud TPU users of the usual recipes hit the same walls: no TPU found (the resolver
needs ``"local"`` on a TPU VM), a CPU-only TensorFlow on a TPU VM, "File system scheme
'[local]' not implemented" (a TPU *node* cannot read the notebook's disk), dynamic shapes, and
batches that do not split into 8 x cores. :func:`effnet_tl.fit` asks these functions; none of
them needs a TPU, so tests check every rule here with the TPU faked (GUIDE §4).

* :func:`tpu_target`: which TPU to connect to, from an explicit address, ``COLAB_TPU_ADDR``
  (a TPU node), ``TPU_NAME``, or the accelerator device files of a TPU VM.
* :func:`explain_tpu_error`: one line on what to install when TensorFlow has no TPU kernels.
* :func:`tpu_batch_size`: the global batch, a multiple of 8 x cores.
* :func:`tpu_input`: where the training images live: the files (TPU VM: the host reads its
  disk), host memory (a TPU node, small data), or TFRecords on ``gs://`` (a TPU node, large).
* :func:`steps_per_execution`: steps run per call into the TPU.

Example:
    >>> tpu_target(None, environ={}, device_files=["/dev/accel0"])
    'local'
    >>> tpu_batch_size(100, replicas=8)
    128
"""

from __future__ import annotations

import glob
import os
from typing import Mapping, Sequence

import tensorflow as tf

__all__ = [
    "IN_MEMORY_LIMIT_BYTES",
    "TpuInputError",
    "connect",
    "explain_tpu_error",
    "host_has_tpu",
    "is_tpu",
    "steps_per_execution",
    "tpu_batch_size",
    "tpu_input",
    "tpu_target",
]

#: Images kept in host memory become constants of the input graph sent to a TPU node, which
#: must stay well below protobuf's 2 GiB; larger data goes to TFRecords on ``gs://``.
IN_MEMORY_LIMIT_BYTES = 2**30

#: The wheel index of TensorFlow builds with TPU kernels (``tensorflow-tpu``).
TPU_WHEELS = "https://storage.googleapis.com/libtpu-tf-releases/index.html"


class TpuInputError(ValueError):
    """The training data cannot reach the TPU as given (too large for memory, no ``gs://``)."""


def _device_files() -> list[str]:
    # v4 and later expose /dev/accel*; v2/v3 TPU VMs (Colab's "TPU v2") /dev/vfio/<n>.
    return glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*")


def host_has_tpu(device_files: Sequence[str] | None = None) -> bool:
    """True on a TPU VM: the TPU chips are attached to this host (their device files exist)."""
    return bool(_device_files() if device_files is None else device_files)


def tpu_target(address: str | None, *, environ: Mapping[str, str] | None = None,
               device_files: Sequence[str] | None = None) -> str | None:
    """The ``TPUClusterResolver(tpu=...)`` argument, or ``None`` when nothing says a TPU is here.

    In order: an explicit ``address`` (a name, ``grpc://host:port`` or ``"local"``); Colab's
    former TPU node runtime (``COLAB_TPU_ADDR``: a remote ``grpc://`` address); ``TPU_NAME``
    (Cloud TPU nodes and pods); the device files of a TPU VM (Colab's TPU runtime since 2024,
    where ``TPUClusterResolver()`` without an argument fails: "Please provide a TPU Name").

    Example:
        >>> tpu_target(None, environ={"COLAB_TPU_ADDR": "10.0.0.2:8470"}, device_files=[])
        'grpc://10.0.0.2:8470'
        >>> tpu_target(None, environ={}, device_files=[]) is None
        True
    """
    environ = os.environ if environ is None else environ
    device_files = _device_files() if device_files is None else device_files
    if address:
        return address
    if environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + environ["COLAB_TPU_ADDR"]
    if environ.get("TPU_NAME"):
        return environ["TPU_NAME"]
    if device_files:
        return "local"
    return None


def explain_tpu_error(error: BaseException) -> str | None:
    """One line on what to do when connecting to the TPU failed for a known reason, else None.

    Example:
        >>> print(explain_tpu_error(RuntimeError("No OpKernel was registered to support Op "
        ...       "'ConfigureDistributedTPU' ... Registered devices: [CPU]"))[:71])
        this TensorFlow has no TPU kernels (a plain `pip install tensorflow` is
    """
    text = str(error)
    if "ConfigureDistributedTPU" in text or "Registered devices: [CPU]" in text:
        version = tf.__version__
        return (f"this TensorFlow has no TPU kernels (a plain `pip install tensorflow` is "
                f"CPU-only on a TPU VM): pip install tensorflow-tpu=={version} -f {TPU_WHEELS}, "
                "then restart the runtime")
    if "Please provide a TPU Name" in text:
        return ("no TPU name: on a TPU VM (Colab's TPU runtime) pass strategy='tpu' with "
                "tpu_address='local'; on a TPU node pass its name or grpc:// address")
    return None


def connect(target: str):
    """Connect to and initialise the TPU system ``target``; returns a ``TPUStrategy``."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=target)
        if target != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        explained = explain_tpu_error(error)
        if explained is None:
            raise
        raise RuntimeError(explained) from error
    return tf.distribute.TPUStrategy(resolver)


def is_tpu(strategy) -> bool:
    """True for ``TPUStrategy`` (and the experimental one)."""
    return isinstance(strategy, (tf.distribute.TPUStrategy,
                                 tf.distribute.experimental.TPUStrategy))


def tpu_batch_size(batch_size: int, *, replicas: int) -> int:
    """The smallest multiple of ``8 x replicas`` that is at least ``batch_size``.

    A TPU core computes in tiles of 8 (and 128) rows: a global batch that splits into 8 rows
    per core or more avoids padding every step, and equal shares need a multiple of the core
    count anyway.

    Example:
        >>> tpu_batch_size(64, replicas=8), tpu_batch_size(65, replicas=8)
        (64, 128)
    """
    unit = 8 * max(1, replicas)
    return max(unit, -(-batch_size // unit) * unit)


def tpu_input(*, tpu_vm: bool, decoded_bytes: int, gcs_dir: str | None) -> str:
    """Where a TPU run's images come from: ``"files"``, ``"memory"`` or ``"tfrecords"``.

    * a TPU VM (``tpu_vm``, :func:`host_has_tpu`): the host runs tf.data on its own disk:
      ``"files"``;
    * a TPU node (remote): it cannot read this machine's disk. Decoded data up to
      :data:`IN_MEMORY_LIMIT_BYTES` goes in host memory (``"memory"``); larger data is written
      once as TFRecords under ``gcs_dir`` (``"tfrecords"``), which must be ``gs://``.

    Raises:
        TpuInputError: larger data without a ``gs://`` folder.

    Example:
        >>> tpu_input(tpu_vm=True, decoded_bytes=10**12, gcs_dir=None)
        'files'
        >>> tpu_input(tpu_vm=False, decoded_bytes=10**6, gcs_dir=None)
        'memory'
    """
    if tpu_vm:
        return "files"
    if decoded_bytes <= IN_MEMORY_LIMIT_BYTES:
        return "memory"
    if gcs_dir and str(gcs_dir).startswith("gs://"):
        return "tfrecords"
    size = f"{decoded_bytes / 2**30:.1f} GiB"
    raise TpuInputError(
        f"the TPU (a TPU node) cannot read this machine's disk, and the decoded images ({size}) "
        f"exceed the {IN_MEMORY_LIMIT_BYTES // 2**30} GiB kept in memory for it; pass "
        f"tpu_data_dir='gs://BUCKET/PATH' (got {gcs_dir!r}) to write TFRecords the TPU reads, "
        "or use a TPU VM, whose host reads local files")


def steps_per_execution(strategy, steps: int) -> int:
    """Steps per call into the device: up to 32 on a TPU (each call costs a host round trip),
    1 elsewhere. Never more than an epoch's steps (callbacks still see every epoch end)."""
    return max(1, min(32, steps)) if is_tpu(strategy) else 1
