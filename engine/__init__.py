"""Application layer for training: command-line options, the fit/score pipeline, train/eval loops, export.

Imports utils, datasets and models; never deploy. Entry scripts (train.py, eval.py, export_model.py,
predict.py) call into it.
"""
import utils  # noqa: F401  (first: process-wide settings before NumPy / Paddle load)
