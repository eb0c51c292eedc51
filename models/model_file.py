"""The trained-model file: settings, the method's arrays, calibration; light enough for deployment.

Two containers hold the same content: `<category>.pdparams` (paddle.save, written by train.py) and
the deployment stats file `stats.npz` (plain numpy + JSON, written by export_model.py and read by
infer.py without any training code). The arrays depend on the method: PatchCore keeps its memory
bank, PaDiM a mean [P, C] and an inverse covariance [P, C, C] per feature-grid position.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import paddle

from models.registry import METHODS
from models.scoring import Scores
from utils.config import Config
from utils.errors import UserError
from utils.io import atomic_path

FORMAT = "patchcore-paddle/2"
# Version 1 (PatchCore only) stored the memory bank at the top level; such files still load.
LEGACY_FORMAT = "patchcore-paddle/1"

Scorer = Callable[[np.ndarray], Scores]


def model_path(save_path: str | os.PathLike, category: str) -> str:
    """Where train.py writes, and eval / predict / export look for, a category's model."""
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

    def scorer(self, backend: str = "numpy") -> Scorer:
        """The method's scorer; backend "paddle" runs PatchCore's kNN as Paddle ops on the current device."""
        return METHODS[self.method].build_scorer(self.arrays, self.config, backend)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "category": self.category, "config": self.config.to_dict(),
                "arrays": dict(self.arrays), "extractor_fingerprint": self.extractor_fingerprint,
                "feature_grid": list(self.feature_grid), "calibration": dict(self.calibration),
                "fit_stats": dict(self.fit_stats)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "model") -> "AnomalyModel":
        if not isinstance(raw, dict) or raw.get("format") not in (FORMAT, LEGACY_FORMAT):
            raise UserError(f"{source} is not a PatchCore-Paddle model file")
        config = Config.from_dict(raw["config"])
        if config.model.method not in METHODS:
            raise UserError(f"{source} is a model of unknown method '{config.model.method}'")
        stored = raw.get("arrays") or {"memory_bank": raw.get("memory_bank")}
        names = METHODS[config.model.method].arrays
        missing = [name for name in names if stored.get(name) is None]
        if missing:
            raise UserError(f"{source} lacks the {config.model.method} array '{missing[0]}'")
        return cls(config=config, category=raw["category"],
                   arrays={name: np.asarray(stored[name], dtype=np.float32) for name in names},
                   extractor_fingerprint=raw["extractor_fingerprint"],
                   feature_grid=tuple(raw["feature_grid"]), calibration=dict(raw.get("calibration", {})),
                   fit_stats=dict(raw.get("fit_stats", {})))

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            paddle.save(self.to_dict(), str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AnomalyModel":
        if not os.path.isfile(path):
            raise UserError(f"model file not found: {path}")
        try:
            raw = paddle.load(str(path), return_numpy=True)
        except Exception as err:
            raise UserError(f"cannot read model file '{path}': {str(err).splitlines()[0][:160]}") from None
        return cls.from_dict(raw, source=f"'{path}'")

    def check_arch(self, arch: str | None) -> None:
        if arch and arch != self.config.model.arch:
            raise UserError(f"model for category '{self.category}' was trained with --arch "
                                 f"{self.config.model.arch}, not {arch}")

    def save_stats(self, path: str | os.PathLike, params_sha256: str) -> None:
        """The deployment stats file; `params_sha256` ties it to one exported model.pdiparams."""
        meta = {k: v for k, v in self.to_dict().items() if k != "arrays"}
        meta["params_sha256"] = params_sha256
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                # Each array is its own npz member (a PatchCore file keeps the version 1 layout).
                np.savez(f, **self.arrays, meta=np.array(json.dumps(meta)))

    @classmethod
    def load_stats(cls, path: str | os.PathLike) -> tuple["AnomalyModel", str]:
        """(model, params_sha256) from a stats file written by save_stats."""
        if not os.path.isfile(path):
            raise UserError(f"stats file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in data.files if name != "meta"}
        except Exception as err:
            raise UserError(f"cannot read stats file '{path}': {str(err).splitlines()[0][:160]}") from None
        meta["arrays"] = arrays
        return cls.from_dict(meta, source=f"'{path}'"), str(meta.get("params_sha256", ""))
