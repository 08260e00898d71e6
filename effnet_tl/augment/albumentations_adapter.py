"""Run a user's ``albumentations.Compose`` in tf.data: right shapes and dtypes, seeded per element.

albumentations is NumPy code: it runs through ``tf.numpy_function``, holds the GIL (so it
scales poorly past a few cores) and is NOT part of any SavedModel or ``.keras`` export. Use the
presets (Keras layers, in-graph) when the augmentation must travel with the model or run on an
accelerator.
"""

from __future__ import annotations

import copy
import threading
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

# albumentations transforms that rescale pixels out of [0, 255] or change the layout; Keras
# EfficientNet normalises inside the model, so these would silently ruin training (GUIDE §4).
_REJECTED_TRANSFORMS = {"Normalize", "ToFloat", "ToTensorV2", "FromFloat"}

_warned_not_exported = False


def is_albumentations(obj: Any) -> bool:
    """True for an albumentations transform or Compose (without importing albumentations)."""
    return any(cls.__module__.startswith("albumentations") for cls in type(obj).__mro__)


def _walk(transform: Any):
    yield transform
    for child in getattr(transform, "transforms", []) or []:
        yield from _walk(child)


def _warn_not_exported() -> None:
    global _warned_not_exported
    if not _warned_not_exported:
        _warned_not_exported = True
        warnings.warn(
            "albumentations transforms run in tf.data through tf.numpy_function: they hold the "
            "Python GIL and are NOT part of the exported SavedModel / .keras model (which is what "
            "you want for inference). Use an effnet_tl preset or Keras layers for in-graph "
            "augmentation.",
            UserWarning,
            stacklevel=3,
        )


class AlbumentationsAdapter:
    """Apply an ``albumentations`` transform to tf.data images, reproducibly per element.

    Images enter as float32 (or uint8) pixels in [0, 255], are rounded to uint8 (what
    albumentations' pixel transforms assume), transformed, and leave as float32 in [0, 255].
    Every image gets its own seed derived from ``(seed, element index, index in batch)``, and each
    worker thread uses its own copy of the Compose, so results are identical whatever
    ``num_parallel_calls`` and thread scheduling do.

    Args:
        compose: An ``A.Compose([...])`` (or a single albumentations transform). Must not contain
            Normalize / ToFloat / ToTensorV2: EfficientNet normalises inside the model.
        seed: Base integer seed.

    Example:
        >>> import albumentations as A, numpy as np, tensorflow as tf
        >>> adapter = AlbumentationsAdapter(A.Compose([A.HorizontalFlip(p=1.0)]), seed=0)
        >>> ds = tf.data.Dataset.from_tensor_slices(np.zeros((4, 16, 16, 3), "float32")).batch(2)
        >>> adapter.apply_to_dataset(ds).element_spec.shape.as_list()
        [None, 16, 16, 3]
    """

    def __init__(self, compose: Any, seed: int | None = 0) -> None:
        if not is_albumentations(compose) or not callable(compose):
            raise TypeError(
                "AlbumentationsAdapter needs an albumentations transform such as "
                f"A.Compose([...]); got {type(compose).__name__}: {compose!r}"
            )
        rejected = sorted({type(t).__name__ for t in _walk(compose)} & _REJECTED_TRANSFORMS)
        if rejected:
            raise ValueError(
                f"remove {rejected} from the albumentations pipeline: effnet_tl feeds pixels in "
                "[0, 255] and the EfficientNet model rescales and normalises them itself"
            )
        self.compose = compose
        self.seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        self._local = threading.local()

    def _thread_compose(self) -> Any:
        # albumentations keeps its RNG on the transform objects: share one across threads and
        # two elements race on it. One deep copy per tf.data worker thread avoids that.
        compose = getattr(self._local, "compose", None)
        if compose is None:
            compose = copy.deepcopy(self.compose)
            self._local.compose = compose
        return compose

    def element_seed(self, element_index: int, position: int = 0) -> int:
        """The albumentations seed of image ``position`` of dataset element ``element_index``."""
        state = np.random.SeedSequence([self.seed, int(element_index), int(position)])
        return int(state.generate_state(1)[0] % (2**31))

    def apply_numpy(self, image: np.ndarray, seed: int) -> np.ndarray:
        """Transform one HxWx3 image with ``seed``; returns float32 in [0, 255]."""
        compose = self._thread_compose()
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        _seed_transform(compose, seed)
        out = compose(image=image)["image"]
        out = np.asarray(out)
        if out.ndim == 2:
            out = out[:, :, None]
        if out.dtype != np.uint8:
            # A float result from a uint8 input is still on the 0..255 scale; keep it there.
            out = np.clip(out, 0, 255)
        return out.astype(np.float32)

    def _apply_batch(self, images: np.ndarray, element_index: np.ndarray) -> np.ndarray:
        outputs = [self.apply_numpy(image, self.element_seed(element_index, position))
                   for position, image in enumerate(images)]
        return np.stack(outputs).astype(np.float32)

    def _apply_single(self, image: np.ndarray, element_index: np.ndarray) -> np.ndarray:
        return self.apply_numpy(image, self.element_seed(element_index, 0))

    def output_shape(self, image_shape: tf.TensorShape) -> tf.TensorShape:
        """Static shape of one transformed image, probed once on a blank image when known."""
        image_shape = tf.TensorShape(image_shape)
        if not image_shape.is_fully_defined():
            return tf.TensorShape([None, None, image_shape[-1]])
        probe = copy.deepcopy(self.compose)
        _seed_transform(probe, 0)
        out = np.asarray(probe(image=np.zeros(image_shape.as_list(), np.uint8))["image"])
        if out.ndim == 2:
            out = out[:, :, None]
        # Random-size transforms (e.g. RandomCrop without a fixed size) vary: leave H, W unknown
        # unless the output kept the input's size or is fixed by the pipeline design.
        return tf.TensorShape(out.shape)

    def apply_to_dataset(self, ds: tf.data.Dataset, *,
                         num_parallel_calls: int | None = tf.data.AUTOTUNE) -> tf.data.Dataset:
        """Map the transform over ``ds`` (images, (images, labels) or (images, labels, weights)),
        batched or not; labels pass through untouched."""
        _warn_not_exported()
        image_spec = _image_spec(ds)
        batched = image_spec.shape.rank == 4
        single_shape = image_spec.shape[1:] if batched else image_spec.shape
        out_single = self.output_shape(single_shape)

        def transform(index, element):
            images, rest = _split(element)
            if batched:
                out = tf.numpy_function(self._apply_batch, [images, index], tf.float32,
                                        stateful=False)
                out.set_shape(tf.TensorShape([images.shape[0]]).concatenate(out_single))
            else:
                out = tf.numpy_function(self._apply_single, [images, index], tf.float32,
                                        stateful=False)
                out.set_shape(out_single)
            return _join(out, rest)

        return ds.enumerate().map(transform, num_parallel_calls=num_parallel_calls,
                                  deterministic=True)

    def __repr__(self) -> str:
        return f"AlbumentationsAdapter({self.compose!r}, seed={self.seed})"


def _seed_transform(transform: Any, seed: int) -> None:
    # albumentations 2: Compose and every BasicTransform carry set_random_seed, which reseeds
    # their NumPy Generator and their Python random.Random.
    transform.set_random_seed(int(seed))


def _image_spec(ds: tf.data.Dataset) -> tf.TensorSpec:
    spec = ds.element_spec
    if isinstance(spec, tuple):
        spec = spec[0]
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank not in (3, 4):
        raise ValueError(
            "augmentation needs a dataset of images (H, W, C) or batches (B, H, W, C), optionally "
            f"paired with labels as (images, labels); got element_spec {ds.element_spec}"
        )
    return spec


def _split(element):
    if isinstance(element, tuple):
        return element[0], element[1:]
    return element, None


def _join(images, rest):
    if rest is None:
        return images
    return (images, *rest)
