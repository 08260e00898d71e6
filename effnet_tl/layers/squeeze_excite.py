"""Squeeze-and-excitation: channel attention from globally pooled features."""

from __future__ import annotations

import keras
from keras import ops

from effnet_tl.layers.initializers import CONV_KERNEL_INITIALIZER


@keras.saving.register_keras_serializable(package="effnet_tl")
class SqueezeExcite(keras.layers.Layer):
    """Rescales channels by gates computed from their spatial average.

    ``x * sigmoid(W2 · act(W1 · mean_hw(x)))``, with ``W1`` reducing to ``se_filters`` and
    ``W2`` expanding back to ``filters``; both are 1×1 convolutions with bias, named
    ``se_reduce`` and ``se_expand`` as in the official Keras weight files.

    Args:
        filters: channels of the input (and output).
        se_filters: width of the bottleneck.
        activation: activation of the reduce step.

    Example:
        >>> import numpy as np
        >>> se = SqueezeExcite(filters=8, se_filters=2)
        >>> tuple(se(np.ones((1, 4, 4, 8), "float32")).shape)
        (1, 4, 4, 8)
    """

    def __init__(self, *, filters: int, se_filters: int, activation: str = "swish", **kwargs):
        super().__init__(**kwargs)
        if filters < 1 or se_filters < 1:
            raise ValueError(
                f"filters={filters!r} and se_filters={se_filters!r} must both be >= 1."
            )
        self.filters = int(filters)
        self.se_filters = int(se_filters)
        self.activation = activation
        self.reduce = keras.layers.Conv2D(
            self.se_filters, 1, activation=activation,
            kernel_initializer=CONV_KERNEL_INITIALIZER, name="se_reduce",
        )
        self.expand = keras.layers.Conv2D(
            self.filters, 1, activation="sigmoid",
            kernel_initializer=CONV_KERNEL_INITIALIZER, name="se_expand",
        )

    def build(self, input_shape):
        pooled_shape = (input_shape[0], 1, 1, input_shape[-1])
        self.reduce.build(pooled_shape)
        self.expand.build(pooled_shape[:-1] + (self.se_filters,))

    def call(self, inputs):
        gates = self.expand(self.reduce(ops.mean(inputs, axis=(1, 2), keepdims=True)))
        return inputs * gates

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "se_filters": self.se_filters,
            "activation": self.activation,
        }
