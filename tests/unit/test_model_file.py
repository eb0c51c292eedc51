"""The model file: older formats still load, incomplete files are refused."""
import io
import json

import numpy as np
import pytest

from models.model_file import AnomalyModel
from utils.config import Config, DataConfig, ModelConfig
from utils.errors import UserError

# ResNet18 layer2+layer3 on a 16x16 crop: a 2x2 feature grid of 128 + 256 = 384 channels.
WIDTH = 384


def _small_config(method: str = "patchcore") -> Config:
    return Config(DataConfig(resize=16, crop_size=16), ModelConfig(arch="resnet18", method=method))


def test_version1_patchcore_files_still_load(tmp_path):
    bank = np.arange(16 * WIDTH, dtype=np.float32).reshape(16, WIDTH)
    old = {"format": "patchcore-paddle/1", "category": "part", "config": _small_config().to_dict(), "memory_bank": bank,
           "extractor_fingerprint": "abc", "feature_grid": [2, 2], "calibration": {}, "fit_stats": {}}
    np.testing.assert_array_equal(AnomalyModel.from_dict(old).arrays["memory_bank"], bank)
    stats = tmp_path / "stats.npz"
    meta = {k: v for k, v in old.items() if k != "memory_bank"}
    np.savez(stats, memory_bank=bank, meta=np.array(json.dumps(dict(meta, params_sha256="0f"))))
    model, binding = AnomalyModel.load_stats(stats)
    assert binding == {"params_sha256": "0f"} and model.method == "patchcore"
    np.testing.assert_array_equal(model.arrays["memory_bank"], bank)
    padim_without_arrays = dict(old, format="patchcore-paddle/2", arrays={"mean": bank})
    padim_without_arrays["config"]["model"]["method"] = "padim"
    with pytest.raises(UserError, match="field 'arrays.inv_covariance' is missing"):
        AnomalyModel.from_dict(padim_without_arrays)


def _valid_dict() -> dict:
    return {"format": "patchcore-paddle/2", "category": "part", "config": _small_config().to_dict(),
            "arrays": {"memory_bank": np.ones((16, WIDTH), np.float32)}, "extractor_fingerprint": "abc",
            "feature_grid": [2, 2], "calibration": {"image_threshold": np.float32(1.5)}, "fit_stats": {"n": 3}}


class _Hostile:
    """Unpickling this calls os.system, which writes the marker file."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_model_files_load_without_running_code(tmp_path):
    import pickle

    import paddle

    path = tmp_path / "part.pdparams"
    paddle.save(_valid_dict(), str(path))
    model = AnomalyModel.load(path)
    assert model.calibration == {"image_threshold": 1.5} and model.arrays["memory_bank"].shape == (16, WIDTH)
    # Files written under NumPy 1.x name numpy.core.multiarray (protocol 2 spells globals as text).
    old = pickle.dumps(_valid_dict(), protocol=2).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(old)
    assert AnomalyModel.load(path).category == "part"
    marker = tmp_path / "marker"
    for payload in ({**_valid_dict(), "x": _Hostile(marker)}, _Hostile(marker),
                    {**_valid_dict(), "arrays": {"memory_bank": np.array([_Hostile(marker)], dtype=object)}}):
        path.write_bytes(pickle.dumps(payload, protocol=4))
        with pytest.raises(UserError, match="refusing model file"):
            AnomalyModel.load(path)
    assert not marker.exists()
    for data in (b"", b"\x80\x04garbage", pickle.dumps(_valid_dict())[:100]):
        path.write_bytes(data)
        with pytest.raises(UserError, match="model file"):
            AnomalyModel.load(path)


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("config"), "config"),
    (lambda d: d.update(config={"data": {"resize": "256"}}), "config"),
    (lambda d: d.update(config={"model": {"k": float("nan")}}), "config"),
    (lambda d: d.update(config={"model": {"num_neighbors": 0}}), "config"),
    (lambda d: d.update(category=3), "category"),
    (lambda d: d.update(category="../x"), "category"),
    (lambda d: d.pop("extractor_fingerprint"), "extractor_fingerprint"),
    (lambda d: d.update(feature_grid=[2]), "feature_grid"),
    (lambda d: d.update(calibration={"image_threshold": float("nan")}), "calibration.image_threshold"),
    (lambda d: d.update(calibration=[1]), "calibration"),
    (lambda d: d.update(arrays=[1]), "arrays"),
    (lambda d: d.update(arrays={"memory_bank": np.ones(3, np.float32)}), "arrays.memory_bank"),
    (lambda d: d.update(arrays={"memory_bank": np.ones((0, 3), np.float32)}), "arrays.memory_bank"),
    (lambda d: d.update(arrays={"memory_bank": np.array([[1.0, np.nan]], np.float32)}), "arrays.memory_bank"),
    (lambda d: d.update(arrays={"memory_bank": np.array([["a"]])}), "arrays.memory_bank"),
])
def test_every_field_is_checked(change, field):
    raw = _valid_dict()
    change(raw)
    with pytest.raises(UserError, match=f"field '{field}'"):
        AnomalyModel.from_dict(raw)


def test_malformed_stats_files_are_one_line_errors(tmp_path):
    stats = tmp_path / "stats.npz"
    meta = {k: v for k, v in _valid_dict().items() if k != "arrays"}
    meta["calibration"] = {}
    cases = {"meta": {"memory_bank": np.ones((4, 3), np.float32)},
             "category": {"memory_bank": np.ones((4, 3)), "meta": np.array(json.dumps({**meta, "category": None}))},
             "params_sha256": {"memory_bank": np.ones((4, 3)), "meta": np.array(json.dumps({**meta, "params_sha256": 1}))},
             "arrays.memory_bank": {"memory_bank": np.ones(0), "meta": np.array(json.dumps(meta))}}
    for field, members in cases.items():
        np.savez(stats, **members)
        with pytest.raises(UserError, match=f"field '{field}'"):
            AnomalyModel.load_stats(stats)
    # A pickled member is refused, never unpickled.
    np.savez(stats, memory_bank=np.array([object()], dtype=object), meta=np.array(json.dumps(meta)))
    with pytest.raises(UserError, match="cannot read stats file"):
        AnomalyModel.load_stats(stats)


def test_stale_temporaries_of_killed_runs_are_removed_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from utils.io import atomic_path, remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".part.pid{dead_pid}.x1.tmp.pdparams").write_bytes(b"half")
    (tmp_path / f".export.pid{dead_pid}.x2").mkdir()
    old = tmp_path / ".part.x3.tmp.pdparams"        # older versions: no pid, judged by age
    old.write_bytes(b"half")
    os.utime(old, (0, 0))
    live = tmp_path / f".part.pid{os.getpid()}.x4.tmp.pdparams"
    live.write_bytes(b"in progress")
    (tmp_path / "part.pdparams").write_bytes(b"a real output")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([f".part.pid{dead_pid}.x1.tmp.pdparams", f".export.pid{dead_pid}.x2",
                                      ".part.x3.tmp.pdparams"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "part.pdparams"])
    with atomic_path(tmp_path / "out.txt") as tmp:
        assert f".pid{os.getpid()}." in tmp.name
        tmp.write_text("x")


def test_stats_binding_covers_program_params_and_arrays(tmp_path):
    from deploy.exported_model import load_exported_model

    model = AnomalyModel.from_dict(_valid_dict())
    program, params = tmp_path / "model.pdmodel", tmp_path / "model.pdiparams"
    program.write_bytes(b"program")
    params.write_bytes(b"params")
    from utils.io import file_sha256

    stats = tmp_path / "stats.npz"
    model.save_stats(stats, {"program_sha256": file_sha256(program), "params_sha256": file_sha256(params)})
    assert load_exported_model(str(stats), str(params), str(program)).category == "part"
    program.write_bytes(b"another program")
    with pytest.raises(UserError, match="was not exported with .*model.pdmodel"):
        load_exported_model(str(stats), str(params), str(program))
    program.write_bytes(b"program")
    with np.load(stats) as data:
        members = {k: data[k] for k in data.files}
    members["memory_bank"] = members["memory_bank"] * 2   # a bank edited after the export
    np.savez(stats, **members)
    with pytest.raises(UserError, match="arrays were changed after export"):
        load_exported_model(str(stats), str(params), str(program))


def test_one_run_at_a_time_per_output_folder(tmp_path):
    import os

    from utils.io import output_lock

    with output_lock(tmp_path):
        with pytest.raises(UserError, match=f"another run \\(pid {os.getpid()}\\) is writing to"):
            with output_lock(tmp_path):
                pass
    assert not any(tmp_path.iterdir())          # the lock file goes with the run
    (tmp_path / ".lock").write_text("pid 1")    # left by a killed run: not locked any more
    with output_lock(tmp_path):
        pass


class _Declared:
    """Pickles as numpy.ndarray(shape, dtype): an uninitialised array of any size from a few bytes."""
    def __init__(self, shape, dtype="i1", via_reconstruct=False):
        self.shape, self.dtype, self.via_reconstruct = shape, dtype, via_reconstruct

    def __reduce__(self):
        if self.via_reconstruct:
            return np.zeros(1).__reduce__()[0], (np.ndarray, self.shape, np.dtype(self.dtype).char.encode())
        return np.ndarray, (self.shape, self.dtype)


def test_declared_array_sizes_are_bounded_by_the_file_before_allocation(tmp_path):
    """A 1.3 KB model file declaring a 1 GiB bank (numpy.ndarray or _reconstruct with a shape) or a
    zero-stride view is refused from the shape alone; so are npz members whose header declares more
    than the member holds (a truncated header, a deflate bomb)."""
    import pickle
    import time
    import zipfile

    path = tmp_path / "part.pdparams"
    for array in (_Declared((2**24, 64)), _Declared((2**24, 64), via_reconstruct=True),
                  _Declared((2**30,), "V1")):
        path.write_bytes(pickle.dumps({**_valid_dict(), "arrays": {"memory_bank": array}}, protocol=4))
        assert path.stat().st_size < 2000
        start = time.perf_counter()
        with pytest.raises(UserError, match="refusing model file .*declares shape"):
            AnomalyModel.load(path)
        assert time.perf_counter() - start < 1.0
    path.write_bytes(pickle.dumps({**_valid_dict(), "arrays": {"memory_bank": _Strided()}}, protocol=4))
    with pytest.raises(UserError, match="buffer or strides"):
        AnomalyModel.load(path)
    meta = np.array(json.dumps({k: v for k, v in _valid_dict().items() if k != "arrays"} | {"calibration": {}},
                               default=float))
    stats = tmp_path / "stats.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**26, WIDTH)})
    with zipfile.ZipFile(stats, "w") as archive:
        archive.writestr("memory_bank.npy", header.getvalue() + bytes(64))
        archive.writestr("meta.npy", _npy(meta))
    with pytest.raises(UserError, match=r"memory_bank.npy declares shape \[67108864, 384\] .* holds only 64 bytes"):
        AnomalyModel.load_stats(stats)
    with zipfile.ZipFile(stats, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("memory_bank.npy", _npy(np.zeros((2**16, WIDTH), np.float32)))    # 96 MiB of zeros
        archive.writestr("meta.npy", _npy(meta))
    assert stats.stat().st_size < 200_000
    with pytest.raises(UserError, match="memory_bank.npy declares shape"):
        AnomalyModel.load_stats(stats)


class _Strided:
    def __reduce__(self):
        return np.ndarray, ((2**14, 2**14), "f4", b"\0" * 4, 0, (0, 0))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(arrays={"memory_bank": np.ones((16, 64), np.float32)}), r"'arrays.memory_bank' has shape \[16, 64\]"),
    (lambda d: d.update(arrays={"memory_bank": np.ones((1, WIDTH), np.float32)}), "has 1 entries, fewer than the 9"),
    (lambda d: d.update(feature_grid=[200, 200]), "'feature_grid' is"),
    (lambda d: d["config"]["data"].update(resize=1_000_000), "resize 1000000x1000000 .* needs at least"),
    (lambda d: d.update(calibration={"image_threshold": "high"}), "'calibration.image_threshold' is not a finite"),
])
def test_arrays_geometry_and_thresholds_are_checked_against_the_settings(change, message):
    raw = _valid_dict()
    change(raw)
    with pytest.raises(UserError, match=message):
        AnomalyModel.from_dict(raw)


def test_settings_and_thresholds_are_covered_by_the_files_hash(tmp_path, capsys):
    model = AnomalyModel.from_dict(_valid_dict())
    model.calibration = {"image_threshold": 1.5, "pixel_threshold": 2.0, "image_rule": "by hand"}
    # As the Python API may hold them: an int k, a square size as a pair, an int count.
    model.config.model.k, model.config.data.resize, model.fit_stats = 10, (16, 16), {"n": 3}
    model.save(tmp_path / "part.pdparams")
    model.save_stats(tmp_path / "stats.npz", {"params_sha256": "0f"})
    assert AnomalyModel.load(tmp_path / "part.pdparams").calibration["image_threshold"] == 1.5
    assert AnomalyModel.load_stats(tmp_path / "stats.npz")[0].calibration["pixel_threshold"] == 2.0
    assert capsys.readouterr().err == ""
    with np.load(tmp_path / "stats.npz") as data:
        members = {name: data[name] for name in data.files}
    meta = json.loads(str(members["meta"]))
    for edit in ({"calibration": {**meta["calibration"], "image_threshold": 1e9}},
                 {"config": {**meta["config"], "model": {**meta["config"]["model"], "image_score": "max"}}}):
        np.savez(tmp_path / "edited.npz", **{**members, "meta": np.array(json.dumps({**meta, **edit}))})
        with pytest.raises(UserError, match="changed after it was written .*export it again"):
            AnomalyModel.load_stats(tmp_path / "edited.npz")
    # A file written before the hash existed still loads, with one warning line saying what to do.
    del meta["settings_sha256"]
    np.savez(tmp_path / "old.npz", **{**members, "meta": np.array(json.dumps(meta))})
    assert AnomalyModel.load_stats(tmp_path / "old.npz")[0].calibration["image_threshold"] == 1.5
    warning = capsys.readouterr().err.splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning:") and "export it again" in warning[0]
