"""The one place where effnet_tl touches private Keras internals.

Keras 3 has no public API for a few things effnet_tl needs, so it reads or writes private
attributes. Each use is wrapped here, once, so that a Keras release that renames or drops one
fails with a clear message naming the Keras version instead of an ``AttributeError`` deep
inside training, and so that ``tests/test_compat.py`` catches it before anything else does.

The private names, and why each is needed:

* ``Layer._flatten_layers(include_self, recursive)`` (:func:`sublayers`): the only recursive
  listing of sublayers; ``Model.layers`` stops at the top level and a custom layer (MBConv)
  has no public list at all. Used to freeze every BatchNormalization and to profile nested
  convolutions.
* ``Trainer._initial_epoch`` (:func:`resume_epoch`, :func:`clear_resume_epoch`): how
  ``BackupAndRestore`` tells ``fit`` which epoch to resume from. Keras sets it and never
  resets it, so a later ``fit`` on the same model would start from a stale epoch.
* ``BackupAndRestore._training_metadata_path`` (:func:`backup_metadata_path`): the JSON file
  holding the epoch to resume from, read before training starts.
* ``Trainer._loss_tracker`` (:func:`loss_tracker`): the ``Mean`` metric behind the ``"loss"``
  log. Keras' own ``train_step`` updates it directly; a custom step has no other handle.
* ``Trainer._symbolic_build(data_batch)`` (:func:`build_for_training`): creates the optimizer's
  and the compiled metrics' variables before ``fit`` traces its train step. Keras does this
  itself only for a model created under a non-default ``tf.distribute`` strategy; otherwise
  they are created inside the first trace, and TensorFlow then traces the whole train step a
  second time (a ``tf.function`` that created variables is retraced without creating them).

Compiled metrics need no private name: they are updated through the public
``Model.compute_metrics``.

Checked against Keras 3.14.0 and 3.15.1 (:data:`CHECKED_KERAS_VERSIONS`); pyproject.toml
bounds keras to that range. To raise the bound: install the new Keras, read the sources of
the attributes above (``keras/src/layers/layer.py``, ``keras/src/trainers/trainer.py``,
``keras/src/backend/tensorflow/trainer.py``, ``keras/src/callbacks/backup_and_restore.py``),
run ``pytest tests/test_compat.py``, then update :data:`CHECKED_KERAS_VERSIONS` and the bound.

Example:
    >>> import keras
    >>> from effnet_tl.compat import sublayers
    >>> block = keras.Sequential([keras.layers.Dense(2), keras.layers.BatchNormalization()])
    >>> model = keras.Sequential([keras.Input((3,)), block])
    >>> [type(layer).__name__ for layer in model.layers]
    ['Sequential']
    >>> leaves = [layer for layer in sublayers(model) if not isinstance(layer, keras.Model)]
    >>> sorted(type(layer).__name__ for layer in leaves)
    ['BatchNormalization', 'Dense', 'InputLayer', 'InputLayer']
"""

from __future__ import annotations

import os

import keras

__all__ = [
    "CHECKED_KERAS_VERSIONS",
    "KerasInternalsError",
    "backup_metadata_path",
    "build_for_training",
    "clear_resume_epoch",
    "loss_tracker",
    "resume_epoch",
    "sublayers",
]

CHECKED_KERAS_VERSIONS = ("3.14.0", "3.15.1")

_MISSING = object()


class KerasInternalsError(RuntimeError):
    """A private Keras attribute effnet_tl relies on is missing from the installed Keras."""


def _missing(owner: object, name: str, purpose: str) -> KerasInternalsError:
    return KerasInternalsError(
        f"{type(owner).__name__} has no {name!r} in Keras {keras.__version__}: effnet_tl uses "
        f"this private Keras attribute to {purpose} and was checked against Keras "
        f"{', '.join(CHECKED_KERAS_VERSIONS)}. Install a keras within the range effnet_tl "
        "declares (pyproject.toml), or adapt effnet_tl/compat.py to this Keras."
    )


def _private(owner: object, name: str, purpose: str):
    value = getattr(owner, name, _MISSING)
    if value is _MISSING:
        raise _missing(owner, name, purpose)
    return value


def sublayers(
    layer: keras.layers.Layer, *, include_self: bool = False, recursive: bool = True
) -> list[keras.layers.Layer]:
    """The layers inside ``layer``, each once (wraps ``Layer._flatten_layers``).

    Unlike ``Model.layers`` this descends into nested models and custom layers (an MBConv
    block's convolutions and BatchNormalizations). The order is Keras' and not meaningful;
    the ``InputLayer`` of a nested functional or sequential model is included.

    Args:
        layer: Any Keras layer or model.
        include_self: Put ``layer`` itself first.
        recursive: Descend into sublayers of sublayers; ``False`` gives direct children only.

    Returns:
        A new list of layers.

    Example:
        >>> import keras
        >>> block = keras.Sequential([keras.layers.Dense(2), keras.layers.BatchNormalization()])
        >>> model = keras.Sequential([keras.Input((3,)), block])
        >>> is_bn = lambda layer: isinstance(layer, keras.layers.BatchNormalization)
        >>> any(map(is_bn, sublayers(model))), any(map(is_bn, sublayers(model, recursive=False)))
        (True, False)
    """
    flatten = _private(layer, "_flatten_layers", "list nested sublayers")
    return list(flatten(include_self=include_self, recursive=recursive))


def resume_epoch(model: keras.Model) -> int | None:
    """The epoch ``BackupAndRestore`` told ``fit`` to resume from (reads ``_initial_epoch``).

    ``None`` until a ``BackupAndRestore`` callback found a backup in ``on_train_begin``;
    ``fit`` then starts from this epoch instead of its ``initial_epoch`` argument.

    Example:
        >>> import keras
        >>> resume_epoch(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])) is None
        True
    """
    return _private(model, "_initial_epoch", "read the epoch BackupAndRestore resumes from")


def clear_resume_epoch(model: keras.Model) -> None:
    """Forget the resume epoch ``BackupAndRestore`` left on ``model`` (``_initial_epoch``).

    Keras never resets it, so without this a later ``fit`` on the same model (the next
    training phase) would silently start from the previous phase's epoch.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> clear_resume_epoch(model); resume_epoch(model) is None
        True
    """
    _private(model, "_initial_epoch", "clear the epoch BackupAndRestore resumes from")
    model._initial_epoch = None


def backup_metadata_path(callback: keras.callbacks.BackupAndRestore) -> str:
    """The JSON file in which ``callback`` records the epoch to resume from.

    Keras writes ``{"epoch": ..., "batch": ...}`` there after each backup; it exists only once
    a backup was made. Wraps ``BackupAndRestore._training_metadata_path``.

    Example:
        >>> import keras, os
        >>> callback = keras.callbacks.BackupAndRestore(backup_dir="/tmp/backup")
        >>> os.path.dirname(backup_metadata_path(callback))
        '/tmp/backup'
    """
    if not isinstance(callback, keras.callbacks.BackupAndRestore):
        raise TypeError(
            "callback must be a keras.callbacks.BackupAndRestore. "
            f"Received: {callback!r} of type {type(callback).__name__}"
        )
    path = _private(callback, "_training_metadata_path", "read the epoch a backup resumes from")
    return os.fspath(path)


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """The ``Mean`` metric behind a compiled model's ``"loss"`` log (``_loss_tracker``).

    A custom ``train_step``/``test_step`` updates it with each batch's mean loss, as Keras'
    own steps do; ``fit``/``evaluate`` reset and report it.

    Raises:
        ValueError: If the model is not compiled (Keras creates the tracker in ``compile``).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> loss_tracker(model).name
        'loss'
    """
    tracker = _private(model, "_loss_tracker", "update the 'loss' log from a custom step")
    if tracker is None:
        raise ValueError(
            f"Model {model.name!r} has no loss tracker because it is not compiled; call "
            "model.compile(optimizer=..., loss=...) first."
        )
    return tracker


def build_for_training(model: keras.Model, element_spec) -> None:
    """Create a compiled model's optimizer and metric variables before ``fit`` traces its step.

    Without it, on the default strategy, ``fit`` traces its train step twice: Keras creates
    these variables inside the first trace and TensorFlow retraces a ``tf.function`` that
    created variables. For a backbone's top blocks that second trace cost seconds per phase.
    Wraps ``Trainer._symbolic_build``; ``element_spec`` is the training dataset's
    (``(x, y)`` or ``(x, y, sample_weight)`` specs).

    Example:
        >>> import keras, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss="mse", metrics=["mae"])
        >>> spec = (tf.TensorSpec((None, 3)), tf.TensorSpec((None, 2)))
        >>> build_for_training(model, spec); model.optimizer.built
        True
    """
    build = _private(model, "_symbolic_build", "build optimizer and metric state before tracing")
    build(data_batch=element_spec)
