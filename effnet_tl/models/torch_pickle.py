"""The restricted unpickler behind :mod:`effnet_tl.models.torch_checkpoint`.

It can only build plain containers, numbers, strings and references to tensor storages:
every global a pickle names is checked against a state-dict allow-list *before* it is
imported or called, so nothing from a downloaded file runs.
"""

from __future__ import annotations

import collections
import pickle
import struct
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "PICKLE_ERRORS",
    "RestrictedUnpickler",
    "StorageRef",
    "TensorRef",
    "TorchCheckpointError",
    "TruncatedCheckpointError",
    "UnsafeCheckpointError",
    "decode_text",
    "is_count",
    "unpickle",
]


class TorchCheckpointError(ValueError):
    """The file is not a PyTorch state-dict checkpoint this reader understands."""


class TruncatedCheckpointError(TorchCheckpointError):
    """The file ends before all of the checkpoint's data has been read."""


class UnsafeCheckpointError(TorchCheckpointError):
    """The checkpoint's pickle references a global outside the state-dict allow-list.

    Raised *before* the global is imported or called, so nothing from the file
    runs. A legitimate state dict never triggers it; a full pickled
    ``nn.Module``, an optimizer with custom classes, or a crafted file does.
    """


def _bfloat16_dtype() -> np.dtype | None:
    # numpy has no bfloat16; ml_dtypes (a TensorFlow dependency) provides one.
    # Optional so that importing this module never requires it.
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with TensorFlow
        return None
    return np.dtype(ml_dtypes.bfloat16)


# torch storage class name -> little-endian numpy dtype of one element. Both
# layouts store data little-endian unless a zip says otherwise (see byteorder).
_STORAGE_DTYPES: dict[str, np.dtype | None] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": _bfloat16_dtype(),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = dtype


class StorageRef:
    """A storage named by the pickle; its bytes are attached after unpickling."""

    __slots__ = ("key", "dtype", "numel", "view_offset", "view_numel")

    def __init__(self, key: str, dtype: np.dtype, numel: int, view_offset: int, view_numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel  # elements of the whole (root) storage
        self.view_offset = view_offset  # legacy storage views; 0 otherwise
        self.view_numel = view_numel


class TensorRef:
    """What ``_rebuild_tensor_v2`` returns here: a strided view description."""

    __slots__ = ("storage", "offset", "size", "stride", "metadata")

    def __init__(self, storage, offset, size, stride, metadata=None):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.metadata = metadata


def _rebuild_tensor(storage, storage_offset, size, stride):
    # Same signature as torch._utils._rebuild_tensor; validated in _materialize.
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None
):
    # requires_grad and hooks are autograd state with no meaning for numpy.
    del requires_grad, backward_hooks
    return TensorRef(storage, storage_offset, size, stride, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    # nn.Parameter is a tensor plus autograd flags; the tensor is all we keep.
    del requires_grad, backward_hooks
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    del requires_grad, backward_hooks, state
    return data


def _torch_size(dims=()):
    # torch.Size pickles as (torch.Size, (tuple_of_ints,)); a tuple is equivalent.
    return tuple(dims)


# The complete allow-list. Everything here either builds a plain container or
# returns one of the inert stand-ins above, so unpickling cannot run file code.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _torch_size,
}
for _name, _dtype in _STORAGE_DTYPES.items():
    if _dtype is not None:
        _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name, _dtype)
del _name, _dtype


def decode_text(value: Any) -> Any:
    # Checkpoints pickled under Python 2 carry ASCII bytes where Python 3 has str.
    return value.decode("ascii") if isinstance(value, bytes) else value


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and records storages.

    Args:
        file: Binary stream positioned at a pickle.
        storage_refs: Dict that collects every storage the pickle names, by key.
        allow_globals: False for the legacy header pickles, which are plain data.
    """

    def __init__(self, file: BinaryIO, storage_refs: dict[str, StorageRef], allow_globals=True):
        super().__init__(file, encoding="utf-8")
        self._storage_refs = storage_refs
        self._allow_globals = allow_globals

    def find_class(self, module: str, name: str) -> Any:
        # Every GLOBAL / STACK_GLOBAL / INST / OBJ / EXT opcode lands here, so
        # refusing here stops the import before anything from the file runs.
        if self._allow_globals and (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise UnsafeCheckpointError(
            f"checkpoint references the forbidden global '{module}.{name}'; "
            "only tensors and plain containers (a state dict) may be loaded"
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        if not self._allow_globals:
            raise TorchCheckpointError("unexpected persistent object in a checkpoint header")
        # Zip:    ('storage', storage_type, key, location, numel)
        # Legacy: ('storage', storage_type, root_key, location, numel, view_metadata)
        if not isinstance(pid, tuple) or not pid or decode_text(pid[0]) != "storage":
            kind = decode_text(pid[0]) if isinstance(pid, tuple) and pid else type(pid).__name__
            raise TorchCheckpointError(
                f"unsupported persistent object {kind!r} in checkpoint "
                "(a pickled nn.Module rather than a state dict?)"
            )
        if len(pid) == 5:
            _, storage_type, key, _location, numel = pid
            view = None
        elif len(pid) == 6:
            _, storage_type, key, _location, numel, view = pid
        else:
            raise TorchCheckpointError(f"malformed storage record of length {len(pid)}")
        key = decode_text(key)
        if not isinstance(storage_type, _StorageType):
            raise TorchCheckpointError(f"storage {key!r} has an unsupported type")
        if not isinstance(key, str) or not is_count(numel):
            raise TorchCheckpointError(f"malformed storage record for key {key!r}")

        view_offset, view_numel = 0, numel
        if view is not None:
            # Old torch (< 1.x) could pickle a storage as a slice of another.
            if not (isinstance(view, tuple) and len(view) == 3):
                raise TorchCheckpointError(f"malformed storage view for key {key!r}")
            _view_key, view_offset, view_numel = view
            if not (
                is_count(view_offset)
                and is_count(view_numel)
                and view_offset + view_numel <= numel
            ):
                raise TorchCheckpointError(f"storage view out of bounds for key {key!r}")

        known = self._storage_refs.get(key)
        if known is None:
            self._storage_refs[key] = StorageRef(key, storage_type.dtype, numel, 0, numel)
        elif known.dtype != storage_type.dtype or known.numel != numel:
            raise TorchCheckpointError(f"storage {key!r} is declared twice inconsistently")
        return StorageRef(key, storage_type.dtype, numel, view_offset, view_numel)


def is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


# Errors the pickle machinery raises on malformed input. UnsafeCheckpointError
# and TorchCheckpointError are ValueErrors too, so callers re-raise those first.
PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    UnicodeDecodeError,
    struct.error,
)


def unpickle(file: BinaryIO, storage_refs: dict[str, StorageRef], *, what: str, header=False):
    try:
        return RestrictedUnpickler(file, storage_refs, allow_globals=not header).load()
    except TorchCheckpointError:
        raise
    except EOFError as exc:
        raise TruncatedCheckpointError(
            f"{what} ends early: {exc or 'unexpected end of file'}"
        ) from None
    except (*PICKLE_ERRORS, MemoryError) as exc:
        if "truncated" in str(exc):  # C unpickler's wording for a short read
            raise TruncatedCheckpointError(f"{what} ends early: {exc}") from None
        raise TorchCheckpointError(f"{what} is not a valid pickle: {exc}") from None
