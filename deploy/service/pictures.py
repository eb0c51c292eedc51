"""The picture the operator page shows: the image as the model saw it, heat map over it, region outlined."""
from __future__ import annotations

import base64
import io

from matplotlib import colormaps
import numpy as np
from PIL import Image
from scipy import ndimage

from datasets.preprocess import resized_rgb
from deploy.inferencer import Inferencer, Prediction, decode
from utils.visualize import outlined, overlay, region_outline

HEAT_COLOURS = "jet"   # as in predict.py's figures: the same colours on the page and in the reports


def overlay_png(inferencer: Inferencer, data: bytes, prediction: Prediction) -> str:
    """A data: URL of a PNG: heat map (the model's calibrated colour range) and the predicted region."""
    d = inferencer.data
    image = np.asarray(resized_rgb(decode(data, "upload"), d.resize, d.crop_size, d.interpolation))
    calibration = inferencer.model.calibration
    vmin = calibration.get("pixel_min", float(prediction.anomaly_map.min()))
    vmax = calibration.get("pixel_max", float(prediction.anomaly_map.max()))
    picture = outlined(overlay(image, prediction.anomaly_map, vmin, vmax), prediction.mask)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_url(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _scaled_map(inferencer: Inferencer, prediction: Prediction) -> tuple[np.ndarray, float, float]:
    calibration = inferencer.model.calibration
    vmin = calibration.get("pixel_min", float(prediction.anomaly_map.min()))
    vmax = calibration.get("pixel_max", float(prediction.anomaly_map.max()))
    return np.clip((prediction.anomaly_map - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0), vmin, vmax


def picture_layers(inferencer: Inferencer, data: bytes, prediction: Prediction) -> dict[str, object]:
    """The page's layers as data: URLs: the image as the model saw it, the heat map (transparent where
    the map is well below the pixel threshold, so the part stays visible; the page sets its opacity), the defect region's outline
    (the page shows it on NG parts only) and the colour scale with its range."""
    d = inferencer.data
    image = np.asarray(resized_rgb(decode(data, "upload"), d.resize, d.crop_size, d.interpolation))
    scaled, vmin, vmax = _scaled_map(inferencer, prediction)
    colours = colormaps[HEAT_COLOURS]
    heat = (255 * colours(scaled)).astype(np.uint8)
    # Opaque from the pixel threshold up, fading out half way down to the calibrated minimum: the
    # normal surface shows through, only what is close to a defect is coloured.
    threshold = inferencer.thresholds.pixel
    start = 0.5 * (vmin + threshold)
    fade = np.clip((prediction.anomaly_map - start) / max(threshold - start, 1e-12), 0.0, 1.0)
    heat[..., 3] = (255 * fade).astype(np.uint8)
    edge = region_outline(prediction.mask)
    outline = np.zeros(prediction.mask.shape + (4,), np.uint8)
    outline[ndimage.binary_dilation(edge, iterations=2)] = (0, 0, 0, 255)        # dark rim: visible on light parts
    outline[ndimage.binary_dilation(edge, iterations=1)] = (255, 255, 255, 255)  # white line: visible on dark ones
    scale = (255 * colours(np.linspace(0.0, 1.0, 256))[None, :, :3].repeat(8, axis=0)).astype(np.uint8)
    return {"image_png": _png_url(image), "heat_png": _png_url(heat), "outline_png": _png_url(outline),
            "scale_png": _png_url(scale), "scale": {"min": vmin, "max": vmax}}
