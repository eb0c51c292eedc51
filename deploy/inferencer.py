"""The in-process scoring API: an export folder -> Inferencer -> one Prediction per image.

infer.py, predict.py (through deploy.batch_scoring.run_inference) and the service all score with the
same pieces: `score_batch` (embeddings -> the model's scorer), `non_finite_error` and `decision_row`,
so the three give the same numbers by construction.

    from deploy import Inferencer
    inferencer = Inferencer("output/bottle_infer")
    prediction = inferencer.predict("bottle/test/broken_large/000.png")
    print(prediction.decision, prediction.image_score, prediction.normalized_score)
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image

from datasets.preprocess import load_image, preprocess_image, to_rgb8
from deploy.batch_scoring import decision_row, non_finite_error, score_batch
from deploy.exported_model import load_exported_model, scoring_options
from models.runtimes import ExportFiles, RuntimeOptions, open_runtime
from models.thresholds import Thresholds
from utils.config import DEFAULT_CPU_THREADS
from utils.errors import UserError

ImageInput = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]


@dataclass(frozen=True)
class Prediction:
    """One image's outcome. decision: "normal" or "anomalous"; defect_area: the share of the
    (cropped) image in the region shown, i.e. mask.mean() (0 on a normal image: models.thresholds)."""
    image_score: float
    normalized_score: float
    decision: str
    defect_area: float
    anomaly_map: np.ndarray   # [H, W] float32, the crop's geometry
    mask: np.ndarray          # [H, W] bool, the region shown: Thresholds.region_shown (empty when normal)

    def as_dict(self) -> dict[str, float | str]:
        """The scalar fields (what results.csv holds per image)."""
        return {"image_score": self.image_score, "normalized_score": self.normalized_score,
                "decision": self.decision, "defect_area": self.defect_area}


def decode(image: ImageInput, name: str = "image") -> Image.Image:
    """A path, encoded bytes, an RGB/gray uint8 array or a PIL image -> 8-bit RGB (as load_image)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return load_image(io.BytesIO(bytes(image)), name=name)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise UserError(f"{name}: an array image must be uint8 [H, W] or [H, W, 3] RGB, "
                            f"not {image.dtype} {list(image.shape)}")
        return Image.fromarray(image).convert("RGB")
    if isinstance(image, Image.Image):
        return to_rgb8(image, name)
    raise UserError(f"{name}: cannot score a {type(image).__name__} (give a path, bytes or an array)")


class Inferencer:
    """The model of one export folder (what export_model.py wrote), ready to score images.

    The stats file is checked against the program and parameters (deploy.exported_model.load_exported_model);
    the extractor runs on `options.runtime` (models.runtimes). Thresholds default to the calibrated ones.
    """

    def __init__(self, export_dir: str | os.PathLike, runtime: str = "auto", *, cpu_threads: int = DEFAULT_CPU_THREADS,
                 use_gpu: bool = False, options: RuntimeOptions | None = None,
                 image_threshold: float | None = None, pixel_threshold: float | None = None,
                 shared_cores: bool = False):
        self.export_dir = os.fspath(export_dir)
        self.files = ExportFiles.in_folder(self.export_dir)
        self.model = load_exported_model(self.files.stats, self.files.params, self.files.program)
        self.thresholds = Thresholds.from_calibration(self.model.calibration, image_threshold, pixel_threshold)
        self.options = options or RuntimeOptions(runtime=runtime, use_gpu=use_gpu, cpu_threads=cpu_threads)
        self.runtime = open_runtime(self.files, self.options)
        # shared_cores: see deploy.exported_model.scoring_options (the service sets it)
        self.scorer = scoring_options(self.options, self.runtime.name, shared_cores).scorer(self.model)

    @property
    def data(self):
        """The model's preprocessing settings (resize, crop, normalisation)."""
        return self.model.config.data

    def preprocess(self, image: ImageInput, name: str = "image") -> np.ndarray:
        """One image -> the network's input [3, H, W] float32 (the same pixels infer.py feeds)."""
        d = self.data
        return preprocess_image(decode(image, name), d.resize, d.crop_size, d.mean, d.std, d.interpolation)

    def predict_preprocessed(self, images: np.ndarray, names: list[str] | None = None) -> list[Prediction]:
        """Preprocessed images [B, 3, H, W] -> their predictions, in order (one batch through the network)."""
        names = names or [f"image {i}" for i in range(len(images))]
        scores = score_batch(np.ascontiguousarray(images, dtype=np.float32), self.runtime, self.scorer)
        predictions = []
        for i, name in enumerate(names):
            error = non_finite_error(scores, i, name)
            if error:
                raise UserError(error)
            anomaly_map = scores.anomaly_maps[i]
            row = decision_row(name, scores.image_scores[i], anomaly_map, self.thresholds)
            predictions.append(Prediction(row["image_score"], row["normalized_score"], row["decision"],
                                          row["defect_area"], anomaly_map,
                                          self.thresholds.region_shown(row["image_score"], anomaly_map)))
        return predictions

    def predict(self, image: ImageInput) -> Prediction:
        """Score one image (path, encoded bytes, uint8 array or PIL image)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: list[ImageInput]) -> list[Prediction]:
        """Score several images in one pass through the network; a bad image raises UserError naming it."""
        if not images:
            return []
        names = [os.fspath(im) if isinstance(im, (str, os.PathLike)) else f"image {i}" for i, im in enumerate(images)]
        return self.predict_preprocessed(np.stack([self.preprocess(im, n) for im, n in zip(images, names)]), names)
