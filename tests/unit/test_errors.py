"""The central error handling: every failure an entry script can meet is one line and a status."""
import errno
import math

import pytest

from models.registry import check_config
from utils.config import Config, DataConfig, ModelConfig, finite_float, positive_int, resize_int
from utils.errors import first_line, last_line, run_cli, script_parser


def _run(exception, capsys):
    def main():
        raise exception
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    return exit_info.value.code, lines[0]


def test_os_errors_interrupts_and_memory_are_one_line(capsys):
    code, line = _run(OSError(errno.ENOSPC, "No space left on device", "/out/part.pdparams"), capsys)
    assert code == 2 and line == "error: no space left on device while writing: /out/part.pdparams"
    code, line = _run(PermissionError(errno.EACCES, "Permission denied", "/m/model.pdiparams"), capsys)
    assert code == 2 and line == "error: permission denied: /m/model.pdiparams"
    code, line = _run(KeyboardInterrupt(), capsys)
    assert code == 130 and line == "error: interrupted"
    code, line = _run(MemoryError(), capsys)
    assert code == 2 and "out of memory" in line


@pytest.mark.parametrize("parse, text", [(positive_int, "0"), (positive_int, "-1"), (positive_int, "1.5"),
                                         (resize_int, "1"), (finite_float, "nan"), (finite_float, "inf"),
                                         (finite_float, "-inf"), (finite_float, "x"),
                                         # finite, but beyond float32: the threshold would become inf
                                         (finite_float, "1e39"), (finite_float, "-3.5e38")])
def test_number_types_refuse(parse, text, capsys):
    parser = script_parser("test")
    parser.add_argument("--value", type=parse)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([f"--value={text}"])   # "=": argparse takes "-3.5e38" alone for an option
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and "--value" in lines[0]


@pytest.mark.parametrize("data, model, name", [
    ({"resize": 64, "crop_size": 65}, {}, "crop_size"), ({}, {"k": 0.0}, "k"), ({}, {"k": 100.5}, "k"),
    ({}, {"method": "padim", "k": 2.5}, "k"), ({}, {"num_neighbors": 0}, "num_neighbors"),
    ({}, {"sigma": -1.0}, "sigma"), ({"std": (1.0, 0.0, 1.0)}, {}, "std")])
def test_config_ranges(data, model, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        check_config(Config(DataConfig(**data), ModelConfig(**model)))
    assert math.isfinite(ModelConfig().k)


@pytest.mark.parametrize("message,first,last", [
    ("", "RuntimeError", "RuntimeError"),
    ("  \n ", "RuntimeError", "RuntimeError"),
    ("one", "one", "one"),
    ("C++ stack\n  frame 1\nInvalidArgument: shape mismatch\n", "C++ stack", "InvalidArgument: shape mismatch"),
])
def test_first_and_last_line_of_an_error(message, first, last):
    err = RuntimeError(message)
    assert first_line(err) == first and last_line(err) == last


def test_lines_of_an_error_are_cut_to_the_limit():
    assert last_line(ValueError("a\n" + "x" * 300), 120) == "x" * 120
    assert first_line(ValueError("y" * 300)) == "y" * 160
