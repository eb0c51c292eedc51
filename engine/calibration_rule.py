"""Where a fitted or updated model's thresholds come from: one rule for train.py and --update.

1. held-out good images (a model trained with --val_ratio > 0): the quantiles of their scores
   (models.calibration.calibrate_held_out);
2. else, with --eval, the labelled test split: its F1-optimal thresholds;
3. else the highest score of a good training image (over every worker's images).

An update never lowers a threshold placed by rule 1 or 3: the images behind the old threshold are
not scored again, and the larger bank can only lower their scores, so the old value still bounds
them (rule 2 sees labels and is taken as it is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from datasets.mvtec import MVTecDataset, held_out_split
from engine.evaluation import evaluate
from engine.outputs import CategoryOutputs
from engine.pipeline import score_batches
from engine.settings import RunSettings
from models.calibration import calibrate, calibrate_held_out
from models.feature_extractor import PatchFeatureExtractor
from models.model_file import AnomalyModel
from models.scoring import Scores
from models.sharding import Shard
from utils.config import ModelConfig

HELD_OUT, TEST_SPLIT, GOOD_IMAGES = "held-out good images", "labelled test split", "highest good score"
THRESHOLD_KEYS = ("image_threshold", "pixel_threshold", "image_max", "pixel_max")


@dataclass
class GoodImages:
    """A category's good training images, split (seeded) into the fitted ones and the held-out ones."""
    fitted: MVTecDataset
    held_out: MVTecDataset

    @classmethod
    def split(cls, good: MVTecDataset, m: ModelConfig) -> "GoodImages":
        fitted, held_out = held_out_split(len(good), m.val_ratio, m.seed)
        return cls(good.subset(fitted), good.subset(held_out))


def calibration_rule(images: GoodImages, run: RunSettings) -> str:
    if len(images.held_out):
        return HELD_OUT
    return TEST_SPLIT if run.run_eval else GOOD_IMAGES


def calibrate_and_evaluate(model: AnomalyModel, extractor: PatchFeatureExtractor, images: GoodImages,
                           run: RunSettings, outputs: CategoryOutputs,
                           good_scores: Callable[[], tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Set model.calibration by the rule; with --eval, evaluate (staging its files in `outputs`).

    `good_scores()`: the fitted images' (image scores, maps or their extremes) over every worker,
    asked for only by rule 3. Returns the results row (metrics when evaluated).
    """
    rule = calibration_rule(images, run)
    if rule == HELD_OUT:
        # Thresholds from good images the model has not seen; evaluation reports how they do.
        m = model.config.model
        scores = score_batches(model, extractor, images.held_out, run)[0]
        model.calibration = calibrate_held_out(scores.image_scores, scores.anomaly_maps, m.max_false_reject,
                                               m.pixel_false_reject)
    row: dict[str, Any] = {"category": model.category}
    if run.run_eval:
        row, test_calibration = evaluate(model, extractor, run, outputs)
        if rule == TEST_SPLIT:
            model.calibration = test_calibration
    if rule == GOOD_IMAGES:
        model.calibration = calibrate(*good_scores())
    return row


def gathered_good_scores(scores: Scores, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
    """Rule 3's input over every rank's training images: the images' scores and the range of their
    maps (all the rule needs; a plain run passes its maps as they are)."""
    if shard.world_size == 1:
        return scores.image_scores, scores.anomaly_maps
    maps = scores.anomaly_maps
    extremes = shard.gather_rows(np.array([maps.min(), maps.max()], dtype=maps.dtype))
    return shard.gather_rows(scores.image_scores), extremes


def never_below(calibration: dict[str, Any], previous: dict[str, Any], rule: str) -> dict[str, Any]:
    """An update's thresholds: rules 1 and 3 keep at least the previous values (see the module doc)."""
    if rule == TEST_SPLIT:
        return calibration
    kept = dict(calibration)
    for key in THRESHOLD_KEYS:
        if key in kept and key in previous:
            kept[key] = max(kept[key], previous[key])
    for kind in ("image", "pixel"):
        if kept.get(f"{kind}_threshold") != calibration.get(f"{kind}_threshold"):
            kept[f"{kind}_rule"] = f"{calibration.get(f'{kind}_rule', '')}; kept at the previous threshold"
    return kept
