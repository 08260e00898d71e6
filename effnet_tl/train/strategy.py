"""Pick the tf.distribute strategy and the matching mixed-precision policy.

Example:
    >>> from effnet_tl.train.strategy import get_strategy, mixed_precision_policy_for
    >>> strategy = get_strategy("cpu")
    >>> mixed_precision_policy_for(strategy)
    'float32'
"""

from __future__ import annotations

import tensorflow as tf

from effnet_tl.train.cluster import connect_timeout, tf_config_workers, waiting_for_workers
from effnet_tl.train.tpu import connect, is_tpu, tpu_target

__all__ = ["STRATEGY_KINDS", "get_strategy", "mixed_precision_policy_for"]

STRATEGY_KINDS = ("auto", "cpu", "gpu", "mirrored", "tpu", "multiworker")


def get_strategy(kind: str = "auto", *, tpu_address: str | None = None) -> tf.distribute.Strategy:
    """Return a ``tf.distribute`` strategy for ``kind``.

    * ``"auto"``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several workers;
      a TPU when one is hinted (``tpu_address``, ``COLAB_TPU_ADDR``/``TPU_NAME``,
      or TPU VM devices) and the resolver connects; else ``MirroredStrategy`` over all GPUs
      when there are several; else the default strategy (one GPU or the CPU).
    * ``"cpu"``: ``OneDeviceStrategy("/cpu:0")`` (even when GPUs exist).
    * ``"gpu"``: ``OneDeviceStrategy("/gpu:0")``; fails when there is no GPU.
    * ``"mirrored"``: ``MirroredStrategy`` over all local GPUs (or the CPU).
    * ``"tpu"``: ``TPUStrategy``; Colab: no address needed; TPU VM: ``"local"`` (the default
      when no TPU env var is set); Cloud TPU node: its name or ``grpc://`` address.
    * ``"multiworker"``: ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``;
      :func:`effnet_tl.fit` trains under it with its own loop
      (:func:`effnet_tl.train.distributed.distributed_fit`): ``model.fit`` fails under it with
      TF 2.21 + Keras 3.

    Args:
        kind: One of :data:`STRATEGY_KINDS`.
        tpu_address: TPU name or address for ``"tpu"``/``"auto"``.

    Returns:
        The strategy; create and compile the model inside ``strategy.scope()``.

    Example:
        >>> get_strategy("auto").num_replicas_in_sync >= 1
        True
    """
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"kind={kind!r} is not a strategy kind; accepted: {list(STRATEGY_KINDS)}")
    if kind == "tpu":
        return connect(tpu_target(tpu_address) or "local")
    if kind == "auto":
        if tf_config_workers() > 1:
            return _multi_worker_strategy()
        target = tpu_target(tpu_address)
        if target is not None:
            try:
                return connect(target)
            except (ValueError, RuntimeError, tf.errors.OpError) as error:
                print(f"effnet_tl: no TPU reachable ({error}); falling back to GPU/CPU.")
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if kind == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if kind == "gpu":
        if not tf.config.list_logical_devices("GPU"):
            raise RuntimeError(
                "kind='gpu' but TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') "
                "is empty); use kind='auto' or 'cpu', or install a CUDA-enabled TensorFlow."
            )
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return _multi_worker_strategy()


def _multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    if tf_config_workers() <= 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    # It blocks until every worker has connected: say so, bound it, and let Ctrl-C through.
    with waiting_for_workers(timeout=connect_timeout()):
        return tf.distribute.MultiWorkerMirroredStrategy()


def _strategy_devices(strategy: tf.distribute.Strategy) -> tuple[str, ...]:
    try:
        return tuple(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError):
        # The default strategy has no device list: ops land on GPU:0 when one is visible.
        return ("/gpu:0",) if tf.config.list_logical_devices("GPU") else ("/cpu:0",)


def mixed_precision_policy_for(strategy: tf.distribute.Strategy) -> str:
    """The Keras dtype policy that pays off on ``strategy``'s devices.

    ``"mixed_bfloat16"`` on TPU, ``"mixed_float16"`` on GPU (use it with a
    ``LossScaleOptimizer``; Keras adds one on ``compile``), ``"float32"`` on CPU, where
    bfloat16 measured slower (GUIDE §3: B0 train 43 vs 60 img/s).

    Example:
        >>> import tensorflow as tf
        >>> mixed_precision_policy_for(tf.distribute.OneDeviceStrategy("/cpu:0"))
        'float32'
    """
    if is_tpu(strategy):
        return "mixed_bfloat16"
    if any("GPU" in device.upper() for device in _strategy_devices(strategy)):
        return "mixed_float16"
    return "float32"
