"""predict.py's and infer.py's scoring settings: one ScoringRun built from the options, passed whole."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from deploy.batch_scoring import ScoringRun, run_inference
from deploy.cli import add_batch_size_arg, add_decision_args, scoring_run, script_parser
from models.scoring import ScoringOptions


def _args(*options: str):
    parser = script_parser("test")
    add_batch_size_arg(parser)
    add_decision_args(parser)
    parser.add_argument("--save_path", default="output/infer")
    return parser.parse_args(list(options))


def test_the_options_become_one_scoring_run():
    run = scoring_run(_args("--batch_size", "4", "--image_threshold", "2.5", "--pixel_threshold", "1.5",
                            "--no_pictures", "--save_maps", "--save_path", "out"), ScoringOptions("paddle", 2), timer="t")
    assert run == ScoringRun(save_path="out", batch_size=4, image_threshold=2.5, pixel_threshold=1.5, figures=False,
                             save_maps=True, scoring=ScoringOptions("paddle", 2), timer="t")
    assert scoring_run(_args(), ScoringOptions()) == ScoringRun(save_path="output/infer")   # the defaults agree


def test_run_inference_takes_the_run_whole():
    assert list(inspect.signature(run_inference).parameters) == ["paths", "model", "make_embedder", "run"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ScoringRun(save_path="x").figures = False
