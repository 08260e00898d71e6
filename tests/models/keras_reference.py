"""Reference models from keras.applications, and their weights in the official file format."""

import h5py
import numpy as np

import keras
from keras.src.legacy.saving import legacy_h5_format

KERAS_APPLICATIONS = {
    "b0": keras.applications.EfficientNetB0,
    "b1": keras.applications.EfficientNetB1,
    "b2": keras.applications.EfficientNetB2,
    "b3": keras.applications.EfficientNetB3,
    "b4": keras.applications.EfficientNetB4,
    "b5": keras.applications.EfficientNetB5,
    "b6": keras.applications.EfficientNetB6,
    "b7": keras.applications.EfficientNetB7,
    "v2-b0": keras.applications.EfficientNetV2B0,
    "v2-b1": keras.applications.EfficientNetV2B1,
    "v2-b2": keras.applications.EfficientNetV2B2,
    "v2-b3": keras.applications.EfficientNetV2B3,
    "v2-s": keras.applications.EfficientNetV2S,
    "v2-m": keras.applications.EfficientNetV2M,
    "v2-l": keras.applications.EfficientNetV2L,
}


def keras_reference(variant, *, include_top, input_shape, seed=0):
    """A keras.applications model with non-trivial, scale-preserving weights.

    Fresh BatchNorm layers are the identity and a fresh classifier is near-uniform, which
    would hide mapping mistakes; perturb them so every weight matters.
    """
    rng = np.random.default_rng(seed)
    model = KERAS_APPLICATIONS[variant](
        weights=None, include_top=include_top, input_shape=input_shape
    )
    for weight in model.weights:
        name = weight.path.split("/")[-1]
        shape = tuple(weight.shape)
        if name in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.8, 1.25, shape).astype("float32"))
        elif name in ("beta", "moving_mean"):
            weight.assign(rng.uniform(-0.1, 0.1, shape).astype("float32"))
        elif weight.path.startswith("normalization") and name in ("mean", "variance"):
            weight.assign(rng.uniform(0.2, 0.6, shape).astype("float32"))
        elif weight.path.startswith("predictions") and name == "kernel":
            weight.assign(np.asarray(weight) * 50)  # a confident, non-uniform softmax
    return model


def keras_reference_from_file(variant, *, include_top, input_shape, path):
    """A keras.applications model with ``path`` loaded by Keras' own weight loader.

    Loading (not assigning) matters: Keras' Normalization layer only takes the mean and
    variance of a file into use when its variables are loaded.
    """
    return KERAS_APPLICATIONS[variant](
        weights=str(path), include_top=include_top, input_shape=input_shape
    )


def write_official_h5(model, path):
    """Write weights exactly as the published files are written (Keras' legacy HDF5 writer)."""
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path
