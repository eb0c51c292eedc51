"""Application layer for deployment: predictor, inference loop, decisions and outputs, benchmark timing.

Imports utils, datasets.preprocess and the scoring side of models only: never engine, any fit code,
calibration or metrics, so a production line runs infer.py without the training code.
"""
import utils  # noqa: F401  (first: process-wide settings before NumPy / Paddle load)


def __getattr__(name: str):
    # `from deploy import Inferencer` without loading the predictor for every deploy module.
    if name in ("Inferencer", "Prediction"):
        from deploy import inferencer

        return getattr(inferencer, name)
    raise AttributeError(f"module 'deploy' has no attribute '{name}'")
