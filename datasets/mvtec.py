"""MVTec AD layout: ROOT/CAT/train/good, ROOT/CAT/test/<defect|good>, ROOT/CAT/ground_truth/<defect>/."""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from paddle.io import Dataset

from datasets.preprocess import IMAGE_EXTENSIONS, list_images, load_image, load_mask, preprocess_image
from utils.config import DataConfig
from utils.errors import UserError
from utils.io import is_safe_name

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
           "toothbrush", "transistor", "zipper")
GOOD = "good"


def is_category(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, "train", GOOD))


def resolve_categories(root: str, name: str) -> list[str]:
    """Category names for `--category`: all | objects | textures | a folder name under root."""
    if not os.path.isdir(root):
        raise UserError(f"data path not found: {root}")
    if name == "all":
        found = sorted(d for d in os.listdir(root) if is_category(os.path.join(root, d)))
        if not found:
            raise UserError(f"no category in MVTec layout (CATEGORY/train/good) under {root}")
        return found
    if name in ("objects", "textures"):
        group = OBJECTS if name == "objects" else TEXTURES
        found = [c for c in group if is_category(os.path.join(root, c))]
        if not found:
            raise UserError(f"none of the MVTec {name} ({', '.join(group)}) is under {root}")
        return found
    if not is_safe_name(name):
        # Category names become file names under --save_path: '../x' would write outside it.
        raise UserError(f"category '{name}' is not a plain folder name (no '/', '..' or leading '.')")
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
        raise UserError(f"unknown category '{name}': no folder {folder}")
    if not is_category(folder):
        raise UserError(f"category '{name}' has no training images folder {os.path.join(folder, 'train', GOOD)}")
    return [name]


@dataclass
class Sample:
    path: str
    label: int          # 0 good, 1 defective
    defect: str         # "good" or the defect folder name
    mask_path: str | None


def _mask_path(category_dir: str, defect: str, image_path: str) -> str | None:
    if defect == GOOD:
        return None
    stem = os.path.splitext(os.path.basename(image_path))[0]
    folder = os.path.join(category_dir, "ground_truth", defect)
    for ext in IMAGE_EXTENSIONS:
        candidate = os.path.join(folder, f"{stem}_mask{ext}")
        if os.path.isfile(candidate):
            return candidate
    # A defective image without an annotation still counts for image AUROC; its mask stays empty.
    return None


def list_samples(root: str, category: str, split: str) -> list[Sample]:
    category_dir = os.path.join(root, category)
    split_dir = os.path.join(category_dir, split)
    if not os.path.isdir(split_dir):
        raise UserError(f"category '{category}' has no '{split}' folder: {split_dir}")
    defects = [GOOD] if split == "train" else sorted(
        d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    samples = []
    for defect in defects:
        for path in list_images(os.path.join(split_dir, defect)):
            label = 0 if defect == GOOD else 1
            samples.append(Sample(path, label, defect, _mask_path(category_dir, defect, path)))
    if not samples:
        raise UserError(f"no images in {split_dir}")
    if split == "train":
        good_dir = os.path.join(split_dir, GOOD)
        nested = sorted(d for d in os.listdir(good_dir) if os.path.isdir(os.path.join(good_dir, d)))
        if nested:
            # Training reads train/good itself only (infer.py / predict.py do recurse into folders).
            print(f"warning: category '{category}': subfolders of {good_dir} are not used for training "
                  f"({', '.join(nested[:3])}{', ...' if len(nested) > 3 else ''})", file=sys.stderr)
    unmasked = [s for s in samples if s.label and s.mask_path is None]
    if unmasked:
        # Said once per category: these images count as all-normal pixels in the pixel metrics.
        print(f"warning: category '{category}': {len(unmasked)} of {sum(s.label for s in samples)} defect images "
              f"have no mask in {os.path.join(category_dir, 'ground_truth')} (e.g. {unmasked[0].path}); "
              f"their masks are taken as empty", file=sys.stderr)
    return samples


class MVTecDataset(Dataset):
    """One split of one category; items are (image CHW float32, mask HW uint8, label int)."""

    def __init__(self, root: str, category: str, split: str = "train", data_cfg: DataConfig | None = None):
        super().__init__()
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        self.cfg = data_cfg or DataConfig()
        self.category = category
        self.split = split
        self.samples = list_samples(root, category, split)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        sample = self.samples[index]
        cfg = self.cfg
        rgb = load_image(sample.path)
        image = preprocess_image(rgb, cfg.resize, cfg.crop_size, cfg.mean, cfg.std, cfg.interpolation)
        mask = load_mask(sample.mask_path, cfg.resize, cfg.crop_size, image_size=rgb.size)
        return image, mask, sample.label

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @classmethod
    def good_images(cls, folder: str, category: str, data_cfg: DataConfig | None = None) -> "MVTecDataset":
        """The images of a plain folder (not an MVTec tree) as good training images of `category`."""
        if not os.path.isdir(folder):
            raise UserError(f"folder not found: {folder}")
        samples = [Sample(path, 0, GOOD, None) for path in list_images(folder)]
        if not samples:
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
        dataset = cls.__new__(cls)
        Dataset.__init__(dataset)
        dataset.cfg, dataset.category, dataset.split, dataset.samples = data_cfg or DataConfig(), category, "train", samples
        return dataset

    def subset(self, indices: Sequence[int]) -> "MVTecDataset":
        """The same dataset restricted to `indices` (in that order)."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in indices]
        return part


def held_out_split(n_images: int, ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """(indices fitted, indices held out), each ascending: round(ratio * n) images picked by a seeded
    permutation, at least one when ratio > 0, and never all of them (nothing held out of 1 image)."""
    n_held = min(n_images - 1, max(1, round(ratio * n_images))) if ratio > 0 else 0
    held = set(np.random.default_rng(seed).permutation(n_images)[:max(n_held, 0)].tolist())
    return [i for i in range(n_images) if i not in held], sorted(held)
