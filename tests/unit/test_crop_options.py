"""--resize auto does not crop, --crop_size none means no crop, and a crop that discards area is named."""
from datasets.geometry import choose_geometry, crop_warning
from engine.cli import auto_geometry, config_from_args
from train import build_parser
from utils.config import DataConfig


def _config(*argv):
    args = build_parser().parse_args(["--data_path", "x", *argv])
    config = config_from_args(args)
    return config.data, auto_geometry(args)


def test_auto_resize_alone_keeps_the_whole_image():
    data, auto = _config("--resize", "auto")
    chosen = choose_geometry(data, auto, (500, 200))
    assert chosen.resize == chosen.crop_size == (256, 640) and crop_warning(chosen, "rod") is None


def test_crop_size_none_equals_the_resize():
    assert _config("--resize", "300", "--crop_size", "none")[0].crop_size == 300
    assert _config("--resize", "256,320", "--crop_size", "none")[0].crop_size == (256, 320)


def test_the_mvtec_protocol_default_still_crops_and_says_how_much():
    data, _ = _config()
    assert (data.resize, data.crop_size) == (256, 224)
    warning = crop_warning(data, "bottle")
    assert warning.startswith("warning: bottle: the centre crop 224x224 of the 256x256 resize discards 23.4%")
    assert "16 px top and bottom" in warning and "--crop_size none" in warning
    assert crop_warning(DataConfig(resize=(64, 160), crop_size=(64, 160)), "rod") is None
