"""Sizes as one number or height,width; plain bilinear downscaling."""
import argparse

import numpy as np
import pytest
from PIL import Image

from datasets.preprocess import load_mask, preprocess_image, resized_rgb
from utils.config import Config, DataConfig, crop_size_type, resize_size


def test_size_options_parse_square_and_rectangles():
    assert resize_size("256") == 256 and resize_size("256,256") == 256      # square stays one number
    assert resize_size("256,320") == (256, 320) and crop_size_type("224,288") == (224, 288)
    for bad in ("1", "256,0", "256,320,3", "a,b", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            resize_size(bad)


def test_config_round_trip_and_older_square_files():
    config = Config(data=DataConfig(resize=(256, 320), crop_size=(224, 288), interpolation="bilinear"))
    again = Config.from_dict(config.to_dict())
    assert again.data.resize_hw == (256, 320) and again.data.crop_hw == (224, 288)
    assert again.data.interpolation == "bilinear"
    old = Config.from_dict({"data": {"resize": 256, "crop_size": 224}, "model": {}})
    assert old.data.crop_hw == (224, 224) and old.data.interpolation == "antialias"
    with pytest.raises(ValueError, match="crop_size"):
        Config.from_dict({"data": {"resize": [256, 320], "crop_size": [224, 330]}, "model": {}})


def test_preprocess_resizes_to_height_width_then_centre_crops(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 120, 3), dtype=np.uint8))
    array = preprocess_image(image, (40, 100), (30, 90), (0.5,) * 3, (0.25,) * 3)
    assert array.shape == (3, 30, 90)
    assert resized_rgb(image, (40, 100), (30, 90), "bilinear").shape == (30, 90, 3)
    mask_path = tmp_path / "m.png"
    Image.fromarray(np.full((50, 120), 255, np.uint8)).save(mask_path)
    assert load_mask(mask_path, (40, 100), (30, 90), image_size=(120, 50)).shape == (30, 90)
    assert load_mask(None, (40, 100), (30, 90)).shape == (30, 90)


def test_plain_bilinear_is_two_tap():
    # Halving: every output pixel is the mean of two neighbours (no widened filter), horizontally here.
    row = np.array([[0, 100, 200, 40, 80, 120, 10, 30]], dtype=np.uint8).repeat(2, axis=0)
    image = Image.fromarray(np.stack([row] * 3, axis=-1))
    out = resized_rgb(image, (2, 4), (2, 4), "bilinear")[0, :, 0]
    np.testing.assert_array_equal(out, [50, 120, 100, 20])
    antialias = resized_rgb(image, (2, 4), (2, 4), "antialias")[0, :, 0]
    assert not np.array_equal(antialias, out)                 # PIL's filter spans more pixels
