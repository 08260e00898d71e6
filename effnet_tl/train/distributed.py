"""A custom training loop over ``tf.distribute``, running the steps ``model.fit`` runs.

Why a custom loop at all: with TF 2.21 + Keras 3, ``MultiWorkerMirroredStrategy`` fails inside
``model.fit`` ("Attempt to convert a value (PerReplica ...) to a Tensor"), while
``strategy.experimental_distribute_dataset`` + ``strategy.run`` + ``optimizer.apply_gradients``
works (GUIDE §4). :func:`distributed_fit` / :func:`distributed_evaluate` drive the replica
steps of :mod:`effnet_tl.train.step` with ``strategy.run`` and accept ordinary Keras
callbacks (BackupAndRestore, CSV history, StopOnNonFinite, ...).

Example:
    >>> import numpy as np, keras, tensorflow as tf
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

from collections.abc import Sequence

import keras
import tensorflow as tf

from effnet_tl import compat
from effnet_tl.train.cluster import any_worker
from effnet_tl.train.step import (
    LossFn,
    _local_batch_size,
    _unpack,
    per_example_loss,
    replica_eval_step,
    replica_train_step,
)

__all__ = ["distributed_evaluate", "distributed_fit"]


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

    def _distributed(self, replica_fn, element_spec):
        strategy = self.strategy

        # One trace for every batch, the last partial one included: a signature with the
        # dataset's own (unknown) batch dimension, as tf.distribute's custom-loop guide does.
        @tf.function(input_signature=[element_spec])
        def step(batch):
            loss, count = strategy.run(replica_fn, args=(batch,))
            # Each replica returned its share of the global mean: their SUM is the global mean.
            return (
                strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None),
            )

        return step

    def train(self, batch, element_spec):
        if self._train_fn is None:
            self._train_fn = self._distributed(self._replica_train, element_spec)
        return self._train_fn(batch)

    def evaluate(self, batch, element_spec):
        if self._eval_fn is None:
            self._eval_fn = self._distributed(self._replica_eval, element_spec)
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
    class_weight: dict[int, float] | None = None,
    per_worker_datasets: bool = False,
    verbose: int = 1,
) -> keras.callbacks.History:
    """Train ``model`` with a custom ``strategy.run`` loop; a ``model.fit`` for any strategy.

    Works with ``MultiWorkerMirroredStrategy``, where ``model.fit`` fails with TF 2.21 +
    Keras 3. Create and compile the model inside ``strategy.scope()``: the optimizer and loss
    come from ``model.compile`` (``loss`` overrides the latter). Keras callbacks work as in
    ``fit``: ``model.stop_training`` stops, and ``BackupAndRestore`` resumes at its epoch.
    With several workers give every worker the same ``steps_per_epoch`` (and a repeated
    dataset) so that all of them run the same number of collective steps; a stop asked for
    by any worker's callbacks at the end of an epoch stops every worker.

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
        class_weight: ``{class index: weight}``, applied as per-example weights (one-hot
            labels), as ``model.fit`` does.
        per_worker_datasets: The datasets are this worker's own shard in *per-replica*
            batches (each worker reads only its files), not global batches for the strategy
            to split.
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
    if class_weight:
        num_classes = int(train_dataset.element_spec[1].shape[-1])
        train_dataset = train_dataset.map(_class_weighting(class_weight, num_classes))

    def distribute(dataset):
        if per_worker_datasets:
            return strategy.distribute_datasets_from_function(lambda _context: dataset)
        return strategy.experimental_distribute_dataset(dataset)

    eval_runner = None
    if validation_dataset is not None:
        eval_runner = _DistributedRunner(model, strategy=strategy, loss_fn=loss_fn, metrics=metrics)
        distributed_validation = distribute(validation_dataset)
    distributed_train = distribute(train_dataset)

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
    # BackupAndRestore announces the epoch to resume from on the model, as Keras' fit reads it.
    start_epoch = compat.resume_epoch(model) or initial_epoch
    logs: dict = {}
    for epoch in range(start_epoch, epochs):
        runner.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        loss_sum, example_count = 0.0, 0
        for step, batch in _iterate(distributed_train, steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            step_loss, step_count = runner.train(batch, distributed_train.element_spec)
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
        # Stopping is a decision of all workers: one that stops alone leaves the others
        # waiting in their next collective step.
        model.stop_training = any_worker(strategy, model.stop_training)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history


def _class_weighting(class_weight: dict, num_classes: int):
    weights = {int(k): float(v) for k, v in class_weight.items()}
    table = tf.constant([weights.get(i, 1.0) for i in range(num_classes)], tf.float32)

    def weigh(x, y, *sample_weight):
        weights = tf.gather(table, tf.argmax(y, axis=-1))
        return x, y, weights * sample_weight[0] if sample_weight else weights

    return weigh


def _evaluate_with(runner, distributed_dataset, steps, prefix=""):
    runner.reset_metrics()
    loss_sum, example_count = 0.0, 0
    for _, batch in _iterate(distributed_dataset, steps):
        step_loss, step_count = runner.evaluate(batch, distributed_dataset.element_spec)
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
