"""The input block: augmentation presets, Keras-layer augmenters, MixUp/CutMix, albumentations.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from effnet_tl import augment
    >>> augment.PRESETS
    ('none', 'light', 'medium', 'heavy')
    >>> images = np.full((4, 32, 32, 3), 128.0, "float32")
    >>> labels = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    >>> train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    >>> train = augment.augment_dataset(train, "medium", seed=0)   # training split only
    >>> augment.choose_placement("gpu")   # GPU: put build_augmenter(...) in the model instead
    'model'
    >>> [augment.augmentation_off(a) for a in ("none", None, "light")]
    [True, True, False]
"""

from effnet_tl.augment.albumentations_adapter import AlbumentationsAdapter
from effnet_tl.augment.fused import RANDAUGMENT_OPS, FusedAugment, augment_batch
from effnet_tl.augment.mix import mix_batch
from effnet_tl.augment.pipeline import (
    KerasLayersAugmenter,
    augment_dataset,
    build_augmenter,
    choose_placement,
)
from effnet_tl.augment.presets import (
    DEFAULT_PRESET,
    PRESETS,
    AugmentSpec,
    augmentation_off,
    get_preset,
)
from effnet_tl.augment.preview import preview

__all__ = [
    "AlbumentationsAdapter",
    "AugmentSpec",
    "DEFAULT_PRESET",
    "FusedAugment",
    "KerasLayersAugmenter",
    "PRESETS",
    "RANDAUGMENT_OPS",
    "augment_batch",
    "augment_dataset",
    "augmentation_off",
    "build_augmenter",
    "choose_placement",
    "get_preset",
    "mix_batch",
    "preview",
]
