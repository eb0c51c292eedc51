"""PatchCore: fit a coreset memory bank on good images, score new images against it."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import paddle
from tqdm import tqdm

from models.feature_extractor import PatchFeatureExtractor, build_extractor
from models.sampling import coreset_size, greedy_coreset, random_projection
from models.scorer import PatchCoreScorer, Scores
from utils.config import Config
from utils.errors import PatchCoreError
from utils.io import atomic_path

FORMAT = "patchcore-paddle/1"


def iterate_batches(dataset: Any, batch_size: int, desc: str, progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, masks, labels) numpy batches in dataset order, with a progress bar."""
    indices = range(0, len(dataset), batch_size)
    for start in tqdm(indices, desc=desc, unit="batch", disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield (np.stack([it[0] for it in items]), np.stack([it[1] for it in items]),
               np.array([it[2] for it in items], dtype=np.int64))


def extract(extractor: PatchFeatureExtractor, images: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return extractor(paddle.to_tensor(images)).numpy()


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

    def build_extractor(self, pretrained: str | None = None) -> PatchFeatureExtractor:
        """Rebuild the extractor the bank was made with, and prove it is the same one."""
        extractor = build_extractor(self.config.model, pretrained)
        if extractor.fingerprint() != self.extractor_fingerprint:
            raise PatchCoreError(
                f"backbone weights ({pretrained or self.config.model.pretrained}) differ from the ones "
                f"this model was trained with; pass the same --pretrained as for training")
        return extractor

    def check_arch(self, arch: str | None) -> None:
        if arch and arch != self.config.model.arch:
            raise PatchCoreError(f"model for category '{self.category}' was trained with --arch "
                                 f"{self.config.model.arch}, not {arch}")


def fit(extractor: PatchFeatureExtractor, train_set: Any, config: Config, category: str,
        batch_size: int = 8, progress: bool = True) -> PatchCoreModel:
    """Extract every training patch, keep a greedy coreset of k percent of them."""
    start = time.perf_counter()
    chunks = [extract(extractor, images) for images, _, _ in
              iterate_batches(train_set, batch_size, f"{category}: features", progress)]
    embedding = np.concatenate(chunks)
    n_img, channels, height, width = embedding.shape
    patches = np.ascontiguousarray(embedding.transpose(0, 2, 3, 1).reshape(-1, channels))
    del chunks, embedding
    extracted = time.perf_counter()

    m = config.model
    n_keep = coreset_size(len(patches), m.k)
    if n_keep < len(patches):
        projected = random_projection(patches, m.projection_dim, m.seed)
        selected = greedy_coreset(projected, n_keep, m.seed, progress=progress)
        bank = patches[np.sort(selected)]
    else:
        bank = patches
    done = time.perf_counter()
    stats = {"train_images": float(n_img), "train_patches": float(len(patches)), "bank_size": float(len(bank)),
             "feature_seconds": extracted - start, "coreset_seconds": done - extracted}
    return PatchCoreModel(config, category, bank, extractor.fingerprint(), (height, width), fit_stats=stats)


def score_batches(model: PatchCoreModel, extractor: PatchFeatureExtractor, dataset: Any, batch_size: int = 8,
                  progress: bool = True) -> tuple[Scores, np.ndarray, np.ndarray]:
    """Score a whole dataset: (Scores, masks [N,H,W], labels [N])."""
    scorer = model.scorer()
    parts, masks, labels = [], [], []
    for images, batch_masks, batch_labels in iterate_batches(dataset, batch_size, f"{model.category}: scoring", progress):
        parts.append(scorer(extract(extractor, images)))
        masks.append(batch_masks)
        labels.append(batch_labels)
    scores = Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("image_scores", "anomaly_maps", "patch_scores")))
    return scores, np.concatenate(masks), np.concatenate(labels)
