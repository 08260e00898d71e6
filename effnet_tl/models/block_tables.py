"""Architecture as data: one table of stage arguments per EfficientNet family.

Each row is one stage of identical blocks before compound scaling. The builder
(:mod:`effnet_tl.models.efficientnet`) owns the cross-cutting rules: the first block of a
stage takes the stride and the width change, later repeats use stride 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StageArgs:
    """One stage of the unscaled network.

    Attributes:
        block: "mbconv" (depthwise) or "fused" (EfficientNetV2's fused conv).
        kernel_size: spatial kernel size.
        repeats: number of blocks before depth scaling.
        filters_in: input channels before width scaling.
        filters_out: output channels before width scaling.
        expand_ratio: inverted-bottleneck expansion.
        strides: stride of the stage's first block.
        se_ratio: squeeze-and-excitation ratio (0 = none).
    """

    block: Literal["mbconv", "fused"]
    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int
    se_ratio: float



# kernel, repeats, filters in, filters out, expand ratio, stride (Tan & Le 2019, Table 1).
EFFICIENTNET_V1 = tuple(
    StageArgs("mbconv", k, r, i, o, e, s, 0.25)
    for k, r, i, o, e, s in [
        (3, 1, 32, 16, 1, 1),
        (3, 2, 16, 24, 6, 2),
        (5, 2, 24, 40, 6, 2),
        (3, 3, 40, 80, 6, 2),
        (5, 3, 80, 112, 6, 1),
        (5, 4, 112, 192, 6, 2),
        (3, 1, 192, 320, 6, 1),
    ]
)

# EfficientNet-Lite: V1 without squeeze-and-excitation (quantisation- and accelerator-friendly).
EFFICIENTNET_LITE = tuple(
    StageArgs("mbconv", s.kernel_size, s.repeats, s.filters_in, s.filters_out, s.expand_ratio,
              s.strides, 0.0)
    for s in EFFICIENTNET_V1
)


def _v2(rows):
    return tuple(
        StageArgs("fused" if fused else "mbconv", 3, r, i, o, e, s, se)
        for fused, r, i, o, e, s, se in rows
    )


# EfficientNetV2 (Tan & Le, 2021), as in keras.applications: fused?, repeats, in, out, expand,
# stride, se. Kernel size is 3 throughout.
EFFICIENTNET_V2_B0 = _v2([
    (1, 1, 32, 16, 1, 1, 0.0),
    (1, 2, 16, 32, 4, 2, 0.0),
    (1, 2, 32, 48, 4, 2, 0.0),
    (0, 3, 48, 96, 4, 2, 0.25),
    (0, 5, 96, 112, 6, 1, 0.25),
    (0, 8, 112, 192, 6, 2, 0.25),
])
EFFICIENTNET_V2_S = _v2([
    (1, 2, 24, 24, 1, 1, 0.0),
    (1, 4, 24, 48, 4, 2, 0.0),
    (1, 4, 48, 64, 4, 2, 0.0),
    (0, 6, 64, 128, 4, 2, 0.25),
    (0, 9, 128, 160, 6, 1, 0.25),
    (0, 15, 160, 256, 6, 2, 0.25),
])
EFFICIENTNET_V2_M = _v2([
    (1, 3, 24, 24, 1, 1, 0.0),
    (1, 5, 24, 48, 4, 2, 0.0),
    (1, 5, 48, 80, 4, 2, 0.0),
    (0, 7, 80, 160, 4, 2, 0.25),
    (0, 14, 160, 176, 6, 1, 0.25),
    (0, 18, 176, 304, 6, 2, 0.25),
    (0, 5, 304, 512, 6, 1, 0.25),
])
EFFICIENTNET_V2_L = _v2([
    (1, 4, 32, 32, 1, 1, 0.0),
    (1, 7, 32, 64, 4, 2, 0.0),
    (1, 7, 64, 96, 4, 2, 0.0),
    (0, 10, 96, 192, 4, 2, 0.25),
    (0, 19, 192, 224, 6, 1, 0.25),
    (0, 25, 224, 384, 6, 2, 0.25),
    (0, 7, 384, 640, 6, 1, 0.25),
])
