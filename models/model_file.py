"""The trained-model file: settings, memory bank, calibration; light enough for deployment.

Two containers hold the same content: `<category>.pdparams` (paddle.save, written by train.py) and
the deployment stats file `stats.npz` (plain numpy + JSON, written by export_model.py and read by
infer.py without any training code).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle

from models.scorer import PatchCoreScorer
from utils.config import Config
from utils.errors import PatchCoreError
from utils.io import atomic_path

FORMAT = "patchcore-paddle/1"


@dataclass
class PatchCoreModel:
    """Everything needed to score a category: settings, memory bank, which extractor made it."""
    config: Config
    category: str
    memory_bank: np.ndarray
    extractor_fingerprint: str
    feature_grid: tuple[int, int]
    calibration: dict[str, float] = field(default_factory=dict)
    fit_stats: dict[str, float] = field(default_factory=dict)

    def scorer(self) -> PatchCoreScorer:
        m = self.config.model
        return PatchCoreScorer(self.memory_bank, self.config.data.crop_size, m.num_neighbors, m.image_score, m.sigma)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "category": self.category, "config": self.config.to_dict(),
                "memory_bank": self.memory_bank, "extractor_fingerprint": self.extractor_fingerprint,
                "feature_grid": list(self.feature_grid), "calibration": dict(self.calibration),
                "fit_stats": dict(self.fit_stats)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "model") -> "PatchCoreModel":
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise PatchCoreError(f"{source} is not a PatchCore-Paddle model file")
        return cls(config=Config.from_dict(raw["config"]), category=raw["category"],
                   memory_bank=np.asarray(raw["memory_bank"], dtype=np.float32),
                   extractor_fingerprint=raw["extractor_fingerprint"],
                   feature_grid=tuple(raw["feature_grid"]), calibration=dict(raw.get("calibration", {})),
                   fit_stats=dict(raw.get("fit_stats", {})))

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            paddle.save(self.to_dict(), str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PatchCoreModel":
        if not os.path.isfile(path):
            raise PatchCoreError(f"model file not found: {path}")
        try:
            raw = paddle.load(str(path), return_numpy=True)
        except Exception as err:
            raise PatchCoreError(f"cannot read model file '{path}': {str(err).splitlines()[0][:160]}") from None
        return cls.from_dict(raw, source=f"'{path}'")

    def check_arch(self, arch: str | None) -> None:
        if arch and arch != self.config.model.arch:
            raise PatchCoreError(f"model for category '{self.category}' was trained with --arch "
                                 f"{self.config.model.arch}, not {arch}")

    def save_stats(self, path: str | os.PathLike, params_sha256: str) -> None:
        """The deployment stats file; `params_sha256` ties it to one exported model.pdiparams."""
        meta = {k: v for k, v in self.to_dict().items() if k != "memory_bank"}
        meta["params_sha256"] = params_sha256
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, memory_bank=self.memory_bank, meta=np.array(json.dumps(meta)))

    @classmethod
    def load_stats(cls, path: str | os.PathLike) -> tuple["PatchCoreModel", str]:
        """(model, params_sha256) from a stats file written by save_stats."""
        if not os.path.isfile(path):
            raise PatchCoreError(f"stats file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                meta["memory_bank"] = data["memory_bank"]
        except Exception as err:
            raise PatchCoreError(f"cannot read stats file '{path}': {str(err).splitlines()[0][:160]}") from None
        return cls.from_dict(meta, source=f"'{path}'"), str(meta.get("params_sha256", ""))
