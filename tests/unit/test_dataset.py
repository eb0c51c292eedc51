import numpy as np
import pytest
from PIL import Image

from datasets.mvtec import MVTecDataset, resolve_categories
from datasets.preprocess import load_image, load_mask, preprocess_image
from utils.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
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


def _gray8(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 30), dtype=np.uint8)


@pytest.mark.parametrize("name, make", [
    ("g16.png", lambda a: Image.fromarray(a.astype(np.uint16) * 257)),          # Pillow: mode I;16
    ("g16.tif", lambda a: Image.fromarray(a.astype(np.uint16) * 257)),
    ("i32.tif", lambda a: Image.fromarray(a.astype(np.int32) * 257)),           # mode I
    ("f01.tif", lambda a: Image.fromarray(a.astype(np.float32) / 255)),         # mode F in [0, 1]
    ("f255.tif", lambda a: Image.fromarray(a.astype(np.float32))),              # mode F in 0..255
    ("l.png", lambda a: Image.fromarray(a)),
    ("la.png", lambda a: Image.fromarray(a).convert("LA")),
    ("p.png", lambda a: Image.fromarray(a).convert("P")),
    ("rgba.png", lambda a: Image.fromarray(a).convert("RGBA")),
])
def test_deep_and_odd_modes_become_the_same_8bit_rgb(tmp_path, name, make):
    """A 16-bit image and its 8-bit version (value / 257) give the same pixels, hence the same scores."""
    gray = _gray8()
    make(gray).save(tmp_path / name)
    rgb = np.asarray(load_image(tmp_path / name))
    assert rgb.dtype == np.uint8 and rgb.shape == gray.shape + (3,)
    assert np.abs(rgb.astype(int) - gray[..., None]).max() <= (1 if name.startswith("f") else 0)


def test_16bit_full_range_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    rgb = np.asarray(load_image(tmp_path / "ramp.png"))[..., 0]
    np.testing.assert_array_equal(rgb, np.rint(ramp / 257.0).astype(np.uint8))
    assert (rgb == 255).mean() < 0.01
    a = preprocess_image(load_image(tmp_path / "ramp.png"), 64, 56, IMAGENET_MEAN, IMAGENET_STD)
    Image.fromarray(np.rint(ramp / 257.0).astype(np.uint8)).save(tmp_path / "ramp8.png")
    b = preprocess_image(load_image(tmp_path / "ramp8.png"), 64, 56, IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_array_equal(a, b)


def test_cmyk_and_nan_float_images(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert tuple(np.asarray(load_image(tmp_path / "c.jpg"))[4, 4]) == pytest.approx((255, 0, 0), abs=8)
    bad = np.full((8, 8), np.nan, np.float32)
    Image.fromarray(bad).save(tmp_path / "nan.tif")
    with pytest.raises(UserError, match="NaN"):
        load_image(tmp_path / "nan.tif")


def test_masks_of_another_size_or_not_black_and_white_are_refused(tmp_path):
    half = np.zeros((32, 32), np.uint8)
    half[:, :16] = 255
    Image.fromarray(half).save(tmp_path / "ok.png")
    assert load_mask(tmp_path / "ok.png", 32, 32, image_size=(32, 32)).sum() == 32 * 16
    with pytest.raises(UserError, match="ok.png' is 32x32, its image 64x64"):
        load_mask(tmp_path / "ok.png", 32, 32, image_size=(64, 64))
    Image.fromarray(half // 255).save(tmp_path / "01.png")          # a 0/1 label image
    assert load_mask(tmp_path / "01.png", 32, 32).sum() == 32 * 16
    red = np.zeros((32, 32, 3), np.uint8)
    red[:, :16, 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    with pytest.raises(UserError, match="red.png' is not black and white"):
        load_mask(tmp_path / "red.png", 32, 32)


def test_category_names_cannot_leave_the_folders(tiny_root):
    from models.model_file import model_path

    for name in ("../widget", "/etc", ".hidden", ".."):
        with pytest.raises(UserError, match="not a plain folder name"):
            resolve_categories(str(tiny_root), name)
        with pytest.raises(UserError, match="not a plain folder name"):
            model_path(str(tiny_root), name)


def test_missing_masks_are_reported_once_per_category(tiny_root, capsys):
    import shutil

    shutil.rmtree(tiny_root / "widget" / "ground_truth")
    MVTecDataset(str(tiny_root), "widget", "test", DataConfig(resize=32, crop_size=24))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: category 'widget'") and "no mask" in err[0]


def test_48bit_rgb_png_is_reduced_to_8_bits(tmp_path):
    """Pillow opens 16-bit-per-channel RGB PNGs as 8-bit RGB (high byte): x * 257 gives back x."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rgb8 = np.random.default_rng(3).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    rows = b"".join(b"\x00" + row.tobytes() for row in rgb8.astype(">u2") * 257)
    (tmp_path / "rgb48.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12, 10, 16, 2, 0, 0, 0))
                                         + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgb48.png")), rgb8)


def test_subfolders_of_train_good_are_reported(tiny_root, capsys):
    (tiny_root / "widget" / "train" / "good" / "extra").mkdir()
    MVTecDataset(str(tiny_root), "widget", "train", DataConfig(resize=32, crop_size=24))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "subfolders of" in err[0] and "(extra)" in err[0]
