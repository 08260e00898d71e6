"""A quiet TensorFlow start-up for the ``effnet-tl`` command (the library never calls this).

TensorFlow's C++ side writes to file descriptor 2 while it loads, before absl's logging is
initialised: the ``WARNING: All log messages before absl::InitializeLog()`` block, the oneDNN
notice, ``Could not find cuda drivers``, the CPU-feature notice. Measured with TF 2.21 on a CPU
machine, ``TF_CPP_MIN_LOG_LEVEL=3`` does not stop those lines (absl writes them before TensorFlow
applies the level), so :func:`quiet_tensorflow` imports TensorFlow with descriptor 2 pointed at
``/dev/null``. The level does stop what comes later, such as ``E0000 ... failed call to cuInit
... (303)`` when TensorFlow first looks for GPUs on a machine without one.

Example:
    >>> import os
    >>> with stderr_silenced():
    ...     os.write(2, b"not shown\\n")
    10
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

__all__ = ["quiet_tensorflow", "stderr_silenced"]

# Read by TensorFlow when it loads: 3 drops INFO, WARNING and ERROR lines of its C++ logging.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}


@contextlib.contextmanager
def stderr_silenced():
    """Point file descriptor 2 (what C++ code writes to) at ``/dev/null``, then restore it.

    Python's own ``sys.stderr`` is flushed first and works again afterwards, so an exception
    raised inside the block still prints. Where descriptor 2 cannot be duplicated (closed, or
    not a real descriptor), nothing is redirected.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    """Import TensorFlow without its start-up logs and keep its later C++ logging quiet.

    Call it before anything imports TensorFlow: once TensorFlow is loaded the lines are out and
    the environment is read, so this does nothing then. It also looks for devices with
    descriptor 2 silenced (what drivers print there depends on the machine's CUDA install) and
    lowers TensorFlow's and absl's Python loggers to errors.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.update(QUIET_ENVIRONMENT)
    with stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
