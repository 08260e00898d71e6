"""MBConv: the inverted-residual block of EfficientNet (and MobileNetV2/V3)."""

from __future__ import annotations

import keras

from effnet_tl.layers.drop_path import DropPath
from effnet_tl.layers.initializers import CONV_KERNEL_INITIALIZER
from effnet_tl.layers.squeeze_excite import SqueezeExcite


def _validate_block_arguments(layer_name, *, filters_in, filters_out, kernel_size, strides,
                              expand_ratio, se_ratio):
    problems = []
    if filters_in < 1 or filters_out < 1:
        problems.append(f"filters_in={filters_in!r}, filters_out={filters_out!r} must be >= 1")
    if kernel_size < 1 or kernel_size % 2 == 0:
        problems.append(f"kernel_size={kernel_size!r} must be a positive odd integer")
    if strides not in (1, 2):
        problems.append(f"strides={strides!r} must be 1 or 2")
    if expand_ratio < 1:
        problems.append(f"expand_ratio={expand_ratio!r} must be >= 1")
    if not 0.0 <= se_ratio <= 1.0:
        problems.append(f"se_ratio={se_ratio!r} must be in [0, 1]")
    if problems:
        raise ValueError(f"{layer_name}: " + "; ".join(problems) + ".")


class _InvertedResidualBase(keras.layers.Layer):
    """Arguments, residual rule and config shared by MBConv and FusedMBConv."""

    def __init__(
        self,
        *,
        filters_in: int,
        filters_out: int,
        kernel_size: int = 3,
        strides: int = 1,
        expand_ratio: int = 1,
        se_ratio: float = 0.0,
        activation: str = "swish",
        drop_path_rate: float = 0.0,
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate_block_arguments(
            type(self).__name__, filters_in=filters_in, filters_out=filters_out,
            kernel_size=kernel_size, strides=strides, expand_ratio=expand_ratio,
            se_ratio=se_ratio,
        )
        self.filters_in = int(filters_in)
        self.filters_out = int(filters_out)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.expand_ratio = int(expand_ratio)
        self.se_ratio = float(se_ratio)
        self.activation = activation
        self.drop_path_rate = float(drop_path_rate)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.expanded_filters = self.filters_in * self.expand_ratio
        # The residual needs matching shapes; drop path only ever touches that branch.
        self.has_residual = self.strides == 1 and self.filters_in == self.filters_out
        self.act = keras.activations.get(activation)

        if 0.0 < self.se_ratio:
            # Squeeze width follows the block's *input* width, as in the paper's code.
            self.se = SqueezeExcite(
                filters=self.expanded_filters,
                se_filters=max(1, int(self.filters_in * self.se_ratio)),
                activation=activation, name="se",
            )
        else:
            self.se = None
        self.drop = (
            DropPath(drop_rate=self.drop_path_rate, name="drop")
            if self.has_residual and self.drop_path_rate > 0 else None
        )

    def _conv(self, filters, kernel_size, strides, name):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=False,
            kernel_initializer=CONV_KERNEL_INITIALIZER, name=name,
        )

    def _bn(self, name):
        return keras.layers.BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=name
        )

    def _finish(self, inputs, x, training):
        if self.has_residual:
            if self.drop is not None:
                x = self.drop(x, training=training)
            x = x + inputs
        return x

    def compute_output_shape(self, input_shape):
        def shrink(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], shrink(input_shape[1]), shrink(input_shape[2]), self.filters_out)

    def get_config(self):
        return {
            **super().get_config(),
            "filters_in": self.filters_in,
            "filters_out": self.filters_out,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "expand_ratio": self.expand_ratio,
            "se_ratio": self.se_ratio,
            "activation": self.activation,
            "drop_path_rate": self.drop_path_rate,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
        }


@keras.saving.register_keras_serializable(package="effnet_tl")
class MBConv(_InvertedResidualBase):
    """Mobile inverted bottleneck: 1×1 expand → k×k depthwise → SE → 1×1 linear projection.

    The projection has no activation (the "linear bottleneck"); a residual connection with
    per-sample drop path joins input and output when ``strides == 1`` and
    ``filters_in == filters_out``. Padding is TensorFlow's ``"same"``, which for stride 2 pads
    the bottom/right first, exactly what the official weights were trained with.

    Sublayers carry the suffixes of the official Keras layer names (``expand_conv``,
    ``expand_bn``, ``dwconv``, ``bn``, ``se/se_reduce``, ``se/se_expand``, ``project_conv``,
    ``project_bn``), which is what lets :mod:`effnet_tl.models.weights` map the published
    weight files onto this layer.

    Args:
        filters_in: input channels.
        filters_out: output channels.
        kernel_size: depthwise kernel size (odd).
        strides: depthwise stride, 1 or 2.
        expand_ratio: expansion factor of the first 1×1 convolution (1 skips it).
        se_ratio: squeeze width as a fraction of ``filters_in``; 0 disables SE.
        activation: activation after expand and depthwise steps ("swish", "relu6", ...).
        drop_path_rate: probability of dropping the residual branch per sample in training.
        bn_momentum: BatchNormalization momentum (0.99 in V1, 0.9 in V2).
        bn_epsilon: BatchNormalization epsilon.

    Example:
        >>> import numpy as np
        >>> block = MBConv(filters_in=16, filters_out=24, expand_ratio=6, strides=2, se_ratio=0.25)
        >>> tuple(block(np.zeros((2, 32, 32, 16), "float32")).shape)
        (2, 16, 16, 24)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.expand_conv = (
            self._conv(self.expanded_filters, 1, 1, "expand_conv")
            if self.expand_ratio != 1 else None
        )
        self.expand_bn = self._bn("expand_bn") if self.expand_ratio != 1 else None
        self.dwconv = keras.layers.DepthwiseConv2D(
            self.kernel_size, strides=self.strides, padding="same", use_bias=False,
            depthwise_initializer=CONV_KERNEL_INITIALIZER, name="dwconv",
        )
        self.bn = self._bn("bn")
        self.project_conv = self._conv(self.filters_out, 1, 1, "project_conv")
        self.project_bn = self._bn("project_bn")

    def build(self, input_shape):
        batch, height, width, _ = input_shape
        expanded = (batch, height, width, self.expanded_filters)
        if self.expand_conv is not None:
            self.expand_conv.build(input_shape)
            self.expand_bn.build(expanded)
        self.dwconv.build(expanded)
        reduced = self.compute_output_shape(input_shape)[:3] + (self.expanded_filters,)
        self.bn.build(reduced)
        if self.se is not None:
            self.se.build(reduced)
        self.project_conv.build(reduced)
        self.project_bn.build(reduced[:3] + (self.filters_out,))

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = self.act(self.expand_bn(self.expand_conv(x), training=training))
        x = self.act(self.bn(self.dwconv(x), training=training))
        if self.se is not None:
            x = self.se(x)
        x = self.project_bn(self.project_conv(x), training=training)
        return self._finish(inputs, x, training)
