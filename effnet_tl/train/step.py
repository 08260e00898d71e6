"""The one training step and eval step, shared by ``model.fit`` and a custom distributed loop.

Why a custom loop at all: with TF 2.21 + Keras 3, ``MultiWorkerMirroredStrategy`` fails inside
``model.fit`` ("Attempt to convert a value (PerReplica ...) to a Tensor"), while
``strategy.experimental_distribute_dataset`` + ``strategy.run`` + ``optimizer.apply_gradients``
works (GUIDE §4). So the arithmetic of a step lives here, once:

* :func:`replica_train_step` / :func:`replica_eval_step` run on one replica's slice of a batch.
* :class:`SharedStepModel` is a ``keras.Model`` whose ``train_step``/``test_step`` call them, so
  ``model.fit`` runs the very same code.
* :func:`distributed_fit` / :func:`distributed_evaluate` drive them with ``strategy.run`` and
  accept ordinary Keras callbacks (BackupAndRestore, CSV history, StopOnNonFinite, ...).

Loss scaling matches Keras: each replica divides the sum of its per-example losses by the
*global* batch size (``tf.nn.compute_average_loss``) and the optimizer sums gradients across
replicas, so N replicas give the gradient of the mean over the global batch.

Example:
    >>> import numpy as np, keras, tensorflow as tf
    >>> from effnet_tl.train.step import distributed_fit
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> x = np.random.rand(32, 4).astype("float32"); y = np.eye(2)[np.arange(32) % 2]
    >>> dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    >>> history = distributed_fit(model, strategy=tf.distribute.get_strategy(),
    ...                           train_dataset=dataset, epochs=2, metrics=["accuracy"], verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "SharedStepModel",
    "distributed_evaluate",
    "distributed_fit",
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
        return cls(inputs=model.inputs, outputs=model.outputs, name=model.name)

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
        self._loss_tracker.update_state(
            loss * replicas, sample_weight=_local_batch_size(x)
        )
        return self.get_metrics_result()

    def _metrics_to_update(self):
        return [self._compile_metrics] if self._compile_metrics is not None else []

    def train_step(self, data):
        loss = replica_train_step(
            self,
            data,
            optimizer=self.optimizer,
            loss_fn=self._shared_loss_fn(),
            metrics=self._metrics_to_update(),
        )
        return self._finish_step(loss, data)

    def test_step(self, data):
        loss = replica_eval_step(
            self, data, loss_fn=self._shared_loss_fn(), metrics=self._metrics_to_update()
        )
        return self._finish_step(loss, data)


class _DistributedRunner:
    """Compiled per-step functions plus the metric objects they update (built in scope)."""

    def __init__(self, model, *, strategy, loss_fn, metrics, optimizer=None):
        self.model = model
        self.strategy = strategy
        self.loss_fn = loss_fn
        with strategy.scope():
            self.metrics = [_resolve_metric(metric) for metric in metrics]
            # Variables may not be created inside strategy.run, so build the slots here.
            if optimizer is not None and not optimizer.built:
                optimizer.build(model.trainable_variables)
        self.optimizer = optimizer
        self._train_fn = None
        self._eval_fn = None

    def _replica_train(self, batch):
        loss = replica_train_step(
            self.model, batch, optimizer=self.optimizer, loss_fn=self.loss_fn,
            metrics=self.metrics,
        )
        return loss, _local_batch_size(_unpack(batch)[0])

    def _replica_eval(self, batch):
        loss = replica_eval_step(
            self.model, batch, loss_fn=self.loss_fn, metrics=self.metrics
        )
        return loss, _local_batch_size(_unpack(batch)[0])

    def _distributed(self, replica_fn):
        strategy = self.strategy

        @tf.function(reduce_retracing=True)
        def step(batch):
            loss, count = strategy.run(replica_fn, args=(batch,))
            # Each replica returned its share of the global mean: their SUM is the global mean.
            return (
                strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None),
            )

        return step

    def train(self, batch):
        if self._train_fn is None:
            self._train_fn = self._distributed(self._replica_train)
        return self._train_fn(batch)

    def evaluate(self, batch):
        if self._eval_fn is None:
            self._eval_fn = self._distributed(self._replica_eval)
        return self._eval_fn(batch)

    def reset_metrics(self):
        for metric in self.metrics:
            metric.reset_state()

    def logs(self, loss_total, example_total, prefix=""):
        logs = {f"{prefix}loss": loss_total / max(example_total, 1)}
        for metric in self.metrics:
            logs[f"{prefix}{metric.name}"] = float(keras.ops.convert_to_numpy(metric.result()))
        return logs


def _resolve_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        # A fresh copy: metric variables must belong to the strategy that updates them.
        return type(metric).from_config(metric.get_config())
    if metric in ("accuracy", "acc"):
        # effnet_tl's target block is one-hot (categorical crossentropy).
        return keras.metrics.CategoricalAccuracy(name="accuracy")
    if isinstance(metric, str):
        return keras.metrics.get(metric)
    raise TypeError(
        f"metrics entries must be names or keras.metrics.Metric objects. Received: {metric!r}"
    )


def _iterate(distributed_dataset, steps):
    iterator = iter(distributed_dataset)
    step = 0
    while steps is None or step < steps:
        try:
            batch = next(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            if steps is not None:
                raise ValueError(
                    f"The dataset ran out after {step} batches but steps={steps} were asked "
                    "for; repeat the dataset (dataset.repeat()) or lower the step count."
                ) from None
            return
        yield step, batch
        step += 1


def distributed_fit(
    model: keras.Model,
    *,
    strategy: tf.distribute.Strategy,
    train_dataset: tf.data.Dataset,
    epochs: int,
    validation_dataset: tf.data.Dataset | None = None,
    metrics: Sequence[str | keras.metrics.Metric] = (),
    loss: str | keras.losses.Loss | LossFn | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    verbose: int = 1,
) -> keras.callbacks.History:
    """Train ``model`` with a custom ``strategy.run`` loop; a ``model.fit`` for any strategy.

    Works with ``MultiWorkerMirroredStrategy``, where ``model.fit`` fails with TF 2.21 +
    Keras 3. Create and compile the model inside ``strategy.scope()``: the optimizer and loss
    come from ``model.compile`` (``loss`` overrides the latter). Keras callbacks work as in
    ``fit``: ``model.stop_training`` stops, and ``BackupAndRestore`` resumes at its epoch.
    With several workers give every worker the same ``steps_per_epoch`` (and a repeated
    dataset) so that all of them run the same number of collective steps.

    Args:
        model: A built, compiled Keras model (created under ``strategy.scope()``).
        strategy: The ``tf.distribute`` strategy the model was created under.
        train_dataset: Batches of ``(x, y)`` or ``(x, y, sample_weight)``, batched with the
            *global* batch size; the strategy splits each batch across replicas.
        epochs: Index of the last epoch + 1, as in ``model.fit``.
        validation_dataset: Evaluated after each epoch; logs get a ``val_`` prefix.
        metrics: Metric names or objects; ``"accuracy"`` means categorical accuracy.
        loss: Per-example loss override; defaults to the compiled loss.
        callbacks: Keras callbacks.
        initial_epoch: Epoch to start from (``BackupAndRestore`` may move it forward).
        steps_per_epoch: Batches per epoch; ``None`` runs until the dataset is exhausted.
        validation_steps: Batches per validation; ``None`` runs the whole dataset.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.

    Returns:
        The ``keras.callbacks.History`` (also set as ``model.history``).
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"Model {model.name!r} is not compiled: call model.compile(optimizer=..., "
            "loss=...) inside strategy.scope() before distributed_fit."
        )
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be an integer >= 0. Received: epochs={epochs!r}")
    loss_fn = per_example_loss(loss if loss is not None else model.loss)
    runner = _DistributedRunner(
        model, strategy=strategy, loss_fn=loss_fn, metrics=metrics, optimizer=model.optimizer
    )
    eval_runner = None
    if validation_dataset is not None:
        eval_runner = _DistributedRunner(model, strategy=strategy, loss_fn=loss_fn, metrics=metrics)
        distributed_validation = strategy.experimental_distribute_dataset(validation_dataset)
    distributed_train = strategy.experimental_distribute_dataset(train_dataset)

    callback_list = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    # BackupAndRestore announces the epoch to resume from through this (private) attribute,
    # exactly as Keras' own fit reads it.
    start_epoch = getattr(model, "_initial_epoch", None) or initial_epoch
    logs: dict = {}
    for epoch in range(start_epoch, epochs):
        runner.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        loss_sum, example_count = 0.0, 0
        for step, batch in _iterate(distributed_train, steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            step_loss, step_count = runner.train(batch)
            step_count = int(step_count)
            loss_sum += float(step_loss) * step_count
            example_count += step_count
            logs = runner.logs(loss_sum, example_count)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        if eval_runner is not None:
            epoch_logs.update(
                _evaluate_with(eval_runner, distributed_validation, validation_steps, prefix="val_")
            )
        callback_list.on_epoch_end(epoch, epoch_logs)
        logs = epoch_logs
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history


def _evaluate_with(runner, distributed_dataset, steps, prefix=""):
    runner.reset_metrics()
    loss_sum, example_count = 0.0, 0
    for _, batch in _iterate(distributed_dataset, steps):
        step_loss, step_count = runner.evaluate(batch)
        step_count = int(step_count)
        loss_sum += float(step_loss) * step_count
        example_count += step_count
    return runner.logs(loss_sum, example_count, prefix=prefix)


def distributed_evaluate(
    model: keras.Model,
    *,
    strategy: tf.distribute.Strategy,
    dataset: tf.data.Dataset,
    metrics: Sequence[str | keras.metrics.Metric] = (),
    loss: str | keras.losses.Loss | LossFn | None = None,
    steps: int | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` with the shared eval step under ``strategy``.

    Returns:
        ``{"loss": ..., <metric name>: ...}`` as Python floats.

    Example:
        >>> import numpy as np, keras, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
        >>> model.compile(optimizer="sgd", loss="categorical_crossentropy")
        >>> data = tf.data.Dataset.from_tensor_slices((np.ones((4, 2)), np.eye(2)[[0, 1, 0, 1]])).batch(2)
        >>> sorted(distributed_evaluate(model, strategy=tf.distribute.get_strategy(),
        ...                             dataset=data, metrics=["accuracy"]))
        ['accuracy', 'loss']
    """
    if loss is None:
        if getattr(model, "loss", None) is None:
            raise ValueError(
                f"Model {model.name!r} has no compiled loss; pass loss=... to distributed_evaluate."
            )
        loss = model.loss
    runner = _DistributedRunner(
        model, strategy=strategy, loss_fn=per_example_loss(loss), metrics=metrics
    )
    return _evaluate_with(runner, strategy.experimental_distribute_dataset(dataset), steps)
