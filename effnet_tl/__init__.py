"""effnet_tl: a folder of images in, a well-trained EfficientNet classifier out.

Public names load on first use (PEP 562), so ``import effnet_tl`` is instant and the
``effnet-tl`` command can quiet TensorFlow before TensorFlow is imported.

Example:
    >>> import effnet_tl
    >>> effnet_tl.compound_scaling(1).depth
    1.2
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    # backbone
    "VARIANTS": "effnet_tl.models",
    "VariantSpec": "effnet_tl.models",
    "backbone": "effnet_tl.models",
    "compound_scaling": "effnet_tl.models",
    "custom_variant": "effnet_tl.models",
    "feature_extractor": "effnet_tl.models",
    "get_variant": "effnet_tl.models",
    "profile": "effnet_tl.models",
    # classifier and training
    "build_classifier": "effnet_tl.classifier",
    "fit": "effnet_tl.train.recipe",
    "FitResult": "effnet_tl.train.run",
    "Predictions": "effnet_tl.train.run",
    "load_run": "effnet_tl.train.run",
    "find_lr": "effnet_tl.train.lr_finder",
    # using a trained model
    "evaluate": "effnet_tl.inference.evaluate",
}
_SUBMODULES = ("augment", "data", "export", "inference", "layers", "models", "report", "scaling",
               "train")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = import_module(f"effnet_tl.{name}")
    else:
        raise AttributeError(f"module 'effnet_tl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
