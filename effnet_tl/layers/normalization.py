"""Input normalisation inside the model, so users always feed float pixels in [0, 255]."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet_tl")
class ImageNormalization(keras.layers.Layer):
    """``(pixels * scale - mean) / sqrt(variance)`` per RGB channel.

    Each family's pretrained weights expect their own input statistics: V1 and V2-B use
    ImageNet mean/std on ``pixels / 255``; V2-S/M/L use ``pixels / 128 - 1``; Lite uses
    ``(pixels - 127) / 128``. With ``statistics_as_weights=True`` (V1) the mean and variance
    are non-trainable weights with a ``count`` beside them, laid out (and computed) like the
    Keras ``Normalization`` layer of the official V1 weight files, so they load from and count
    like those files.

    Args:
        scale: multiplier applied to raw pixels first.
        mean: per-channel mean subtracted after scaling.
        variance: per-channel variance; the result is divided by its square root.
        statistics_as_weights: store mean/variance as loadable weights (V1 layout).

    Example:
        >>> import numpy as np
        >>> norm = ImageNormalization(scale=1.0, mean=[127.0] * 3, variance=[128.0**2] * 3)
        >>> float(norm(np.full((1, 1, 1, 3), 255.0, "float32"))[0, 0, 0, 0])
        1.0
    """

    def __init__(
        self,
        *,
        scale: float = 1.0 / 255.0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        variance: Sequence[float] = (0.229**2, 0.224**2, 0.225**2),
        statistics_as_weights: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.mean_values = [float(v) for v in mean]
        self.variance_values = [float(v) for v in variance]
        if len(self.mean_values) != len(self.variance_values):
            raise ValueError(
                f"mean={mean!r} and variance={variance!r} must have the same length.")
        if any(not v > 0 for v in self.variance_values):
            raise ValueError(f"variance={variance!r} must be positive.")
        self.statistics_as_weights = bool(statistics_as_weights)

    def build(self, input_shape):
        channels = len(self.mean_values)
        if input_shape[-1] is not None and input_shape[-1] != channels:
            raise ValueError(
                f"ImageNormalization has statistics for {channels} channels but the input has "
                f"{input_shape[-1]} (input shape {tuple(input_shape)})."
            )
        if self.statistics_as_weights:
            const = keras.initializers.Constant
            self.mean = self.add_weight(
                name="mean", shape=(channels,), trainable=False,
                initializer=const(self.mean_values))
            self.variance = self.add_weight(
                name="variance", shape=(channels,), trainable=False,
                initializer=const(self.variance_values))
            # Unused in the computation; kept so the weight layout matches the V1 files.
            self.count = self.add_weight(
                name="count", shape=(), trainable=False, initializer="zeros", dtype="int64")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.statistics_as_weights:
            mean, variance = self.mean, self.variance
        else:
            # Constants made here, inside the traced graph: tensors made eagerly in build()
            # are captured as graph inputs, which ONNX export (tf2onnx) turns into extra
            # required model inputs.
            mean, variance = self.mean_values, self.variance_values
        mean = ops.cast(ops.convert_to_tensor(mean), self.compute_dtype)
        # As keras.layers.Normalization: never divide by less than epsilon.
        stddev = ops.maximum(ops.sqrt(ops.cast(ops.convert_to_tensor(variance),
                                               self.compute_dtype)),
                             keras.backend.epsilon())
        return (x * self.scale - mean) / stddev

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "mean": self.mean_values,
            "variance": self.variance_values,
            "statistics_as_weights": self.statistics_as_weights,
        }
