"""The picture the operator page shows: the image as the model saw it, heat map over it, region outlined."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from datasets.preprocess import resized_rgb
from deploy.inferencer import Inferencer, Prediction, decode
from utils.visualize import outlined, overlay


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
