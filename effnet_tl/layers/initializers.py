"""Initialisers of the reference implementation (Tan & Le; keras.applications)."""

import keras

# He-normal on fan-out for convolutions, as in the official EfficientNet code.
CONV_KERNEL_INITIALIZER = keras.initializers.VarianceScaling(
    scale=2.0, mode="fan_out", distribution="truncated_normal"
)
# Uniform(-1/sqrt(fan_out), 1/sqrt(fan_out)) for the classifier.
DENSE_KERNEL_INITIALIZER = keras.initializers.VarianceScaling(
    scale=1.0 / 3.0, mode="fan_out", distribution="uniform"
)
