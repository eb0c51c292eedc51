"""Calibration (training side): the thresholds and score ranges a model file stores.

models.thresholds turns them into decisions at deployment ("13.6" -> "0.71, anomalous").

Where the image threshold goes (engine.calibration_rule picks the scores; docs/guide.md "Decisions
and thresholds"):

* Good images only (the default, leave-own-image-out scores of every training image; or the
  held-out rule's scores): the threshold estimates the (1 - max_false_reject) quantile of good
  scores (`false_reject_quantile`: the empirical quantile where at least MIN_TAIL_SCORES scores lie
  above it, else an exponential tail fitted to the highest scores, rare outliers far beyond that
  tail left out of the fit and counted as rejects of their own: `fit_tail`).
* A labelled split (--threshold_rule test_split): the F1-optimal cut between the classes.

Either way the value is then placed *between* calibration scores, never on one (`between_scores`),
so every calibration image keeps the decision the estimate gave it and none sits at a distance a
runtime's rounding could cross (infer.py's runtimes differ from the dynamic graph by ~1e-6
relative): the leave-own-image-out estimate moves only as far as MARGIN_FRACTION of the scores'
spread from its neighbours (a wide gap must not carry it halfway up to the outliers); the
held-out and labelled rules go to the middle of the gap (with labels: between the classes); above
the highest score, at least MARGIN_FRACTION of the spread above it. The distance from the threshold
to the nearest calibration score is stored as `image_margin` (train.py prints it).

The pixel threshold only shapes the region outlined on an anomalous image (it decides nothing,
models.thresholds): the (1 - pixel_false_reject) quantile of the good images' pixels, or the
F1-optimal pixel cut on a labelled split.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from utils.metrics import UndefinedMetricError, f1_optimal_threshold

# The empirical quantile is used when at least this many calibration scores lie above it; with
# fewer, the tail is fitted (one or two order statistics are too noisy to place a 1% threshold).
MIN_TAIL_SCORES = 10
# The fitted tail uses the highest max(MIN_TAIL_SCORES, TAIL_FRACTION * n) scores.
TAIL_FRACTION = 0.1
# An excess over u is a rare good outlier (left out of the tail's fit) when the fitted exponential
# would give one that large among the top m scores with probability below OUTLIER_P: beyond
# robust scale x ln(m / OUTLIER_P) (8 scales for m = 30).
OUTLIER_P = 0.01
# A threshold above every calibration score stays at least this fraction of their spread above the
# highest (1e-3: ~100x the largest runtime difference measured on exported models).
MARGIN_FRACTION = 1e-3


class TailFit(NamedTuple):
    """The exponential tail fitted to the highest good scores (see `false_reject_quantile`)."""
    n: int                  # calibration scores
    m: int                  # the highest m scores form the tail (m - outliers of them are fitted)
    u: float                # the score just below them
    beta: float             # mean excess over u of the fitted ones
    outliers: int           # of the m, beyond the outlier bound: left out of the fit, still counted

    def rate(self, threshold: float) -> float:
        """P(a good score >= threshold): the fitted part's exponential tail plus the outliers' share."""
        bulk = (self.m - self.outliers) / self.n * math.exp(-(threshold - self.u) / self.beta)
        return float(bulk + self.outliers / self.n)


def fit_tail(scores: np.ndarray) -> TailFit | None:
    """Peaks over threshold on the m = max(MIN_TAIL_SCORES, TAIL_FRACTION n) highest scores (None
    when they do not spread). Excesses over u further than OUTLIER_BOUND scales (robust scale: the
    median excess / ln 2, an exponential's median being beta ln 2) are rare good outliers: the
    fitted exponential would produce such an excess among m with probability below OUTLIER_P, so
    they are left out of the scale's maximum-likelihood fit (the mean excess of the others) and
    counted as a share of their own. Without that, one extreme score out of 30 multiplies the
    mean excess, and with it the threshold's distance above u, several times over."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    m = min(n - 1, max(MIN_TAIL_SCORES, int(math.ceil(TAIL_FRACTION * n))))
    excess = s[n - m:] - s[n - m - 1]
    robust = float(np.median(excess)) / math.log(2)
    # (more than half the top scores tied at u: no robust scale, every excess is fitted)
    kept = excess[excess <= robust * math.log(m / OUTLIER_P)] if robust > 0 else excess
    beta = float(np.mean(kept))
    return TailFit(n, m, float(s[n - m - 1]), beta, m - len(kept)) if beta > 0 else None


def false_reject_quantile(scores: np.ndarray, rate: float) -> tuple[float, float, str]:
    """(estimate, its expected false-reject rate, how it was estimated) of the score a good image
    exceeds with probability `rate`, from good calibration scores.

    With n * rate >= MIN_TAIL_SCORES: the empirical (1 - rate) quantile (linear interpolation).
    Otherwise the exponential tail of `fit_tail`: its fitted part exceeds t with probability
    ((m - k) / n) exp(-(t - u) / beta), so t = u + beta ln((m - k) / (n rate)); the k outliers beyond
    the bound are rejected on top of that (their share k / n is in the expected rate, not in t).
    rate 0: the highest score (placement puts the threshold above it).
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    if rate <= 0 or n < 2:
        return float(s[-1]), 0.0, f"above the highest of {n} good scores"
    if n * rate >= MIN_TAIL_SCORES:
        return float(np.quantile(s, 1.0 - rate)), rate, f"empirical {1 - rate:.4g} quantile of {n} good scores"
    tail = fit_tail(s)
    if tail is None:
        return float(s[-1]), 0.0, f"above the highest of {n} good scores (their top does not spread)"
    estimate = tail.u + tail.beta * math.log((tail.m - tail.outliers) / (n * rate))
    how = f"exponential tail fitted to the top {tail.m} of {n} good scores for a {rate:.4g} false-reject rate"
    if tail.outliers:
        how += (f" ({tail.outliers} of them beyond the tail, rare good outliers: left out of the fit, "
                "expected to be rejected)")
    return float(estimate), tail.rate(estimate), how


def tail_rate(scores: np.ndarray, threshold: float) -> float:
    """The false-reject rate the good `scores` imply at `threshold`: the fitted tail's
    (`fit_tail`, outliers included) where fewer than MIN_TAIL_SCORES scores reach it, else the
    fraction that does."""
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    above = int(np.count_nonzero(s >= threshold))
    if above >= MIN_TAIL_SCORES or n < 2:
        return above / n
    tail = fit_tail(s)
    if tail is None or threshold <= tail.u:
        return above / n
    return tail.rate(threshold)


def between_scores(estimate: float, scores: np.ndarray, middle: bool = True) -> float:
    """`estimate` moved off the calibration scores (see the module doc), keeping the calibration
    images' decisions: `middle`, to the middle of the gap it falls in; otherwise only as far as
    needed to stay MARGIN_FRACTION of the spread from both scores of that gap (its middle if the
    gap is narrower), so that a wide gap (typical scores below, rare outliers above) does not
    carry an estimated quantile halfway to the outliers. Beyond the highest / lowest score: at
    least that margin from it."""
    s = np.unique(np.asarray(scores, dtype=np.float64))
    floor = MARGIN_FRACTION * max(s[-1] - s[0], abs(s[-1]), 1e-12)
    if estimate > s[-1]:
        return float(max(estimate, s[-1] + floor))
    if estimate <= s[0]:
        return float(min(estimate, s[0] - floor))
    upper = int(np.searchsorted(s, estimate, side="left"))      # s[upper - 1] < estimate <= s[upper]
    low, high = s[upper - 1], s[upper]
    if middle or high - low <= 2 * floor:
        return float((low + high) / 2)
    return float(min(max(estimate, low + floor), high - floor))


def decision_margin(threshold: float, scores: np.ndarray) -> float:
    """Distance from the threshold to the nearest calibration score."""
    return float(np.min(np.abs(np.asarray(scores, dtype=np.float64) - threshold)))


def _ranges(image_scores: np.ndarray, anomaly_maps: np.ndarray) -> dict[str, float]:
    return {"image_min": float(np.min(image_scores)), "image_max": float(np.max(image_scores)),
            "pixel_min": float(np.min(anomaly_maps)), "pixel_max": float(np.max(anomaly_maps))}


def calibrate_good(image_scores: np.ndarray, anomaly_maps: np.ndarray, max_false_reject: float,
                   pixel_false_reject: float, source: str) -> dict[str, float | str]:
    """Thresholds from good images only (`source` names their scores, e.g. "leave-own-image-out
    scores of the training images"): the image threshold at the false-reject target, placed
    between scores; the pixel threshold at the (1 - pixel_false_reject) quantile of their pixels."""
    estimate, _, how = false_reject_quantile(image_scores, max_false_reject)
    threshold = between_scores(estimate, image_scores, middle=False)
    pixel_threshold = float(np.quantile(anomaly_maps, 1.0 - pixel_false_reject))
    return {"image_threshold": threshold, "pixel_threshold": pixel_threshold, **_ranges(image_scores, anomaly_maps),
            "image_rule": f"{how}: {source}",
            "pixel_rule": f"{1 - pixel_false_reject:.4g} quantile of the pixels of {len(image_scores)} good images",
            "image_margin": decision_margin(threshold, image_scores),
            "calibration_images": float(len(image_scores)),
            "false_reject_target": float(max_false_reject),
            "expected_false_reject": tail_rate(image_scores, threshold)}


def calibrate_held_out(image_scores: np.ndarray, anomaly_maps: np.ndarray, max_false_reject: float,
                       pixel_false_reject: float) -> dict[str, float | str]:
    """The held-out rule (--val_ratio > 0, the default before leave-own-image-out): good images not in
    the model; the image threshold at the (1 - max_false_reject) quantile of their scores ("higher":
    with few images and a small rate, their maximum), placed just above that score."""
    calibration = calibrate_good(image_scores, anomaly_maps, max_false_reject, pixel_false_reject,
                                 f"{len(image_scores)} held-out good images")
    quantile = float(np.quantile(image_scores, 1.0 - max_false_reject, method="higher"))
    threshold = between_scores(np.nextafter(quantile, -np.inf), image_scores)
    calibration.update({"image_threshold": threshold, "image_margin": decision_margin(threshold, image_scores),
                        "image_rule": f"{1 - max_false_reject:.4g} quantile of {len(image_scores)} held-out good images",
                        "expected_false_reject": float(np.mean(image_scores >= threshold))})
    return calibration


def _f1_cut(scores: np.ndarray, labels: np.ndarray | None) -> tuple[float, str]:
    if labels is not None:
        try:
            return f1_optimal_threshold(scores, labels)[0], "F1-optimal on the test split"
        except UndefinedMetricError:
            pass   # a single class: fall back to the good-only rule below
    return float(np.max(scores)), "maximum over good images"


def calibrate(image_scores: np.ndarray, anomaly_maps: np.ndarray, labels: np.ndarray | None = None,
              masks: np.ndarray | None = None) -> dict[str, float | str]:
    """Thresholds from scored images, labelled where `labels` is given: the F1-optimal image cut
    (with separated classes: the lowest defect score) moved to the middle of the gap below it, i.e.
    the midpoint between the highest good and the lowest defect score when they are separated;
    without labels just above the highest score. Pixel threshold: F1-optimal (with masks) or the maximum."""
    cut, image_rule = _f1_cut(image_scores, labels)
    # The cut flags scores >= cut; the estimate just below it keeps those decisions and lands in
    # the gap under it (or above the highest score when the cut is the maximum of good images).
    labelled = image_rule.startswith("F1")
    estimate = np.nextafter(cut, -np.inf if labelled else np.inf)
    threshold = between_scores(float(estimate), image_scores)
    pixel_threshold, pixel_rule = _f1_cut(anomaly_maps.ravel(), None if masks is None else masks.ravel())
    return {"image_threshold": threshold, "pixel_threshold": pixel_threshold, **_ranges(image_scores, anomaly_maps),
            "image_rule": f"{image_rule}, placed between the classes", "pixel_rule": pixel_rule,
            "image_margin": decision_margin(threshold, image_scores),
            "calibration_images": float(len(image_scores))}
