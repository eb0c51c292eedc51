"""Operator feedback: an image and its label, stored under --feedback_dir/<model>/<label>/.

Names are the content's SHA-256 (the same image marked twice is one file) with the extension of the
sniffed type; files are written to a temporary name and renamed. Model names are the served ones
(plain names), labels a fixed set, so nothing is ever written outside the feedback folder.
"""
from __future__ import annotations

import hashlib
import os

from datasets.preprocess import list_images
from deploy.service.uploads import sniff_extension
from utils.io import atomic_write, is_safe_name

LABELS = {"good": "good", "defect": "defect"}   # "good": a false reject; "defect": a miss


def store_feedback(feedback_dir: str, model: str, label: str, data: bytes) -> str:
    """Write `data` as feedback; returns its path relative to `feedback_dir`."""
    if not is_safe_name(model) or label not in LABELS:
        raise ValueError(f"feedback for model {model!r} with label {label!r}: not a served model and label")
    name = hashlib.sha256(data).hexdigest()[:32] + sniff_extension(data)
    relative = os.path.join(model, LABELS[label], name)
    target = os.path.join(feedback_dir, relative)
    if not os.path.isfile(target):
        atomic_write(target, lambda tmp: tmp.write_bytes(data))
    return relative


def good_folder(feedback_dir: str, model: str) -> str:
    return os.path.join(feedback_dir, model, LABELS["good"])


def count_feedback(feedback_dir: str, model: str) -> dict[str, int]:
    folders = {label: os.path.join(feedback_dir, model, folder) for label, folder in LABELS.items()}
    return {label: len(list_images(folder)) if os.path.isdir(folder) else 0 for label, folder in folders.items()}
