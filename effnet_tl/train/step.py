"""The one training step and eval step, shared by ``model.fit`` and a custom distributed loop.

Why a custom loop at all: with TF 2.21 + Keras 3, ``MultiWorkerMirroredStrategy`` fails inside
``model.fit`` ("Attempt to convert a value (PerReplica ...) to a Tensor"), while
``strategy.experimental_distribute_dataset`` + ``strategy.run`` + ``optimizer.apply_gradients``
works (GUIDE §4). So the arithmetic of a step lives here, once:

* :func:`replica_train_step` / :func:`replica_eval_step` run on one replica's slice of a batch.
* :class:`SharedStepModel` is a ``keras.Model`` whose ``train_step``/``test_step`` call them, so
  ``model.fit`` runs the very same code.
* :func:`effnet_tl.train.distributed.distributed_fit` drives them with ``strategy.run``.

Loss scaling matches Keras: each replica divides the sum of its per-example losses by the
*global* batch size (``tf.nn.compute_average_loss``) and the optimizer sums gradients across
replicas, so N replicas give the gradient of the mean over the global batch.

Example:
    >>> import numpy as np, keras
    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    >>> model = SharedStepModel.wrap(base)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> x = np.random.rand(32, 4).astype("float32"); y = np.eye(2)[np.arange(32) % 2]
    >>> sorted(model.fit(x, y, batch_size=8, epochs=2, verbose=0).history)
    ['accuracy', 'loss']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from effnet_tl import compat

__all__ = [
    "SharedStepModel",
    "per_example_loss",
    "replica_eval_step",
    "replica_train_step",
]

LossFn = Callable[[Any, Any], Any]


def per_example_loss(loss: str | keras.losses.Loss | LossFn) -> LossFn:
    """Return a loss function giving one value per example (no batch reduction).

    The distributed step must reduce by the *global* batch size itself, so the loss may not
    average over the local batch first.

    Args:
        loss: A Keras loss name (``"categorical_crossentropy"``), a ``keras.losses.Loss``
            instance (its settings such as ``label_smoothing`` are kept), or a plain function
            ``fn(y_true, y_pred) -> per-example losses``.

    Returns:
        ``fn(y_true, y_pred)`` returning a tensor of shape ``(batch,)``.

    Example:
        >>> import numpy as np
        >>> fn = per_example_loss("categorical_crossentropy")
        >>> fn(np.eye(2, dtype="float32"), np.full((2, 2), 0.5, "float32")).shape
        TensorShape([2])
    """
    if isinstance(loss, keras.losses.Loss):
        config = dict(loss.get_config())
        config["reduction"] = None
        return type(loss).from_config(config)
    if isinstance(loss, str):
        resolved = keras.losses.get(loss)
        if resolved is None:
            raise ValueError(f"Unknown Keras loss name. Received: loss={loss!r}")
        return per_example_loss(resolved)
    if callable(loss):
        return loss
    raise TypeError(
        "loss must be a Keras loss name, a keras.losses.Loss or a function "
        f"fn(y_true, y_pred). Received: loss={loss!r} of type {type(loss).__name__}"
    )


def _unpack(batch) -> tuple[Any, Any, Any]:
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
    raise ValueError(
        "Each batch must be (x, y) or (x, y, sample_weight). "
        f"Received a {type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}"
    )


def _local_batch_size(x) -> tf.Tensor:
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _global_batch_size(x) -> tf.Tensor:
    # Summed over replicas rather than local x replicas: the last batch of an epoch may split
    # unevenly, and then only the true total gives every example the same weight.
    local = _local_batch_size(x)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return local
    # Reduced as float32: every collective implementation (NCCL, ring, TPU) supports it.
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(local, tf.float32))
    return tf.cast(tf.round(total), tf.int32)


def _scaled_loss(model, loss_fn, y, y_pred, sample_weight, global_batch_size):
    per_example = tf.cast(loss_fn(y, y_pred), tf.float32)
    if sample_weight is not None:
        sample_weight = tf.cast(sample_weight, tf.float32)
    loss = tf.nn.compute_average_loss(
        per_example, sample_weight=sample_weight, global_batch_size=global_batch_size
    )
    if model.losses:
        # Regularisation terms are per model, not per example: divide by replicas only.
        loss += tf.nn.scale_regularization_loss(
            tf.add_n([tf.cast(term, tf.float32) for term in model.losses])
        )
    return loss


def replica_train_step(
    model: keras.Model,
    batch,
    *,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: LossFn,
    global_batch_size: int | tf.Tensor | None = None,
    metrics: Sequence[keras.metrics.Metric] = (),
) -> tf.Tensor:
    """One optimisation step on this replica's part of a batch; returns its share of the loss.

    Call it inside ``strategy.run`` (or directly, or from ``Model.train_step``). Summing the
    returned value over replicas (``strategy.reduce(SUM, ...)``) gives the global mean loss.
    A ``keras.optimizers.LossScaleOptimizer`` (mixed_float16) is handled: the loss is scaled
    before differentiation and the optimizer unscales and skips steps with non-finite
    gradients.

    Args:
        model: The model; called with ``training=True``.
        batch: ``(x, y)`` or ``(x, y, sample_weight)``.
        optimizer: The optimizer whose ``apply_gradients`` updates ``model``.
        loss_fn: Per-example loss (see :func:`per_example_loss`).
        global_batch_size: Examples in the batch across all replicas; by default the sum of
            the replicas' batch sizes.
        metrics: Metrics updated with ``(y, y_pred, sample_weight)``.

    Returns:
        Scalar float32: this replica's loss divided by the global batch size.

    Example:
        >>> import numpy as np, keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> loss = replica_train_step(model, (np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")),
        ...                           optimizer=keras.optimizers.SGD(0.1),
        ...                           loss_fn=per_example_loss("mse"))
        >>> float(loss) >= 0
        True
    """
    x, y, sample_weight = _unpack(batch)
    if global_batch_size is None:
        global_batch_size = _global_batch_size(x)
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = _scaled_loss(model, loss_fn, y, y_pred, sample_weight, global_batch_size)
        # Keras 3 optimizers expose scale_loss; it is the identity unless loss scaling is on.
        scaled = optimizer.scale_loss(loss)
    variables = model.trainable_variables
    gradients = tape.gradient(scaled, variables)
    optimizer.apply_gradients(zip(gradients, variables))
    for metric in metrics:
        metric.update_state(y, y_pred, sample_weight=sample_weight)
    return loss


def replica_eval_step(
    model: keras.Model,
    batch,
    *,
    loss_fn: LossFn,
    global_batch_size: int | tf.Tensor | None = None,
    metrics: Sequence[keras.metrics.Metric] = (),
) -> tf.Tensor:
    """Evaluation counterpart of :func:`replica_train_step` (``training=False``, no update).

    Example:
        >>> import numpy as np, keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> float(replica_eval_step(model, (np.ones((2, 3), "float32"), np.zeros((2, 1), "float32")),
        ...                         loss_fn=per_example_loss("mse"))) >= 0
        True
    """
    x, y, sample_weight = _unpack(batch)
    if global_batch_size is None:
        global_batch_size = _global_batch_size(x)
    y_pred = model(x, training=False)
    loss = _scaled_loss(model, loss_fn, y, y_pred, sample_weight, global_batch_size)
    for metric in metrics:
        metric.update_state(y, y_pred, sample_weight=sample_weight)
    return loss


@keras.saving.register_keras_serializable(package="effnet_tl")
class SharedStepModel(keras.Model):
    """A functional ``keras.Model`` whose ``fit``/``evaluate`` run the shared replica steps.

    Build it like a functional model (``SharedStepModel(inputs, outputs)``) or wrap an existing
    functional model with :meth:`wrap` (layers and weights are shared, not copied). Compile as
    usual: the compiled loss becomes a per-example loss and the compiled metrics are updated
    from the shared step, so ``model.fit`` and :func:`distributed_fit` do identical arithmetic.

    Example:
        >>> import keras, numpy as np
        >>> base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        >>> model = SharedStepModel.wrap(base)
        >>> model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
        >>> history = model.fit(np.ones((4, 3)), np.eye(2)[[0, 1, 0, 1]], epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss']
    """

    @classmethod
    def wrap(cls, model: keras.Model) -> "SharedStepModel":
        """Return a SharedStepModel over ``model``'s graph (same layers, same weights)."""
        # A single input stays a tensor, not a one-element list: Keras warns on every call
        # when the structure of what it is given differs from what it was built with.
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
        return cls(inputs=inputs, outputs=outputs, name=model.name)

    def _shared_loss_fn(self) -> LossFn:
        # Recomputed only when compile() changed the loss.
        cached = getattr(self, "_effnet_tl_loss", None)
        if cached is None or cached[0] is not self.loss:
            cached = (self.loss, per_example_loss(self.loss))
            self._effnet_tl_loss = cached
        return cached[1]

    def _finish_step(self, loss, data):
        x, _, _ = _unpack(data)
        # The step returns loss / global batch; Keras logs the mean over this replica's batch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        compat.loss_tracker(self).update_state(
            loss * replicas, sample_weight=_local_batch_size(x)
        )
        return self.get_metrics_result()

    def train_step(self, data):
        loss = replica_train_step(
            self,
            data,
            optimizer=self.optimizer,
            loss_fn=self._shared_loss_fn(),
            metrics=[_CompiledMetrics(self, _unpack(data)[0])],
        )
        return self._finish_step(loss, data)

    def test_step(self, data):
        loss = replica_eval_step(
            self,
            data,
            loss_fn=self._shared_loss_fn(),
            metrics=[_CompiledMetrics(self, _unpack(data)[0])],
        )
        return self._finish_step(loss, data)


class _CompiledMetrics:
    """Stands in the replica step's metric list for the metrics given to ``compile``.

    Its ``update_state`` calls the public ``Model.compute_metrics``, as Keras' own steps do,
    so subclasses that override ``compute_metrics`` keep working.
    """

    def __init__(self, model: keras.Model, x):
        self._model = model
        self._x = x

    def update_state(self, y, y_pred, sample_weight=None):
        self._model.compute_metrics(self._x, y, y_pred, sample_weight=sample_weight)
