"""Input normalisation inside the model, so users always feed float pixels in [0, 255]."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet_tl")
class ImageNormalization(keras.layers.Layer):
    """``(pixels * scale - mean) / stddev`` per RGB channel.

    Each family's pretrained weights expect their own input statistics: V1 and V2-B use
    ImageNet mean/std on ``pixels / 255``; V2-S/M/L use ``pixels / 128 - 1``; Lite uses
    ``(pixels - 127) / 128``. With ``statistics_as_weights=True`` (V1) the mean and stddev are
    non-trainable weights with a ``count`` beside them, laid out like the ``normalization``
    layer of the official V1 weight files so they load from (and count like) those files.
    Those files store the ImageNet *standard deviation* in the slot Keras calls "variance"
    (tensorflow/tensorflow#49930); this layer divides by it directly, which reproduces
    keras.applications for both the ImageNet files and files of untrained models.

    Args:
        scale: multiplier applied to raw pixels first.
        mean: per-channel mean subtracted after scaling.
        stddev: per-channel divisor.
        statistics_as_weights: store mean/stddev as loadable weights (V1 layout).

    Example:
        >>> import numpy as np
        >>> norm = ImageNormalization(scale=1.0, mean=[127.0] * 3, stddev=[128.0] * 3)
        >>> float(norm(np.full((1, 1, 1, 3), 255.0, "float32"))[0, 0, 0, 0])
        1.0
    """

    def __init__(
        self,
        *,
        scale: float = 1.0 / 255.0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        stddev: Sequence[float] = (0.229, 0.224, 0.225),
        statistics_as_weights: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.mean_values = [float(v) for v in mean]
        self.stddev_values = [float(v) for v in stddev]
        if len(self.mean_values) != len(self.stddev_values):
            raise ValueError(f"mean={mean!r} and stddev={stddev!r} must have the same length.")
        if any(v == 0 for v in self.stddev_values):
            raise ValueError(f"stddev={stddev!r} must not contain zeros.")
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
            self.stddev = self.add_weight(
                name="stddev", shape=(channels,), trainable=False,
                initializer=const(self.stddev_values))
            # Unused in the computation; kept so the weight layout matches the V1 files.
            self.count = self.add_weight(
                name="count", shape=(), trainable=False, initializer="zeros", dtype="int64")
        else:
            self.mean = ops.convert_to_tensor(self.mean_values)
            self.stddev = ops.convert_to_tensor(self.stddev_values)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.cast(self.mean, self.compute_dtype)
        stddev = ops.cast(self.stddev, self.compute_dtype)
        return (x * self.scale - mean) / stddev

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "mean": self.mean_values,
            "stddev": self.stddev_values,
            "statistics_as_weights": self.statistics_as_weights,
        }
