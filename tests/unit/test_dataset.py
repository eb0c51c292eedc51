import numpy as np
import pytest
from PIL import Image

from datasets.mvtec import MVTecDataset, resolve_categories
from datasets.preprocess import load_mask, preprocess_image
from utils.config import DataConfig
from utils.errors import UserError


def _write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


@pytest.fixture()
def tiny_root(tmp_path):
    """Two categories in MVTec layout with a grayscale, an RGBA and an RGB image."""
    rng = np.random.default_rng(0)
    cat = tmp_path / "widget"
    _write(cat / "train/good/000.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    _write(cat / "train/good/001.png", rng.integers(0, 255, (40, 40), dtype=np.uint8))          # grayscale
    _write(cat / "test/good/000.png", rng.integers(0, 255, (40, 40, 4), dtype=np.uint8))       # RGBA
    _write(cat / "test/crack/000.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 12:30] = 255
    _write(cat / "ground_truth/crack/000_mask.png", mask)
    (tmp_path / "other/train/good").mkdir(parents=True)
    (tmp_path / "not_a_category").mkdir()
    return tmp_path


def test_test_split_items_labels_and_masks(tiny_root):
    cfg = DataConfig(resize=32, crop_size=24)
    ds = MVTecDataset(str(tiny_root), "widget", "test", cfg)
    assert [s.defect for s in ds.samples] == ["crack", "good"]
    assert ds.labels.tolist() == [1, 0]
    image, mask, label = ds[0]
    assert image.shape == (3, 24, 24) and image.dtype == np.float32
    assert mask.shape == (24, 24) and set(np.unique(mask)) == {0, 1} and label == 1
    image, mask, label = ds[1]                      # RGBA becomes RGB, good has an empty mask
    assert image.shape == (3, 24, 24) and mask.sum() == 0 and label == 0
    train = MVTecDataset(str(tiny_root), "widget", "train", cfg)
    assert train[1][0].shape == (3, 24, 24)        # grayscale becomes RGB


def test_mask_follows_image_geometry():
    # A mask covering the left half stays the left half after resize 32 and centre crop 24 (offset 4).
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    img = Image.fromarray(mask)
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.png")
        img.save(path)
        out = load_mask(path, resize=32, crop_size=24)
    assert out.shape == (24, 24)
    assert out[:, :12].all() and not out[:, 12:].any()
    rgb = Image.fromarray(np.full((64, 64, 3), 255, np.uint8))
    normalised = preprocess_image(rgb, 32, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    np.testing.assert_allclose(normalised, 2.0)   # (1 - 0.5) / 0.25


def test_resolve_categories(tiny_root):
    assert resolve_categories(str(tiny_root), "all") == ["other", "widget"]
    assert resolve_categories(str(tiny_root), "widget") == ["widget"]
    with pytest.raises(UserError, match="unknown category"):
        resolve_categories(str(tiny_root), "bottle")
    with pytest.raises(UserError, match="no training images"):
        resolve_categories(str(tiny_root), "not_a_category")
    with pytest.raises(UserError, match="data path not found"):
        resolve_categories(str(tiny_root / "nope"), "all")
    with pytest.raises(UserError, match="none of the MVTec objects"):
        resolve_categories(str(tiny_root), "objects")


def test_corrupt_image_is_a_clear_error(tiny_root):
    (tiny_root / "widget/train/good/002.png").write_bytes(b"not a png at all")
    ds = MVTecDataset(str(tiny_root), "widget", "train", DataConfig(resize=32, crop_size=24))
    with pytest.raises(UserError, match="cannot decode image .*002.png"):
        ds[2]
