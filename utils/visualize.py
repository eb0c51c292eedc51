"""Figures for people: the image, its ground truth, the heat map and the predicted defect region."""
from __future__ import annotations

import os
import unicodedata

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy import ndimage

from utils.io import atomic_path

# Figures are drawn on a matplotlib Figure of their own (no pyplot): no display needed on headless
# inspection PCs, and no process-wide backend chosen by an import. Image names in titles may hold
# characters the font lacks (drawn as empty boxes; the full name is in results.csv): the entry
# scripts silence that warning (utils.runtime.configure_environment).


def printable_title(text: str) -> str:
    """`text` with control characters (tabs, newlines, escapes from file names) as spaces."""
    return "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)


def region_outline(region: np.ndarray) -> np.ndarray:
    """Boolean outline (1 pixel wide) of a boolean region."""
    return region & ~ndimage.binary_erosion(region, iterations=1, border_value=0)


def overlay(image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5) -> np.ndarray:
    """Heat map blended over an RGB uint8 image, as uint8 RGB."""
    scaled = np.clip((anomaly_map - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    heat = colormaps["jet"](scaled)[..., :3]
    return (255 * ((1 - alpha) * image / 255.0 + alpha * heat)).astype(np.uint8)


def outlined(image: np.ndarray, region: np.ndarray, colour: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    out = image.copy()
    edge = ndimage.binary_dilation(region_outline(region), iterations=1)
    out[edge] = colour
    return out


def save_figure(path: str | os.PathLike, image: np.ndarray, anomaly_map: np.ndarray, region: np.ndarray,
                vmin: float, vmax: float, title: str, mask: np.ndarray | None = None) -> None:
    """One row: image | ground truth (if any) | heat map | predicted region outlined.

    `region`: the region shown (models.thresholds.Thresholds.region_shown: empty on a normal image).
    """
    panels = [("image", image)]
    if mask is not None:
        panels.append(("ground truth", outlined(image, mask.astype(bool), (0, 255, 0))))
    panels += [("heat map", overlay(image, anomaly_map, vmin, vmax)),
               ("predicted region", outlined(image, region))]
    # Panels as wide as the image's aspect ratio (imshow keeps the pixels square).
    aspect = min(max(image.shape[1] / image.shape[0], 0.25), 4.0)
    fig = Figure(figsize=(3 * aspect * len(panels), 3.3))
    axes = fig.subplots(1, len(panels))
    for ax, (name, picture) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(printable_title(title), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
