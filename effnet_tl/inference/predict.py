"""Predictions of a trained model on files, folders, arrays and PIL images, with flip TTA.

:func:`predict_images` is what :meth:`effnet_tl.FitResult.predict` runs: files stream through
the evaluation pipeline in batches (:mod:`effnet_tl.inference.images`), so a folder of any size
is predicted in constant memory; arrays and PIL images go through
:func:`effnet_tl.train.run.prepare_images`, the array path of the same pipeline.

Test-time augmentation (``tta=True``) averages the probabilities of each image and its
left-right mirror: it helps only when the model learnt that a mirror is the same class, so it
is refused for a run that trained without left-right flips (``augment="auto"`` turns them off
when the data's answer changes under a flip, digits and text for instance).
"""

from __future__ import annotations

import numpy as np

__all__ = ["flip_averaged", "predict_images", "trained_with_flips"]

ERRORS = ("raise", "skip")


def trained_with_flips(config: dict) -> bool | None:
    """Whether the run's fine-tuning augmentation mirrored images left-right.

    ``None`` when ``config`` cannot tell (custom Keras layers or albumentations pipelines).

    Example:
        >>> trained_with_flips({"settings": {"data": {"augment": "light"}}})
        True
        >>> trained_with_flips({"settings": {"data": {"augment": "auto"}},
        ...                     "decisions": {"flips": {"kept": False}}})
        False
    """
    from effnet_tl.augment.presets import AugmentSpec, augmentation_off, get_preset

    augment = config.get("settings", {}).get("data", {}).get("augment")
    if augment == "auto":
        return (config.get("decisions") or {}).get("flips", {}).get("kept")
    if augment is None or augment is False or (isinstance(augment, str)
                                              and augmentation_off(augment)):
        return False
    if isinstance(augment, str):
        return get_preset(augment).horizontal_flip
    if isinstance(augment, dict) and isinstance(augment.get("spec"), dict):
        return AugmentSpec.from_dict(augment["spec"]).horizontal_flip
    return None


def flip_averaged(model):
    """A model returning the mean of ``model``'s probabilities for an image and its mirror.

    Example:
        >>> import keras
        >>> inputs = keras.Input((1, 2, 1))
        >>> left = keras.Model(inputs, keras.layers.Flatten()(inputs))  # "probabilities": pixels
        >>> flip_averaged(left)(np.array([[[[1.0], [3.0]]]], "float32")).numpy().tolist()
        [[2.0, 2.0]]
    """
    import keras

    inputs = keras.Input(model.input_shape[1:], name="image")
    mirrored = keras.ops.flip(inputs, axis=2)
    outputs = keras.ops.divide(keras.ops.add(model(inputs), model(mirrored)), 2.0)
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_tta")


def check_tta(config: dict) -> None:
    """Refuse flip TTA for a run that trained without left-right flips (``ValueError``)."""
    if trained_with_flips(config) is False:
        augment = config.get("settings", {}).get("data", {}).get("augment")
        raise ValueError(
            f"flip test-time augmentation needs a model trained with left-right flips, but this "
            f"run trained without them (augment={augment!r}"
            + (", flips turned off by the flip test" if augment == "auto" else "")
            + "): a mirrored image is not the same class to it; predict without it")


def predict_images(model, class_names, config: dict, images, *, batch_size: int = 64,
                   tta: bool = False, errors: str = "raise", progress=None):
    """Classify ``images`` (see :meth:`effnet_tl.FitResult.predict`); returns ``Predictions``.

    Args:
        model: the Keras classifier (float pixels in [0, 255] in, probabilities out).
        class_names: its classes, in label order.
        config: the run's ``config.json`` (the resize policy; whether flips trained).
        images: paths, folders, arrays, PIL images, or a list of them.
        batch_size: images per forward pass.
        tta: average each image with its left-right mirror.
        errors: ``"raise"`` or ``"skip"`` a file that is not a usable image.
        progress: called as ``progress(done, total)`` after each batch.
    """
    from effnet_tl.inference.images import expand_inputs, file_batches
    from effnet_tl.train.feature_cache import inference_function
    from effnet_tl.train.run import Predictions, prepare_images

    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}. Received: errors={errors!r}")
    if tta:
        check_tta(config)
        model = flip_averaged(model)
    resize = config.get("settings", {}).get("data", {}).get("resize") or config.get("resize")
    image_size = tuple(int(side) for side in model.input_shape[1:3])
    items = expand_inputs(images)
    probabilities = np.zeros((len(items), len(class_names)), np.float32)
    done = np.zeros(len(items), bool)
    files = np.asarray([i for i, (_, item) in enumerate(items) if isinstance(item, str)], np.int64)
    batches, skipped = file_batches([items[i][1] for i in files], image_size,
                                    resize=resize, batch_size=batch_size)
    if skipped and errors == "raise":
        raise ValueError(f"{len(skipped)} of {len(files)} files are not usable images: "
                         + "; ".join(f"{path}: {reason}" for path, reason in skipped))
    predict = inference_function(model)
    total = len(items) - len(skipped)

    def record(rows, pixels):
        probabilities[rows] = predict(pixels).numpy()
        done[rows] = True
        if progress is not None:
            progress(int(done.sum()), total)

    for positions, pixels in batches:
        record(files[positions], pixels)
    others = np.setdiff1d(np.arange(len(items)), files)
    if len(others):
        pixels = prepare_images([items[i][1] for i in others], image_size,
                                resize=resize or "center_crop")
        for start in range(0, len(others), batch_size):
            record(others[start:start + batch_size], pixels[start:start + batch_size])
    kept = np.flatnonzero(done)
    probabilities = probabilities[kept]
    indices = probabilities.argmax(axis=1)
    return Predictions(
        labels=[class_names[i] for i in indices],
        confidences=probabilities.max(axis=1) if len(kept) else np.zeros(0, np.float32),
        probabilities=probabilities,
        class_names=tuple(class_names),
        sources=tuple(items[i][0] for i in kept),
        skipped=tuple(skipped),
    )
