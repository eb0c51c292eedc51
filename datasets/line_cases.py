"""Generated data sets for the decision cases of docs/guide.md "Decisions and thresholds" (MVTec
layout, deterministic, no Paddle):

* `generate_border_category`: woven fabric whose defects lie entirely in the outer sixteenth of
  the image, the band MVTec's 256 -> 224 centre crop discards;
* `generate_outlier_surface_category`: a uniform surface whose good images now and then carry a
  harmless one-off variation (rare good outliers: a soft glare streak, or a hard-edged specular
  highlight that scores above the defects), with small dark spots as defects.

`datasets.synthetic.generate_elongated_category(outlier_rate=...)` is the elongated counterpart
(rods with thin scratches, the same specular highlights as rare good outliers).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datasets.synthetic import (_blob, _check_target, _make_style, _paint, _render_good, _rng, _smooth_noise, _staged,
                                _write_marker, _write_png, specular_highlight)

# MVTec's crop keeps 224 of 256: 16 of 256 (a sixteenth) is lost on every side.
CROP_BAND_FRACTION = 16 / 256


def _border_stain(size: int, rng: np.random.Generator) -> np.ndarray:
    """A stain wholly inside the outer CROP_BAND_FRACTION band of a size x size image, on a random side."""
    band = int(size * CROP_BAND_FRACTION)
    inner = np.zeros((size, size), dtype=bool)
    inner[band:size - band, band:size - band] = True
    for _ in range(200):
        along, depth = rng.uniform(band, size - band), rng.uniform(0.45, 0.55) * band
        centre = {0: (depth, along), 1: (size - 1 - depth, along), 2: (along, depth), 3: (along, size - 1 - depth)}[
            int(rng.integers(4))]
        mask = _blob(size, np.array(centre), band * 0.42, roughness=0.2, n_harmonics=3, rng=rng)
        if mask.any() and not (mask & inner).any():
            return mask
    raise ValueError(f"could not place a border defect in a {size}x{size} image")


def generate_border_category(root: str | os.PathLike, category: str = "border_fabric", *, n_train: int = 12,
                             n_test_good: int = 4, n_test_defect: int = 8, image_size: int = 128,
                             seed: int = 0) -> Path:
    """Fabric with stains only in the band a 256 -> 224 centre crop discards (masks in ground_truth)."""
    target = Path(root) / category
    Path(root).mkdir(parents=True, exist_ok=True)
    _check_target(target)
    style = _make_style("texture", image_size, seed, category)
    with _staged(target) as staging:
        for split, n in (("train", n_train), ("test", n_test_good)):
            for i in range(n):
                image, _ = _render_good(style, _rng(seed, category, split, "good", i))
                _write_png(staging / split / "good" / f"{i:03d}.png", image)
        for i in range(n_test_defect):
            rng = _rng(seed, category, "test", "border", i)
            good, _ = _render_good(style, rng)
            mask = _border_stain(image_size, rng)
            _write_png(staging / "test" / "border_stain" / f"{i:03d}.png", _paint(good, mask, "stain", style, rng))
            _write_png(staging / "ground_truth" / "border_stain" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
        _write_marker(staging, {"generator": "datasets.line_cases.generate_border_category", "category": category,
                                "seed": int(seed), "image_size": int(image_size)})
    return target


def _surface(size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform grey surface: slow shading, fine grain, sensor noise (float, H x W x 3)."""
    grey = 140 + rng.uniform(-4, 4) + 6 * _smooth_noise(rng, size, 12.0) + 3 * _smooth_noise(rng, size, 1.5)
    return np.repeat(grey[..., None], 3, axis=2) + rng.normal(0, 2.0, (size, size, 3))


def _glare(size: int, rng: np.random.Generator) -> np.ndarray:
    """A harmless one-off streak of glare across the surface (added brightness, H x W)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle, offset = rng.uniform(0, np.pi), rng.uniform(0.3, 0.7) * size
    distance = (xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle) + size / 2 - offset
    return 45 * np.exp(-0.5 * (distance / (0.06 * size)) ** 2)


# The benign one-off variations a good surface image may carry (brightness to add, H x W).
OUTLIER_KINDS = {"glare": _glare, "highlight": lambda size, rng: specular_highlight(size, size, rng)}


def _spot(size: int, rng: np.random.Generator) -> np.ndarray:
    centre = rng.uniform(0.15, 0.85, 2) * size
    return _blob(size, centre, size * rng.uniform(0.025, 0.04), roughness=0.25, n_harmonics=4, rng=rng)


def generate_outlier_surface_category(root: str | os.PathLike, category: str = "outlier_surface", *,
                                      n_train: int = 100, n_test_good: int = 60, n_test_defect: int = 30,
                                      outlier_rate: float = 0.03, outlier_kind: str = "glare", image_size: int = 128,
                                      seed: int = 0, contrast: float = 25.0) -> Path:
    """A uniform surface; each good image (train and test) carries a one-off `outlier_kind`
    variation with probability `outlier_rate` ("glare": a soft streak, "highlight": a hard-edged
    specular highlight; the marker file lists which images); defects are small dark spots
    (`contrast` grey levels darker)."""
    if outlier_kind not in OUTLIER_KINDS:
        raise ValueError(f"outlier_kind must be one of {', '.join(OUTLIER_KINDS)}, got {outlier_kind!r}")
    target = Path(root) / category
    Path(root).mkdir(parents=True, exist_ok=True)
    _check_target(target)
    outliers: dict[str, list[str]] = {}
    with _staged(target) as staging:
        for split, n in (("train", n_train), ("test", n_test_good)):
            outliers[f"{split}/good"] = []
            for i in range(n):
                rng = _rng(seed, category, split, "good", i)
                image = _surface(image_size, rng)
                if rng.random() < outlier_rate:
                    image += OUTLIER_KINDS[outlier_kind](image_size, rng)[..., None]
                    outliers[f"{split}/good"].append(f"{i:03d}.png")
                _write_png(staging / split / "good" / f"{i:03d}.png", np.clip(np.rint(image), 0, 255).astype(np.uint8))
        for i in range(n_test_defect):
            rng = _rng(seed, category, "test", "spot", i)
            image, mask = _surface(image_size, rng), _spot(image_size, rng)
            image[mask] -= contrast
            _write_png(staging / "test" / "spot" / f"{i:03d}.png", np.clip(np.rint(image), 0, 255).astype(np.uint8))
            _write_png(staging / "ground_truth" / "spot" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
        _write_marker(staging, {"generator": "datasets.line_cases.generate_outlier_surface_category",
                                "category": category, "seed": int(seed), "image_size": int(image_size),
                                "outlier_rate": float(outlier_rate), "outlier_kind": outlier_kind,
                                "outliers": outliers, "contrast": float(contrast)})
    return target
