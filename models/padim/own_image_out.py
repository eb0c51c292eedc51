"""Leave-own-image-out scores of PaDiM's training images (training side, for calibration).

PaDiM has no bank to take an image's entries out of, but leaving one image out of a Gaussian has a
closed form: with n images, the unbiased covariance S and the image's in-sample squared distance
d^2 at a position, the distance to the mean and covariance of the other n - 1 images is
    D^2 = c^2 (n - 2) d^2 / (n - 1 - c d^2),  c = n / (n - 1)
(the mean moves by e / (n - 1), the covariance by a rank-one downdate, Sherman-Morrison). It is
exact for the plain Gaussian and close with PaDiM's 0.01 I regularisation (which only lowers d^2),
so no image is scored twice and nothing is held out.
"""
from __future__ import annotations

import numpy as np

from typing import Iterable

from models.model_file import AnomalyModel
from models.scoring import Scores, upsample_and_smooth


def own_image_out_distances(patch_scores: np.ndarray, n_images: int) -> np.ndarray:
    """In-sample Mahalanobis distances of training patches -> their leave-own-image-out distances."""
    if n_images < 3:
        return patch_scores
    c = n_images / (n_images - 1)
    squared = patch_scores.astype(np.float64) ** 2
    # d^2 <= (n - 1)^2 / n for the plain Gaussian, so the denominator stays positive; the floor
    # guards the rounding.
    denominator = np.maximum(n_images - 1 - c * squared, 1e-6)
    return np.sqrt(c * c * (n_images - 2) * squared / denominator).astype(np.float32)


def own_image_out_scores(in_sample: Scores, n_images: int, image_size: int | tuple[int, int], sigma: float) -> Scores:
    """Scores of the training images as if each were left out of the fit (see the module doc);
    the image score is the maximum of the smoothed map, as PaDiM's scorer."""
    patch_scores = own_image_out_distances(in_sample.patch_scores, n_images)
    maps = upsample_and_smooth(patch_scores, image_size, sigma)
    return Scores(maps.reshape(len(maps), -1).max(axis=1), maps, patch_scores)


def leave_own_image_out(model: AnomalyModel, embeddings: Iterable[np.ndarray], entry_images: np.ndarray | None = None,
                        first_image: int = 0, array_lib: str = "numpy", progress: bool = False,
                        gather=None) -> Scores:
    """The method's leave-own-image-out scores (registered in models.registry): the training
    embeddings scored in-sample, then corrected (see the module doc)."""
    scorer = model.scorer(array_lib)
    in_sample = Scores.concatenate([scorer(embedding) for embedding in embeddings])
    return own_image_out_scores(in_sample, int(model.fit_stats["train_images"]), model.config.data.crop_size,
                                model.config.model.sigma)
