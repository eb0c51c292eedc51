"""Where a fitted or updated model's thresholds come from: one rule for train.py and --update.

The model's config.model.threshold_rule names it (docs/guide.md "Decisions and thresholds"):

1. own_image_out (the default): every training image scored against the bank without the entries
   that came from it (PaDiM: without its own contribution to the Gaussians), so all of train/good
   both fits and calibrates; the image threshold at the max_false_reject target of those scores
   (models.calibration.calibrate_good);
2. held_out (the default before; --val_ratio > 0): the quantiles of the held-out images' scores
   (models.calibration.calibrate_held_out);
3. test_split (--eval): between the classes of the labelled test split.

Model files written before the setting ("") follow the old choice: held-out images if any, else
the test split with --eval, else the highest score of a good training image (rule "good_images").

An update never lowers a threshold placed from good images (rules 1, 2 and the last): the images
behind the old threshold are not scored again, and the larger bank can only lower their scores, so
the old value still bounds them; an update's own images are in the bank, so their in-sample scores
can only raise it (rule 3 sees labels and is taken as it is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from datasets.mvtec import MVTecDataset, held_out_split
from engine.evaluation import evaluate
from engine.outputs import CategoryOutputs
from engine.pipeline import score_batches
from engine.settings import RunSettings
from models.calibration import calibrate, calibrate_good, calibrate_held_out
from models.feature_extractor import PatchFeatureExtractor
from models.model_file import AnomalyModel
from models.scoring import Scores
from models.sharding import Shard
from utils.config import ModelConfig

OWN_IMAGE_OUT, HELD_OUT, TEST_SPLIT, GOOD_IMAGES = "own_image_out", "held_out", "test_split", "good_images"
# Rules whose thresholds come from the good training images' scores (the `good_scores` callable).
FROM_TRAINING_IMAGES = (OWN_IMAGE_OUT, GOOD_IMAGES)
THRESHOLD_KEYS = ("image_threshold", "pixel_threshold", "image_max", "pixel_max")
# What models.calibration records about where the image threshold sits relative to its scores.
CALIBRATION_FACTS = ("image_margin", "calibration_images", "false_reject_target", "expected_false_reject")


@dataclass
class GoodImages:
    """A category's good training images, split (seeded) into the fitted ones and the held-out ones."""
    fitted: MVTecDataset
    held_out: MVTecDataset

    @classmethod
    def split(cls, good: MVTecDataset, m: ModelConfig) -> "GoodImages":
        fitted, held_out = held_out_split(len(good), m.val_ratio, m.seed)
        return cls(good.subset(fitted), good.subset(held_out))


class GoodScores(NamedTuple):
    """How to get the training images' scores for the rules that use them, and what they are."""
    compute: Callable[[], tuple[np.ndarray, np.ndarray]]
    source: str = "leave-own-image-out scores of the training images"


def calibration_rule(m: ModelConfig, images: GoodImages, run: RunSettings) -> str:
    """The rule that places this fit's or update's thresholds (see the module doc)."""
    if m.threshold_rule == TEST_SPLIT and not run.run_eval:
        return GOOD_IMAGES          # an update without --eval has no labelled images
    if m.threshold_rule:
        return m.threshold_rule
    if len(images.held_out):
        return HELD_OUT
    return TEST_SPLIT if run.run_eval else GOOD_IMAGES


def calibrate_and_evaluate(model: AnomalyModel, extractor: PatchFeatureExtractor, images: GoodImages,
                           run: RunSettings, outputs: CategoryOutputs,
                           good_scores: GoodScores) -> dict[str, Any]:
    """Set model.calibration by the rule; with --eval, evaluate (staging its files in `outputs`) at
    the thresholds just placed.

    `good_scores.compute()`: the training images' (image scores, maps) over every worker:
    leave-own-image-out scores for rule own_image_out, in-sample for good_images; `good_scores.source`
    names them in the rule text. Returns the results row (metrics when evaluated).
    """
    m = model.config.model
    rule = calibration_rule(m, images, run)
    if rule == HELD_OUT:
        # Thresholds from good images the model has not seen; evaluation reports how they do.
        scores = score_batches(model, extractor, images.held_out, run)[0]
        model.calibration = calibrate_held_out(scores.image_scores, scores.anomaly_maps, m.max_false_reject,
                                               m.pixel_false_reject)
    elif rule == OWN_IMAGE_OUT:
        model.calibration = calibrate_good(*good_scores.compute(), m.max_false_reject, m.pixel_false_reject,
                                           good_scores.source)
    elif rule == GOOD_IMAGES:
        model.calibration = calibrate(*good_scores.compute())
    row: dict[str, Any] = {"category": model.category}
    if run.run_eval:
        row, test_calibration = evaluate(model, extractor, run, outputs)
        if rule == TEST_SPLIT:
            model.calibration = test_calibration
    return row


def gathered_good_scores(scores: Scores, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
    """The training images' scores and maps over every rank (a plain run passes them as they are):
    the pixel threshold is a quantile of all their pixels, exactly as in a single-process fit
    (N x H x W float32: 42 MB for bottle's 209 images at 224 x 224)."""
    if shard.world_size == 1:
        return scores.image_scores, scores.anomaly_maps
    return shard.gather_rows(scores.image_scores), shard.gather_rows(scores.anomaly_maps)


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
    if kept.get("image_threshold") != calibration.get("image_threshold"):
        # The previous threshold and the facts of its placement (margin, expected rate) stay together.
        for key in CALIBRATION_FACTS:
            kept.pop(key, None)
            if key in previous:
                kept[key] = previous[key]
    return kept
