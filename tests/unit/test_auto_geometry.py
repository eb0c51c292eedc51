"""--resize auto / --crop_size auto: the geometry chosen from the training images' shape."""
from __future__ import annotations

import argparse

import pytest
from PIL import Image

from datasets.geometry import (GRID_STRIDE, AutoGeometry, choose_geometry, median_size, shape_with_short_side,
                               squash_warning)
from utils.config import AutoSize, DataConfig, resize_size


def _images(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{i}.png"
        Image.new("RGB", (w, h), (i * 40, 0, 0)).save(path)
        paths.append(path)
    return paths


def test_median_size_reads_headers_and_takes_the_median(tmp_path):
    paths = _images(tmp_path, [(500, 200), (505, 201), (900, 100)])
    assert median_size(paths) == (505, 200)


def test_auto_resize_keeps_the_aspect_with_stride_multiples():
    data = choose_geometry(DataConfig(), AutoGeometry(resize_short=256, crop_short=224), (1263, 500))
    assert data.resize == (256, 640) and data.crop_size == (224, 560)
    assert all(side % GRID_STRIDE == 0 for side in data.resize_hw + data.crop_hw)
    tall = choose_geometry(DataConfig(), AutoGeometry(resize_short=256), (200, 500))
    assert tall.resize == (640, 256) and tall.crop_size == 224       # a crop not asked for stays
    square = choose_geometry(DataConfig(), AutoGeometry(resize_short=256, crop_short=224), (300, 300))
    assert square.resize == 256 and square.crop_size == 224           # square files stay as they were


def test_fixed_sizes_are_left_alone_and_short_sides_round_to_the_stride():
    assert choose_geometry(DataConfig(resize=(256, 320)), AutoGeometry(), (1000, 100)).resize == (256, 320)
    assert shape_with_short_side(2.5, 250) == (256, 640)


def test_squash_warning_names_the_size_and_the_option():
    warning = squash_warning(DataConfig(), (1263, 500), "rod")
    assert warning.startswith("warning: rod:") and "1263x500" in warning and "--resize auto" in warning
    assert "\n" not in warning
    assert squash_warning(DataConfig(), (600, 500), "rod") is None          # 1.2x: within the limit
    assert squash_warning(DataConfig(resize=(256, 640)), (1263, 500), "rod") is None


def test_size_options_parse_auto():
    assert resize_size("auto") == AutoSize(None) and resize_size("auto:320") == AutoSize(320)
    assert resize_size("256,320") == (256, 320)
    with pytest.raises(argparse.ArgumentTypeError):
        resize_size("auto:1")


def test_elongated_parts_are_generated_deterministically_with_masked_scratches(tmp_path):
    from datasets.synthetic import generate_elongated_category

    for run, across in (("a", False), ("b", False), ("c", True)):
        generate_elongated_category(tmp_path / run, "rod", n_train=2, n_test_good=1, n_test_defect=2, height=64,
                                    across=across)
    folder = tmp_path / "a" / "rod"
    assert median_size(sorted((folder / "train" / "good").glob("*.png"))) == (160, 64)
    for name in ("test/scratch/000.png", "ground_truth/scratch/001_mask.png"):
        assert (folder / name).read_bytes() == (tmp_path / "b" / "rod" / name).read_bytes()
    import numpy as np
    along = np.asarray(Image.open(folder / "ground_truth" / "scratch" / "000_mask.png")) > 0
    across = np.asarray(Image.open(tmp_path / "c" / "rod" / "ground_truth" / "scratch" / "000_mask.png")) > 0
    rows, cols = np.nonzero(along)
    assert along.any() and np.ptp(cols) > 3 * np.ptp(rows)          # a line along the long side
    rows, cols = np.nonzero(across)
    assert across.any() and np.ptp(rows) > 3 * np.ptp(cols)
