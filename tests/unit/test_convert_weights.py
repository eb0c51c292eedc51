"""tools/convert_weights.py: PyTorch checkpoints read without PyTorch, mapped onto paddle.vision.

PyTorch is not installed, so the synthetic checkpoints are written by a tiny pickle encoder below
that emits exactly the opcodes torch.save produces (globals, persistent ids, REDUCE).
"""
from __future__ import annotations

import os
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import utils  # noqa: F401  (before paddle: quiets paddle's import-time ccache warning)
import paddle
from paddle.vision import models

from helpers import run_in_process
from tools.convert_weights import convert_file, convert_state_dict, load_torch_state_dict
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _shared_dir() -> Path:
    return Path(os.environ.get("PATCHCORE_SHARED", ROOT.parent / "shared"))


# --- a minimal protocol-2 pickle writer --------------------------------------------------------

class _Global:
    """A module-level name, as pickle's GLOBAL opcode refers to it (torch need not exist)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _Call:
    """func(*args) at load time (REDUCE)."""

    def __init__(self, func: _Global, args: tuple) -> None:
        self.func, self.args = func, args


class _PersId:
    """A persistent id: how torch.save refers to tensor storages."""

    def __init__(self, pid: tuple) -> None:
        self.pid = pid


class _ODict(dict):
    """Encoded as collections.OrderedDict, like every torch state dict."""


def _encode(obj) -> bytes:
    if obj is None:
        return b"N"
    if obj is True or obj is False:
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        if -2**31 <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(obj, str):
        raw = obj.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(obj, tuple):
        return b"(" + b"".join(_encode(x) for x in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(_encode(x) for x in obj) + b"e"
    if isinstance(obj, _ODict):
        items = b"".join(_encode(k) + _encode(v) for k, v in obj.items())
        return _encode(_Call(_Global("collections", "OrderedDict"), ())) + b"(" + items + b"u"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_encode(k) + _encode(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, _Global):
        return b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    if isinstance(obj, _Call):
        return _encode(obj.func) + _encode(obj.args) + b"R"
    if isinstance(obj, _PersId):
        return _encode(obj.pid) + b"Q"
    raise TypeError(type(obj))


def _dumps(obj) -> bytes:
    return b"\x80\x02" + _encode(obj) + b"."


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.float64): "DoubleStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.bool_): "BoolStorage"}


def _tensor(key: str, storage_name: str, numel: int, offset: int, size: tuple, stride: tuple,
            legacy: bool = False) -> _Call:
    pid = ("storage", _Global("torch", storage_name), key, "cpu", numel) + ((None,) if legacy else ())
    return _Call(_Global("torch._utils", "_rebuild_tensor_v2"),
                 (_PersId(pid), offset, size, stride, False, _ODict()))


def _write_checkpoint(path: Path, obj, storages: dict[str, tuple[str, bytes, int]],
                      fmt: str, big_endian: bool = False) -> None:
    """storages: key -> (storage class name, raw bytes, numel). fmt: 'zip' or 'legacy'."""
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", _dumps(obj))
            archive.writestr("archive/byteorder", "big" if big_endian else "little")
            for key, (_, raw, _) in storages.items():
                archive.writestr(f"archive/data/{key}", raw)
            archive.writestr("archive/version", "3\n")
        return
    order = ">" if big_endian else "<"
    with open(path, "wb") as handle:
        handle.write(_dumps(0x1950A86A20F9469CFC6C) + _dumps(1001))
        handle.write(_dumps({"protocol_version": 1001, "little_endian": not big_endian,
                             "type_sizes": {"short": 2, "int": 4, "long": 8}}))
        handle.write(_dumps(obj) + _dumps(list(storages)))
        for _, raw, numel in storages.values():
            handle.write(struct.pack(order + "q", numel) + raw)


def _torch_format_sd(state: dict[str, np.ndarray], fmt: str) -> tuple[_ODict, dict]:
    """A numpy state dict as torch.save would pickle it: one contiguous storage per tensor."""
    obj, storages = _ODict(), {}
    for i, (name, value) in enumerate(state.items()):
        value = np.ascontiguousarray(value)
        strides = tuple(s // value.itemsize for s in value.strides)
        storage_name = _STORAGE_NAMES[value.dtype]
        obj[name] = _tensor(str(i), storage_name, value.size, 0, value.shape, strides, fmt == "legacy")
        storages[str(i)] = (storage_name, value.astype(value.dtype.newbyteorder("<")).tobytes(), value.size)
    return obj, storages


# --- torchvision <-> paddle.vision names, written out independently of the tool ---------------

def _paddle_sd(arch: str) -> dict[str, np.ndarray]:
    paddle.seed(0)
    return {k: v.numpy() for k, v in getattr(models, arch)().state_dict().items()}


def _to_torchvision(state: dict[str, np.ndarray], linear: str) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state.items():
        if key == linear:
            value = value.T
        if key.endswith("._mean"):
            key = key[: -len("._mean")] + ".running_mean"
        elif key.endswith("._variance"):
            out[key[: -len("._variance")] + ".num_batches_tracked"] = np.array(100, dtype=np.int64)
            key = key[: -len("._variance")] + ".running_var"
        out[key] = value
    return out


def _to_flat_mobilenet(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision MobileNetV2 names -> the original flat block layout (conv.0 .. conv.7)."""
    expand1 = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
    expand6 = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "features" and parts[2] == "conv":
            table = expand1 if parts[1] == "1" else expand6
            inner = ".".join(parts[3:-1])
            key = ".".join(parts[:3] + [table[inner], parts[-1]])
        out[key] = value
    return out


# --- 1. the real MobileNetV2 against PyTorch's own activations --------------------------------

def test_real_mobilenet_v2_reproduces_torch_activations():
    weights = _shared_dir() / "weights"
    src = weights / "mobilenet_v2_imagenet_torch.pt"
    reference = weights / "mobilenet_v2_reference_outputs.npz"
    if not (src.is_file() and reference.is_file()):
        pytest.skip(f"shared MobileNetV2 weights not found in {weights}")
    state = convert_state_dict(load_torch_state_dict(str(src)), "mobilenet_v2", log=None)
    net = models.mobilenet_v2()
    with warnings.catch_warnings():  # paddle warns once per absent classifier key: expected here
        warnings.simplefilter("ignore")
        missing, unexpected = net.set_state_dict(state)
    assert sorted(missing) == ["classifier.1.bias", "classifier.1.weight"] and not unexpected
    net.eval()
    ref = np.load(reference)
    checked = []
    x = paddle.to_tensor(ref["input"])
    with paddle.no_grad():
        for index, block in enumerate(net.features):
            x = block(x)
            name = f"features_{index}"
            if name in ref.files:
                # Elementwise: |out - ref| <= 1e-4 * |ref| + 1e-4 * max|ref|, i.e. errors are at
                # most 1e-4 relative to the activation's scale (measured: ~2e-6).
                expected = ref[name]
                np.testing.assert_allclose(x.numpy(), expected, rtol=1e-4,
                                           atol=1e-4 * float(np.abs(expected).max()), err_msg=name)
                checked.append(index)
    assert checked == [3, 6, 10, 13, 16, 18]


# --- 2. synthetic checkpoints ---------------------------------------------------------------

@pytest.mark.parametrize("fmt,big_endian", [("zip", False), ("zip", True), ("legacy", False),
                                            ("legacy", True)])
def test_load_rebuilds_strided_tensors(tmp_path, fmt, big_endian):
    legacy = fmt == "legacy"
    order = ">" if big_endian else "<"
    base = np.arange(24, dtype=np.float32)
    square = np.arange(12, dtype=np.float32)
    bf16_values = np.array([1.5, -2.0, 3.140625], dtype=np.float32)
    bf16_bits = (bf16_values.view(np.uint32) >> 16).astype(np.uint16)
    storages = {
        "0": ("FloatStorage", base.astype(order + "f4").tobytes(), 24),
        "1": ("FloatStorage", square.astype(order + "f4").tobytes(), 12),
        "2": ("LongStorage", np.array([7], order + "i8").tobytes(), 1),
        "3": ("HalfStorage", np.array([0.5, 2.0], order + "f2").tobytes(), 2),
        "4": ("BFloat16Storage", bf16_bits.astype(order + "u2").tobytes(), 3),
    }
    state = _ODict()
    state["full"] = _tensor("0", "FloatStorage", 24, 0, (2, 3, 4), (12, 4, 1), legacy)
    state["transposed"] = _tensor("1", "FloatStorage", 12, 0, (4, 3), (1, 4), legacy)
    state["offset"] = _tensor("0", "FloatStorage", 24, 5, (2, 2), (4, 1), legacy)
    state["scalar"] = _tensor("2", "LongStorage", 1, 0, (), (), legacy)
    state["half"] = _tensor("3", "HalfStorage", 2, 0, (2,), (1,), legacy)
    state["bf16"] = _tensor("4", "BFloat16Storage", 3, 0, (3,), (1,), legacy)
    state["param"] = _Call(_Global("torch._utils", "_rebuild_parameter"),
                           (_tensor("0", "FloatStorage", 24, 20, (4,), (1,), legacy), True, _ODict()))
    checkpoint = {"epoch": 3, "state_dict": state}  # a training checkpoint wraps the state dict
    path = tmp_path / "synthetic.pt"
    _write_checkpoint(path, checkpoint, storages, fmt, big_endian)

    loaded = load_torch_state_dict(str(path))
    expected = {
        "full": base.reshape(2, 3, 4),
        "transposed": square.reshape(3, 4).T,
        "offset": np.array([[5, 6], [9, 10]], dtype=np.float32),
        "scalar": np.array(7, dtype=np.int64),
        "half": np.array([0.5, 2.0], dtype=np.float16),
        "bf16": bf16_values,
        "param": np.array([20, 21, 22, 23], dtype=np.float32),
    }
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and loaded[key].dtype.isnative, key
        assert loaded[key].flags.c_contiguous, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_resnet18_round_trip_through_torchvision_names():
    original = _paddle_sd("resnet18")
    torch_sd = _to_torchvision(original, "fc.weight")
    assert torch_sd["fc.weight"].shape == (1000, 512)
    converted = convert_state_dict(torch_sd, "resnet18", log=None)
    assert set(converted) == set(original)
    for key, value in original.items():
        np.testing.assert_array_equal(converted[key], value, err_msg=key)


def test_mobilenet_v2_flat_layout_without_classifier():
    original = _paddle_sd("mobilenet_v2")
    features = {k: v for k, v in original.items() if not k.startswith("classifier.")}
    torch_sd = _to_flat_mobilenet(_to_torchvision(features, "classifier.1.weight"))
    assert "features.2.conv.7.weight" in torch_sd  # really the flat layout
    lines: list[str] = []
    converted = convert_state_dict(torch_sd, "mobilenet_v2", log=lines.append)
    assert set(converted) == set(features)
    for key, value in features.items():
        np.testing.assert_array_equal(converted[key], value, err_msg=key)
    assert len(lines) == 1 and "2 missing" in lines[0]


def test_convert_file_writes_loadable_pdparams(tmp_path):
    original = _paddle_sd("mobilenet_v2")
    torch_sd = _to_torchvision(original, "classifier.1.weight")
    torch_sd["classifier.1.weight"] = torch_sd["classifier.1.weight"].astype(np.float64)
    obj, storages = _torch_format_sd(torch_sd, "zip")
    src, dst = tmp_path / "mnv2.pt", tmp_path / "mnv2.pdparams"
    _write_checkpoint(src, obj, storages, "zip")
    convert_file(str(src), str(dst), "mobilenet_v2", log=None)
    loaded = paddle.load(str(dst), return_numpy=True)
    assert set(loaded) == set(original)
    for key, value in original.items():
        assert loaded[key].dtype == np.float32, key  # the double classifier was cast back
        np.testing.assert_allclose(loaded[key], value, rtol=1e-6, atol=0, err_msg=key)
    assert sorted(os.listdir(tmp_path)) == ["mnv2.pdparams", "mnv2.pt"]  # no temp file left


# --- errors -----------------------------------------------------------------------------------

def test_missing_and_non_torch_files_raise(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_torch_state_dict(str(tmp_path / "nope.pt"))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        load_torch_state_dict(str(text))
    other_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="no data.pkl"):
        load_torch_state_dict(str(other_zip))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(_dumps(0x1950A86A20F9469CFC6C)[:5])
    with pytest.raises(UserError):
        load_torch_state_dict(str(truncated))


def test_foreign_globals_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    hostile = _ODict(x=_Call(_Global("os", "system"), (f"touch {marker}",)))
    path = tmp_path / "hostile.pt"
    _write_checkpoint(path, hostile, {}, "zip")
    with pytest.raises(UserError, match="os.system"):
        load_torch_state_dict(str(path))
    assert not marker.exists()


def test_tensor_past_its_storage_is_rejected(tmp_path):
    state = _ODict(w=_tensor("0", "FloatStorage", 4, 2, (4,), (1,)))
    path = tmp_path / "bad.pt"
    _write_checkpoint(path, state, {"0": ("FloatStorage", np.zeros(4, "<f4").tobytes(), 4)}, "zip")
    with pytest.raises(UserError, match="past its storage"):
        load_torch_state_dict(str(path))


def test_unknown_arch_and_mismatches_raise(tmp_path):
    torch_sd = _to_torchvision(_paddle_sd("resnet18"), "fc.weight")
    with pytest.raises(UserError, match="unknown arch 'vgg16'"):
        convert_state_dict(torch_sd, "vgg16", log=None)
    with pytest.raises(UserError, match="unknown arch"):
        convert_file(str(tmp_path / "x.pt"), str(tmp_path / "x.pdparams"), "vgg16", log=None)
    with pytest.raises(UserError, match="does not fit mobilenet_v2"):
        convert_state_dict(torch_sd, "mobilenet_v2", log=None)
    bad_shape = dict(torch_sd, **{"conv1.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(UserError, match="1 wrongly shaped"):
        convert_state_dict(bad_shape, "resnet18", log=None)
    no_layer4 = {k: v for k, v in torch_sd.items() if not k.startswith("layer4.")}
    with pytest.raises(UserError, match="backbone keys missing"):
        convert_state_dict(no_layer4, "resnet18", log=None)


def test_unwritable_destination_raises_and_leaves_nothing(tmp_path):
    torch_sd = _to_torchvision(_paddle_sd("resnet18"), "fc.weight")
    obj, storages = _torch_format_sd(torch_sd, "legacy")
    src = tmp_path / "r18.pt"
    _write_checkpoint(src, obj, storages, "legacy")
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        convert_file(str(src), str(tmp_path / "out"), "resnet18", log=None)
    with pytest.raises(UserError, match="does not exist"):
        convert_file(str(src), str(tmp_path / "nowhere" / "r18.pdparams"), "resnet18", log=None)
    assert sorted(os.listdir(tmp_path)) == ["out", "r18.pt"] and not os.listdir(tmp_path / "out")


def test_cli_reports_one_line_and_exit_code_2(tmp_path):
    result = run_in_process("tools/convert_weights.py", "--src", str(tmp_path / "nope.pt"),
                            "--dst", str(tmp_path / "out.pdparams"), "--arch", "resnet18")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: PyTorch weights file not found: {tmp_path / 'nope.pt'}"]


def test_declared_sizes_are_checked_before_anything_is_materialised(tmp_path):
    """A 16384x16384 zero-stride tensor over one float, a deflate bomb (64 MiB of zeros in a small
    zip) and a legacy record declaring more bytes than the file has: refused before allocation."""
    path = tmp_path / "bomb.pt"
    one = {"0": ("FloatStorage", np.zeros(1, "<f4").tobytes(), 1)}
    _write_checkpoint(path, _ODict(w=_tensor("0", "FloatStorage", 1, 0, (16384, 16384), (0, 0))), one, "zip")
    with pytest.raises(UserError, match="has 268435456 elements, its storage 1"):
        load_torch_state_dict(str(path))
    numel = 2**24
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", _dumps(_ODict(w=_tensor("0", "FloatStorage", numel, 0, (numel,), (1,)))))
        archive.writestr("archive/data/0", bytes(4 * numel))
    assert path.stat().st_size < 200_000
    with pytest.raises(UserError, match="would expand from .* to 67108864 bytes"):
        load_torch_state_dict(str(path))
    _write_checkpoint(path, _ODict(w=_tensor("0", "FloatStorage", 1, 0, (1,), (1,), legacy=True)),
                      {"0": ("FloatStorage", b"", 2**40)}, "legacy")
    with pytest.raises(UserError, match="declares 4398046511104 bytes, more than remain"):
        load_torch_state_dict(str(path))


@pytest.mark.parametrize("script", ["convert_weights", "make_demo_data"])
def test_tools_usage_errors_are_one_line(script, capsys):
    import importlib

    module = importlib.import_module(f"tools.{script}")
    with pytest.raises(SystemExit) as stop:
        (module.main if script == "convert_weights" else module.parse_args)(["--bogus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
