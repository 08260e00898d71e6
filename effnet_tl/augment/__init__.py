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

from effnet_tl.lazy import export_lazily

# Names load on first use (PEP 562): the presets are plain dataclasses, which the command line
# reads without importing TensorFlow; the augmenters import it.
_EXPORTS = {
    "AlbumentationsAdapter": "albumentations_adapter",
    "AugmentSpec": "presets",
    "DEFAULT_PRESET": "presets",
    "FusedAugment": "fused",
    "KerasLayersAugmenter": "pipeline",
    "PRESETS": "presets",
    "RANDAUGMENT_OPS": "fused",
    "augment_batch": "fused",
    "augment_dataset": "pipeline",
    "augmentation_off": "presets",
    "build_augmenter": "pipeline",
    "choose_placement": "pipeline",
    "get_preset": "presets",
    "mix_batch": "mix",
    "preview": "preview",
}

export_lazily(__name__, _EXPORTS)
