"""Packages whose public names load on first use (PEP 562).

Importing a package runs its ``__init__``; when that imports every submodule, any
``import effnet_tl.models.variants`` loads Keras and TensorFlow (seconds). A package that calls
:func:`export_lazily` instead imports a submodule when one of its names is first used, so the
light parts (variant tables, augmentation presets) stay light: the ``effnet-tl`` command builds
and checks its flags without TensorFlow.

Example:
    >>> import effnet_tl.augment
    >>> effnet_tl.augment.PRESETS
    ('none', 'light', 'medium', 'heavy')
"""

from __future__ import annotations

import sys
import types
from importlib import import_module


class _Package(types.ModuleType):
    """A package module that keeps a function named like its submodule (``preview``)."""

    def __setattr__(self, name, value):
        # Importing submodule ``preview`` binds the module to that name in the package; the
        # package's ``preview`` is the function, as an eager ``from .preview import preview``
        # left it.
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_lazy_exports", {}):
            return
        super().__setattr__(name, value)


def export_lazily(package: str, exports: dict[str, str]) -> None:
    """Give ``package`` the public ``exports`` (name -> submodule), each loaded on first use."""
    module = sys.modules[package]

    def __getattr__(name):
        if name in exports:
            value = getattr(import_module(f"{package}.{exports[name]}"), name)
            module.__dict__[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(module.__dict__) | set(exports))

    module.__dict__.update(__getattr__=__getattr__, __dir__=__dir__, __all__=sorted(exports),
                           _lazy_exports=dict(exports))
    module.__class__ = _Package
