"""effnet_tl's own EfficientNet building blocks (Keras layers, serializable with safe_mode)."""

from effnet_tl.layers.drop_path import DropPath
from effnet_tl.layers.fused_mbconv import FusedMBConv
from effnet_tl.layers.mbconv import MBConv
from effnet_tl.layers.normalization import ImageNormalization
from effnet_tl.layers.squeeze_excite import SqueezeExcite

__all__ = ["DropPath", "FusedMBConv", "ImageNormalization", "MBConv", "SqueezeExcite"]
