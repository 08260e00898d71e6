"""Per-sample stochastic depth ("drop path") for residual branches."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet_tl")
class DropPath(keras.layers.Layer):
    """Drops a whole residual branch for a random subset of the batch while training.

    Each sample's branch is zeroed with probability ``drop_rate`` and the survivors are
    scaled by ``1 / (1 - drop_rate)``, so the expected output is unchanged and inference
    is the identity. This is the same rule as ``keras.applications``' ``Dropout`` with
    ``noise_shape=(None, 1, 1, 1)``.

    Args:
        drop_rate: probability in [0, 1) of dropping the branch for one sample.
        seed: optional integer seed for the layer's random stream.

    Example:
        >>> import numpy as np
        >>> layer = DropPath(drop_rate=0.5, seed=0)
        >>> x = np.ones((4, 2, 2, 3), "float32")
        >>> bool(np.all(np.asarray(layer(x, training=False)) == x))
        True
    """

    def __init__(self, *, drop_rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate!r} must be in [0, 1).")
        self.drop_rate = float(drop_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.drop_rate == 0.0:
            return inputs
        keep_rate = 1.0 - self.drop_rate
        mask_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        keep = keras.random.uniform(mask_shape, seed=self.seed_generator, dtype=inputs.dtype)
        keep = ops.floor(keep + ops.cast(keep_rate, inputs.dtype))
        return inputs * keep / ops.cast(keep_rate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "drop_rate": self.drop_rate, "seed": self.seed}
