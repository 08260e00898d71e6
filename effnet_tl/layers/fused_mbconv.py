"""FusedMBConv: EfficientNetV2's block that fuses expand and depthwise into one k×k conv."""

from __future__ import annotations

import keras

from effnet_tl.layers.mbconv import _InvertedResidualBase


@keras.saving.register_keras_serializable(package="effnet_tl")
class FusedMBConv(_InvertedResidualBase):
    """k×k expand convolution (with stride) → optional SE → 1×1 linear projection.

    With ``expand_ratio == 1`` the block is a single k×k convolution + BN + activation, as in
    EfficientNetV2's first stage. Residual and drop path follow the same rule as
    :class:`~effnet_tl.layers.MBConv`. Sublayer names match the official Keras V2 files
    (``expand_conv``, ``expand_bn``, ``se``, ``project_conv``, ``project_bn``).

    Args:
        See :class:`~effnet_tl.layers.MBConv`; V2 uses ``bn_momentum=0.9``.

    Example:
        >>> import numpy as np
        >>> block = FusedMBConv(filters_in=24, filters_out=48, expand_ratio=4, strides=2)
        >>> tuple(block(np.zeros((1, 32, 32, 24), "float32")).shape)
        (1, 16, 16, 48)
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("bn_momentum", 0.9)
        super().__init__(**kwargs)
        fused = self.expand_ratio != 1
        self.expand_conv = (
            self._conv(self.expanded_filters, self.kernel_size, self.strides, "expand_conv")
            if fused else None
        )
        self.expand_bn = self._bn("expand_bn") if fused else None
        self.project_conv = self._conv(
            self.filters_out,
            1 if fused else self.kernel_size,
            1 if fused else self.strides,
            "project_conv",
        )
        self.project_bn = self._bn("project_bn")

    def build(self, input_shape):
        reduced = self.compute_output_shape(input_shape)
        if self.expand_conv is not None:
            self.expand_conv.build(input_shape)
            expanded = reduced[:3] + (self.expanded_filters,)
            self.expand_bn.build(expanded)
            if self.se is not None:
                self.se.build(expanded)
            self.project_conv.build(expanded)
        else:
            if self.se is not None:
                self.se.build(input_shape)
            self.project_conv.build(input_shape)
        self.project_bn.build(reduced)

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = self.act(self.expand_bn(self.expand_conv(x), training=training))
        if self.se is not None:
            x = self.se(x)
        x = self.project_bn(self.project_conv(x), training=training)
        if self.expand_conv is None:
            # Without an expansion the single conv is the block: it keeps its activation.
            x = self.act(x)
        return self._finish(inputs, x, training)
