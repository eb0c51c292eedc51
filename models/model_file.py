"""The trained-model file: settings, the method's arrays, calibration; light enough for deployment.

Two containers hold the same content: `<category>.pdparams` (paddle.save, written by train.py) and
the deployment stats file `stats.npz` (plain numpy + JSON, written by export_model.py and read by
infer.py without any training code). The arrays depend on the method: PatchCore keeps its memory
bank, PaDiM a mean [P, C] and an inverse covariance [P, C, C] per feature-grid position.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import paddle

from models.registry import METHODS
from models.scoring import Scores, check_magnitude
from models.shapes import array_shape_problem, check_image_memory
from utils.config import Config
from utils.errors import UserError, first_line
from utils.io import atomic_path, is_safe_name
from utils.safe_pickle import check_nesting, load_plain_pickle

FORMAT = "patchcore-paddle/2"
# Version 1 (PatchCore only) stored the memory bank at the top level; such files still load.
LEGACY_FORMAT = "patchcore-paddle/1"

Scorer = Callable[[np.ndarray], Scores]

# What ties a stats file to its export: SHA-256 of the exported program file, of the parameters
# file, of the method's arrays (arrays_sha256) and of the ONNX file where one was exported.
BINDING_KEYS = ("program_sha256", "params_sha256", "arrays_sha256", "onnx_sha256", "onnx_full_sha256")
# Both files also hold the SHA-256 of every other field (AnomalyModel.settings_sha256), so that
# a threshold or a geometry edited by hand is refused rather than silently used.
SETTINGS_HASH = "settings_sha256"


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Hash of a model's arrays (names, shapes and float32 values), as stored in the stats file."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name], dtype=np.float32)
        digest.update(f"{name}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def model_path(save_path: str | os.PathLike, category: str) -> str:
    """Where train.py writes, and eval / predict / export look for, a category's model."""
    if not is_safe_name(category):
        raise UserError(f"category '{category}' is not a plain folder name (no '/', '..' or leading '.')")
    return os.path.join(save_path, f"{category}.pdparams")


class EmbeddingStream(NamedTuple):
    """The training embeddings [B, C, h, w] a fit consumes, batch by batch, and how many images they cover."""
    batches: Iterable[np.ndarray]
    n_images: int


class FitResult(NamedTuple):
    """What a method's fit produces; the pipeline adds settings, category and extractor fingerprint.

    `training_embeddings(batch_size)` replays the training embeddings from memory where the fit kept
    them anyway (PatchCore), so calibration need not extract them again; None where it did not.
    """
    arrays: dict[str, np.ndarray]
    feature_grid: tuple[int, int]
    fit_stats: dict[str, float]
    training_embeddings: Callable[[int], Iterator[np.ndarray]] | None = None
    # The training image (index in fit order) each memory-bank entry came from (PatchCore), for the
    # leave-own-image-out calibration; None where the method has no bank.
    entry_images: np.ndarray | None = None


@dataclass
class AnomalyModel:
    """Everything needed to score a category with either method: settings, arrays, which extractor."""
    config: Config
    category: str
    arrays: dict[str, np.ndarray]
    extractor_fingerprint: str
    feature_grid: tuple[int, int]
    calibration: dict[str, float] = field(default_factory=dict)
    fit_stats: dict[str, float] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.config.model.method

    @property
    def title(self) -> str:
        """The method's display name (PatchCore, PaDiM)."""
        return METHODS[self.method].title

    def scorer(self, array_lib: str = "numpy", product_threads: int = 1) -> Scorer:
        """The method's scorer; array_lib "paddle" runs PatchCore's kNN as Paddle ops on the current device.

        product_threads: threads sharing the memory bank's full-product tiles (models.scoring.ScoringOptions):
        1 (the default) in a process that runs Paddle's dynamic graph."""
        return METHODS[self.method].build_scorer(self.arrays, self.config, array_lib, product_threads)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "category": self.category, "config": self.config.to_dict(),
                "arrays": dict(self.arrays), "extractor_fingerprint": self.extractor_fingerprint,
                "feature_grid": list(self.feature_grid), "calibration": dict(self.calibration),
                "fit_stats": dict(self.fit_stats)}

    @classmethod
    def from_dict(cls, raw: Any, source: str = "model") -> "AnomalyModel":
        """Build a model from a stored dict, checking every field: a bad one is a UserError naming it."""
        if not isinstance(raw, dict) or raw.get("format") not in (FORMAT, LEGACY_FORMAT):
            raise UserError(f"{source} is not a PatchCore-Paddle model file")

        def bad(name: str, problem: str) -> UserError:
            return UserError(f"{source}: field '{name}' {problem}")

        for name in ("category", "extractor_fingerprint"):
            if not isinstance(raw.get(name), str) or not raw[name]:
                raise bad(name, "is missing or not a non-empty string")
        if not is_safe_name(raw["category"]):
            raise bad("category", f"is not a plain folder name: {raw['category']!r:.60}")
        if "config" not in raw:
            raise bad("config", "is missing")
        try:
            config = Config.from_dict(raw["config"])
        except ValueError as err:
            raise bad("config", f"is invalid: {err}") from None
        if config.model.method not in METHODS:
            raise UserError(f"{source} is a model of unknown method '{config.model.method}'")
        spec = METHODS[config.model.method]
        try:
            spec.check_settings(config.model)
        except ValueError as err:
            raise bad("config", f"is invalid: {err}") from None
        grid = raw.get("feature_grid")
        if (not isinstance(grid, (list, tuple)) or len(grid) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in grid)):
            raise bad("feature_grid", "is missing or not two positive integers")
        tables = {name: _number_table(raw.get(name, {}), name, bad) for name in ("calibration", "fit_stats")}
        stored = raw["arrays"] if "arrays" in raw else {"memory_bank": raw.get("memory_bank")}
        if not isinstance(stored, dict):
            raise bad("arrays", "is missing or not a dict")
        arrays = {}
        for name, rank in zip(spec.arrays, spec.array_ranks or (None,) * len(spec.arrays)):
            arrays[name] = _checked_array(stored.get(name), rank, f"arrays.{name}", bad)
        for name, rank in spec.update_arrays:
            if name in stored:
                arrays[name] = _checked_array(stored[name], rank, f"arrays.{name}", bad, dtype=np.float64)
        # Before any index is built or image resized (the arrays themselves are bounded by the file's
        # size): a wrong width was found minutes into building a kNN index, a huge geometry only by
        # the first image's resize, gigabytes later.
        problem = array_shape_problem(config, (int(grid[0]), int(grid[1])),
                                      {name: value.shape for name, value in arrays.items()})
        if problem:
            raise UserError(f"{source}: {problem}")
        try:
            check_image_memory(config)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None
        return cls(config=config, category=raw["category"], arrays=arrays,
                   extractor_fingerprint=raw["extractor_fingerprint"], feature_grid=(int(grid[0]), int(grid[1])),
                   calibration=tables["calibration"], fit_stats=tables["fit_stats"])

    def settings_sha256(self) -> str:
        """Hash of every field but the arrays (settings, geometry, calibrated thresholds, category...):
        what decides a verdict besides the arrays, which have their own hash (arrays_sha256)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("arrays", "format")}
        # As a load will see them: settings normalised as Config.from_dict stores them (a square
        # [64, 64] is 64, unknown fields dropped) and every number as a float (10 and 10.0 are one k).
        fields["config"] = Config.from_dict(fields["config"]).to_dict()
        text = json.dumps(_canonical(fields), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def check_settings_hash(self, stored: Any, source: str, redo: str) -> None:
        """Refuse settings edited after the file was written (the hash was not made again); files
        written before the hash existed load with a warning line saying how to get one."""
        if stored is None:
            print(f"warning: {source} has no settings hash (written before it existed): its settings and "
                  f"thresholds are used unchecked; {redo} to have them checked", file=sys.stderr)
        elif stored != self.settings_sha256():
            raise UserError(f"{source}: its settings or thresholds were changed after it was written "
                            f"(field '{SETTINGS_HASH}' does not match); {redo}")

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            paddle.save({**self.to_dict(), SETTINGS_HASH: self.settings_sha256()}, str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AnomalyModel":
        if not os.path.isfile(path):
            raise UserError(f"model file not found: {path}")
        # Not paddle.load: that is plain pickle, and a downloaded model file could run code.
        raw, source = load_plain_pickle(path, "model file"), f"model file '{path}'"
        model = cls.from_dict(raw, source=source)
        model.check_settings_hash(raw.get(SETTINGS_HASH), source, "train it again")
        return model

    def check_arch(self, arch: str | None) -> None:
        if arch and arch != self.config.model.arch:
            raise UserError(f"model for category '{self.category}' was trained with --arch "
                                 f"{self.config.model.arch}, not {arch}")

    def save_stats(self, path: str | os.PathLike, binding: dict[str, str]) -> None:
        """The deployment stats file; `binding` (BINDING_KEYS but arrays_sha256, added here) ties it to
        one export's program and parameters files."""
        meta = {k: v for k, v in self.to_dict().items() if k != "arrays"}
        # Only what scoring needs: the running sums kept for updates stay in the training file.
        scoring = {name: self.arrays[name] for name in METHODS[self.method].arrays}
        meta.update(binding, arrays_sha256=arrays_sha256(scoring), **{SETTINGS_HASH: self.settings_sha256()})
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                # Each array is its own npz member (a PatchCore file keeps the version 1 layout).
                np.savez(f, **scoring, meta=np.array(json.dumps(meta)))

    @classmethod
    def load_stats(cls, path: str | os.PathLike) -> tuple["AnomalyModel", dict[str, str]]:
        """(model, binding) from a stats file written by save_stats; binding holds the BINDING_KEYS
        the file has (stats files written before program/arrays hashes existed hold only params_sha256)."""
        if not os.path.isfile(path):
            raise UserError(f"stats file not found: {path}")
        source = f"stats file '{path}'"
        try:
            check_npz_sizes(path, source)
            # allow_pickle=False: an npz member holding pickled objects is refused, never unpickled.
            with np.load(path, allow_pickle=False) as data:
                if "meta" not in data.files:
                    raise UserError(f"{source}: field 'meta' is missing")
                meta = json.loads(str(data["meta"]))
                check_nesting(meta)     # as for pickles: deep JSON would end in a RecursionError later
                arrays = {name: data[name] for name in data.files if name != "meta"}
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"cannot read {source}: {first_line(err)}") from None
        if not isinstance(meta, dict):
            raise UserError(f"{source}: field 'meta' is not a JSON object")
        for key in BINDING_KEYS:
            if not isinstance(meta.get(key, ""), str):
                raise UserError(f"{source}: field '{key}' is not a string")
        binding = {key: meta[key] for key in BINDING_KEYS if meta.get(key)}
        meta["arrays"] = arrays
        model = cls.from_dict(meta, source=source)
        model.check_settings_hash(meta.get(SETTINGS_HASH), source, "export it again with export_model.py")
        return model, binding


def _canonical(value: Any) -> Any:
    """`value` with tuples as lists and every number (Python or NumPy, not bool) as a float."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    return value


# A compressed npz member may expand at most this much (float features compress by 1.1x; a deflate
# bomb by 1000x). export_model.py stores members uncompressed (np.savez).
MAX_COMPRESSION_RATIO = 20


def check_npz_sizes(path: str | os.PathLike, source: str) -> None:
    """UserError unless every array in the npz at `path` declares no more bytes than its member
    holds: read from the .npy headers, before np.load allocates what they declare."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                held = info.file_size - member.tell()
            declared = dtype.itemsize * math.prod(shape)
            if info.compress_type != zipfile.ZIP_STORED:
                held = min(held, MAX_COMPRESSION_RATIO * info.compress_size)
            if declared > held:
                raise UserError(f"{source}: member {info.filename} declares shape {list(shape)} ({declared} bytes) but holds "
                                f"only {held} bytes")


def _number_table(value: Any, name: str, bad: Callable[[str, str], UserError]) -> dict[str, Any]:
    """A {str: finite number or text} field (calibration, fit_stats); numbers come back as float.

    In the calibration only the `*_rule` entries (how a threshold was set) may be text: every other
    entry (thresholds, score ranges) decides verdicts and must be a finite number.
    """
    if not isinstance(value, dict):
        raise bad(name, "is not a dict")
    table: dict[str, Any] = {}
    for key, entry in value.items():
        if not isinstance(key, str):
            raise bad(name, f"has a non-text key {key!r:.60}")
        if isinstance(entry, str) and (name != "calibration" or key.endswith("_rule")):
            table[key] = entry
        elif isinstance(entry, (int, float, np.number)) and not isinstance(entry, bool) and np.isfinite(entry):
            table[key] = float(entry)
        else:
            # A NaN threshold would make every comparison false: every image 'normal'.
            raise bad(f"{name}.{key}", f"is not a finite number: {entry!r:.60}")
    return table


def _checked_array(value: Any, rank: int | None, name: str, bad: Callable[[str, str], UserError],
                   dtype: type = np.float32) -> np.ndarray:
    """A non-empty, finite float array of the expected rank, as `dtype`."""
    if value is None:
        raise bad(name, "is missing")
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise bad(name, f"is not a numeric array ({type(value).__name__})")
    if rank is not None and value.ndim != rank:
        raise bad(name, f"has {value.ndim} dimensions, expected {rank} (shape {value.shape})")
    if value.size == 0:
        raise bad(name, f"is empty (shape {value.shape})")
    array = value.astype(dtype, copy=False)
    if not np.isfinite(array).all():
        # One NaN would make every distance NaN and every image silently 'normal'.
        raise bad(name, "holds NaN or infinite values")
    problem = check_magnitude(array) if dtype == np.float32 else None   # float64 sums are never scored
    if problem:
        raise bad(name, problem)
    return array
