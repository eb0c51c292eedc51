"""Convert PyTorch ImageNet weights (a `torch.save`d state dict) into a paddle.vision `.pdparams`.

Pretrained ImageNet weights cannot be downloaded on every machine, but PyTorch checkpoints often
can be found locally. PyTorch must not be a dependency, so the checkpoint is read by hand: a `.pt`
file is a pickle whose tensors point into raw storage blocks. Two containers exist:

* zip (PyTorch >= 1.6): `<prefix>/data.pkl`, one file `<prefix>/data/<key>` per storage,
  optionally `<prefix>/byteorder`;
* legacy (older PyTorch, still produced with `_use_new_zipfile_serialization=False`): a stream of
  pickles (magic number, protocol version, system info, the object, the storage keys) followed by
  every storage as an int64 element count and its raw bytes.

Unpickling runs arbitrary code unless restricted, so only the handful of globals a plain state dict
needs are accepted; anything else (a whole pickled nn.Module, optimizer classes, ...) is refused.

Usage (from the repo root):
    python tools/convert_weights.py --src X.pt --dst Y.pdparams --arch mobilenet_v2
"""
from __future__ import annotations

import collections
import os
import pickle
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

# Run as `python tools/convert_weights.py` the repo root is not on sys.path, only tools/ is.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from models.registry import ARCHS, arch_spec  # noqa: E402  (needs the sys.path line above)
from utils.errors import UserError, run_cli, script_parser  # noqa: E402
from utils.io import atomic_path  # noqa: E402

# First pickle of the legacy format (torch.serialization.MAGIC_NUMBER) and its protocol version.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage class name -> numpy dtype of one element. bfloat16 has no numpy dtype: it is read as
# its raw 16 bits and widened to float32 (exact, bfloat16 is the top half of a float32).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(np.uint16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}


class _StorageType:
    """Stands in for a torch storage class: all the loader needs from it is the element type."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """One storage block; `array` is filled once its bytes are read (in the legacy format that is
    only after the whole object has been unpickled)."""

    def __init__(self, key: str, storage_type: _StorageType, numel: int) -> None:
        self.key = key
        self.storage_type = storage_type
        self.numel = numel
        self.array: np.ndarray | None = None


class _PendingTensor:
    """A tensor whose storage bytes may not have been read yet."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        if not isinstance(storage, _Storage):
            raise UserError("malformed checkpoint: a tensor is not backed by a storage")
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _PendingTensor:
    # requires_grad / hooks / metadata only matter for training in torch; weights are just data.
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _PendingTensor:
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> Any:
    # An nn.Parameter is its tensor plus a training flag; the flag means nothing to paddle.
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
for _name in _STORAGE_DTYPES:
    _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name)
_ALLOWED_GLOBALS[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build state dicts: every other global is refused, so a hostile
    checkpoint cannot run code (pickle would otherwise import and call whatever it names)."""

    def __init__(self, file: IO[bytes], source: str,
                 load_storage: Callable[[tuple], _Storage] | None = None) -> None:
        super().__init__(file)
        self._source = source
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(
                f"'{self._source}' refers to '{module}.{name}', which a plain state dict never "
                f"needs; refusing to load it (save model.state_dict(), not the model)") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UserError(f"'{self._source}' holds an unsupported persistent object "
                                 f"({str(pid)[:60]}); only tensor storages are supported")
        return self._load_storage(pid)


def _native(array: np.ndarray, storage_type: _StorageType) -> np.ndarray:
    """Numpy array in native byte order, bfloat16 widened to float32."""
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    if storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _storage_from_bytes(storage: _Storage, raw: bytes, big_endian: bool) -> np.ndarray:
    dtype = storage.storage_type.dtype.newbyteorder(">" if big_endian else "<")
    if len(raw) % dtype.itemsize:
        raise UserError(f"malformed checkpoint: storage '{storage.key}' has {len(raw)} bytes, "
                             f"not a whole number of {dtype.itemsize}-byte elements")
    return _native(np.frombuffer(raw, dtype=dtype), storage.storage_type)


def _storage_record(pid: tuple, source: str) -> tuple[_StorageType, str, int]:
    # pid = ('storage', storage_type, key, location, numel[, view_metadata (legacy only)])
    if len(pid) < 5 or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str):
        raise UserError(f"'{source}' has a malformed storage record ({str(pid)[:60]})")
    return pid[1], pid[2], int(pid[4])


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise UserError(f"'{path}' is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            big_endian = archive.read(prefix + "byteorder").strip() == b"big"
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            storage_type, key, numel = _storage_record(pid, path)
            if key not in storages:
                storage = _Storage(key, storage_type, numel)
                try:
                    member = archive.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise UserError(f"'{path}' is truncated: storage '{key}' is missing") from None
                _check_member_size(member, numel * storage_type.dtype.itemsize, path)
                raw = archive.read(member)
                storage.array = _storage_from_bytes(storage, raw, big_endian)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as handle:
            return _RestrictedUnpickler(handle, path, load_storage).load()


# torch.save stores members uncompressed; a recompressed checkpoint may expand at most this much
# (weights compress by about 1.1x, a deflate bomb by 1000x).
MAX_COMPRESSION_RATIO = 20


def _check_member_size(member: zipfile.ZipInfo, declared: int, path: str) -> None:
    """Refuse, before decompressing it, a storage whose size is not what its record declares or
    that would expand beyond MAX_COMPRESSION_RATIO (a 1 MB file must not cost gigabytes)."""
    if member.file_size != declared:
        raise UserError(f"'{path}' is malformed: storage '{member.filename}' holds {member.file_size} bytes, "
                        f"its record declares {declared}")
    if member.compress_type != zipfile.ZIP_STORED and member.file_size > MAX_COMPRESSION_RATIO * member.compress_size:
        raise UserError(f"'{path}' is malformed: storage '{member.filename}' would expand from "
                        f"{member.compress_size} to {member.file_size} bytes (a decompression bomb?)")


def _load_legacy(path: str, handle: IO[bytes]) -> Any:
    def plain_pickle() -> Any:
        return _RestrictedUnpickler(handle, path).load()

    if plain_pickle() != _LEGACY_MAGIC:
        raise UserError(f"'{path}' is not a PyTorch checkpoint (bad magic number)")
    protocol = plain_pickle()
    if protocol != _LEGACY_PROTOCOL:
        raise UserError(f"'{path}' uses unsupported legacy protocol version {protocol}")
    sys_info = plain_pickle()
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    storages: dict[str, _Storage] = {}
    views: dict[str, tuple[str, int, int]] = {}

    def load_storage(pid: tuple) -> _Storage:
        storage_type, key, numel = _storage_record(pid, path)
        if key not in storages:
            storages[key] = _Storage(key, storage_type, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return storages[key]
        # Pre-0.4 PyTorch could save a slice of a storage: (view_key, offset, size) in elements.
        view_key, offset, size = view
        if view_key not in storages:
            storages[view_key] = _Storage(view_key, storage_type, int(size))
            views[view_key] = (key, int(offset), int(size))
        return storages[view_key]

    result = _RestrictedUnpickler(handle, path, load_storage).load()
    keys = plain_pickle()
    if not isinstance(keys, list):
        raise UserError(f"'{path}' is not a PyTorch checkpoint (no storage key list)")
    count_dtype = np.dtype(">i8" if big_endian else "<i8")
    for key in keys:
        if key not in storages:
            raise UserError(f"'{path}' is malformed: storage '{key}' is never used")
        storage = storages[key]
        header = handle.read(8)
        if len(header) != 8:
            raise UserError(f"'{path}' is truncated (storage '{key}' missing)")
        numel = int(np.frombuffer(header, dtype=count_dtype)[0])
        if numel < 0:  # read(-n) would swallow the rest of the file
            raise UserError(f"'{path}' is malformed: storage '{key}' has a negative size")
        nbytes = numel * storage.storage_type.dtype.itemsize
        if nbytes > os.fstat(handle.fileno()).st_size - handle.tell():   # read(n) would reserve n bytes first
            raise UserError(f"'{path}' is truncated (storage '{key}' declares {nbytes} bytes, more than remain)")
        raw = handle.read(nbytes)
        if len(raw) != nbytes:
            raise UserError(f"'{path}' is truncated (storage '{key}' is incomplete)")
        storage.array = _storage_from_bytes(storage, raw, big_endian)
    for view_key, (root, offset, size) in views.items():
        base = storages[root].array
        if base is None or offset < 0 or offset + size > base.size:
            raise UserError(f"'{path}' is malformed: storage view '{view_key}' is out of range")
        storages[view_key].array = base[offset: offset + size]
    return result


def _materialize(tensor: _PendingTensor, name: str, source: str) -> np.ndarray:
    storage = tensor.storage.array
    if storage is None:
        raise UserError(f"'{source}' is malformed: no data for tensor '{name}'")
    try:
        offset = int(tensor.offset)
        size = tuple(int(s) for s in tensor.size)
        stride = tuple(int(s) for s in tensor.stride)
    except (TypeError, ValueError):
        raise UserError(f"'{source}' is malformed: bad shape for tensor '{name}'") from None
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise UserError(f"'{source}' is malformed: bad shape/stride for tensor '{name}'")
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    # A weight never has more elements than its storage (only a zero or overlapping stride gives
    # that): a 420-byte file must not expand into a 16384x16384 array.
    elements = int(np.prod(size, dtype=object))
    if elements > storage.size:
        raise UserError(f"'{source}' is malformed: tensor '{name}' has {elements} elements, its storage {storage.size}")
    # as_strided does no bounds checking: a malformed file must not make it read foreign memory.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise UserError(f"'{source}' is malformed: tensor '{name}' reads past its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride], writeable=False)
    # The copy makes the array contiguous and independent of the (possibly shared) storage.
    return np.array(view, copy=True, order="C")


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict into numpy so conversion never needs PyTorch installed.

    Accepts both torch.save containers (zip and legacy) and a state dict nested under "state_dict"
    or "model" (training checkpoints); a "module." prefix from DataParallel is kept as is here.
    """
    if os.path.isdir(path):
        raise UserError(f"'{path}' is a directory, not a PyTorch weights file")
    if not os.path.isfile(path):
        raise UserError(f"PyTorch weights file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path)
        else:
            with open(path, "rb") as handle:
                head = handle.read(2)
                handle.seek(0)
                if head[:1] != b"\x80":
                    # tarfile.is_tarfile is slow-ish and only worth calling when pickle is ruled out.
                    if tarfile.is_tarfile(path):
                        raise UserError(f"'{path}' uses the pre-1.0 PyTorch tar format; "
                                             f"re-save it with a newer PyTorch")
                    raise UserError(f"'{path}' is not a PyTorch checkpoint (.pt zip or pickle)")
                obj = _load_legacy(path, handle)
    except UserError:
        raise
    except OSError as err:
        raise UserError(f"cannot read '{path}': {err.strerror or err}") from None
    except Exception as err:  # pickle / zip raise many types for a corrupt file
        raise UserError(f"'{path}' is not a readable PyTorch checkpoint "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''})") from None

    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise UserError(f"'{path}' does not hold a state dict (found {type(obj).__name__})")
    state: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, _PendingTensor):
            raise UserError(f"'{path}' is not a plain state dict: entry '{str(key)[:60]}' "
                                 f"is a {type(value).__name__}, not a tensor")
        state[key] = _materialize(value, key, path)
    if not state:
        raise UserError(f"'{path}' holds an empty state dict")
    return state


def _expected_state(arch: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Key -> (shape, dtype) of the paddle.vision model, the ground truth a conversion must meet."""
    import paddle  # deferred: reading a .pt must not pay for (or require) paddle
    from paddle.base.data_feeder import convert_dtype
    from paddle.vision import models

    # LazyGuard builds the layers without initialising ~70M random parameters (wide_resnet50_2).
    with paddle.LazyGuard():
        net = getattr(models, arch)()
    return {k: (tuple(v.shape), np.dtype(convert_dtype(v.dtype)))
            for k, v in net.state_dict().items()}


_FLAT_BLOCK_KEY = re.compile(r"^(features\.\d+\.conv\.)(\d+)\.(.+)$")
# The original MobileNetV2 code (and packages derived from it) puts each inverted-residual block in
# one flat Sequential (conv, bn, relu6, conv, bn, relu6, conv, bn); torchvision and paddle.vision
# group conv+bn+relu6 into a sub-Sequential. Same layers, same order, so only the names change.
_FLAT_TO_NESTED = {
    (0, 1, 3, 4): {0: "0.0", 1: "0.1", 3: "1", 4: "2"},  # expand_ratio 1: dw, pw-linear
    (0, 1, 3, 4, 6, 7): {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"},
}


def _nest_flat_mobilenet_blocks(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    blocks: dict[str, set[int]] = collections.defaultdict(set)
    nested: set[str] = set()
    for key in state:
        match = _FLAT_BLOCK_KEY.match(key)
        if match:
            blocks[match[1]].add(int(match[2]))
            if re.match(r"\d+\.", match[3]):
                nested.add(match[1])  # already conv.K.J.param: torchvision layout
    renames: dict[str, dict[int, str]] = {}
    for block, indices in blocks.items():
        if block in nested:
            continue
        mapping = _FLAT_TO_NESTED.get(tuple(sorted(indices)))
        if mapping is None:
            raise UserError(f"unrecognised MobileNetV2 block layout in '{block[:-1]}' "
                                 f"(layer indices {sorted(indices)})")
        renames[block] = mapping
    if not renames:
        return state
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        match = _FLAT_BLOCK_KEY.match(key)
        if match and match[1] in renames:
            key = f"{match[1]}{renames[match[1]][int(match[2])]}.{match[3]}"
        out[key] = value
    return out


def _rename(key: str) -> str | None:
    """torch parameter name -> paddle.vision name, None for buffers paddle does not have."""
    head, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
        return None  # BN step counter: only used by torch when momentum=None
    leaf = {"running_mean": "_mean", "running_var": "_variance"}.get(leaf, leaf)
    return f"{head}.{leaf}" if head else leaf


def _summary(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def convert_state_dict(torch_sd: dict[str, np.ndarray], arch: str,
                       log: Callable[[str], None] | None = print) -> dict[str, np.ndarray]:
    """Rename / re-lay-out a torchvision-style state dict so paddle.vision's `arch` accepts it.

    Checked against the paddle model itself (keys and shapes) so that a wrong arch or a foreign
    checkpoint fails here, with a clear message, instead of as silently random weights later.
    `log` gets one line on what was left unconverted (usually the classifier); None silences it.
    """
    spec = arch_spec(arch)
    state = dict(torch_sd)
    # nn.DataParallel checkpoints prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if arch == "mobilenet_v2":
        state = _nest_flat_mobilenet_blocks(state)

    converted: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = _rename(key)
        if name is None:
            continue
        if name in spec.linear_weights and np.ndim(value) == 2:
            value = np.ascontiguousarray(np.asarray(value).T)
        converted[name] = np.asarray(value)

    expected = _expected_state(arch)
    unknown = [k for k in converted if k not in expected]
    wrong = [f"{k} {converted[k].shape} vs paddle {expected[k][0]}"
             for k in converted if k in expected and converted[k].shape != expected[k][0]]
    missing = [k for k in expected if k not in converted]
    backbone_missing = [k for k in missing if not k.startswith(spec.classifier_prefix)]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} keys unknown to paddle ({_summary(unknown)})")
    if wrong:
        problems.append(f"{len(wrong)} wrongly shaped ({_summary(wrong, 2)})")
    if backbone_missing:
        problems.append(f"{len(backbone_missing)} backbone keys missing ({_summary(backbone_missing)})")
    if problems:
        raise UserError(f"checkpoint does not fit {arch}: " + "; ".join(problems))

    for key, value in converted.items():
        dtype = expected[key][1]
        if value.dtype != dtype:
            # Half / double checkpoints: paddle.vision models are float32 and set_state_dict does
            # not cast, so store what the model holds. Integer data in a float slot is a mismatch.
            if not (np.issubdtype(value.dtype, np.floating) and np.issubdtype(dtype, np.floating)):
                raise UserError(f"checkpoint does not fit {arch}: '{key}' is {value.dtype}, "
                                     f"paddle expects {dtype}")
            converted[key] = value.astype(dtype)
    if log is not None:
        note = f" ({_summary(missing)})" if missing else ""
        log(f"{arch}: converted {len(converted)} of {len(expected)} paddle keys; "
            f"{len(missing)} missing{note}")
    return converted


def _check_destination(dst: str) -> str:
    """The folder dst will be written in; checked up front so a bad --dst fails before the work."""
    folder = os.path.dirname(os.path.abspath(dst))
    if os.path.isdir(dst):
        raise UserError(f"cannot write '{dst}': it is a directory")
    if not os.path.isdir(folder):
        raise UserError(f"cannot write '{dst}': folder '{folder}' does not exist")
    return folder


def _save_atomic(state: dict[str, np.ndarray], dst: str) -> None:
    """paddle.save into a temporary file next to dst, then rename: readers never see half a file."""
    import paddle

    _check_destination(dst)
    try:
        with atomic_path(dst) as tmp:
            paddle.save(state, str(tmp))
    except OSError as err:
        raise UserError(f"cannot write '{dst}': {err.strerror or err}") from None


def convert_file(src: str, dst: str, arch: str,
                 log: Callable[[str], None] | None = print) -> dict[str, np.ndarray]:
    """Convert `src` (.pt) into `dst` (.pdparams) for paddle.vision's `arch`; returns what was saved."""
    arch_spec(arch)  # an unknown arch fails before a possibly large file is read
    _check_destination(dst)
    state = convert_state_dict(load_torch_state_dict(src), arch, log=log)
    _save_atomic(state, dst)
    if log is not None:
        log(f"wrote {dst}")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("Convert PyTorch (torchvision-layout) weights into a paddle.vision .pdparams file, "
                           "without PyTorch.")
    parser.add_argument("--src", required=True, help="PyTorch state dict (.pt / .pth)")
    parser.add_argument("--dst", required=True, help="output .pdparams")
    # Checked by convert_file rather than argparse choices: one consistent error line.
    parser.add_argument("--arch", required=True, help=f"one of {', '.join(ARCHS)}")
    args = parser.parse_args(argv)
    convert_file(args.src, args.dst, args.arch)
    return 0


if __name__ == "__main__":
    run_cli(main)
