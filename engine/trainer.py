"""Per-category training and evaluation, results tables: what train.py and eval.py run.

Each entry point is a short sequence of named steps over one RunSettings (engine.settings); the
thresholds follow the one rule of engine.calibration_rule; a category's files are written as one
unit (engine.outputs).
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import replace
from typing import Any

from datasets.geometry import choose_geometry, median_size, squash_warning
from datasets.mvtec import MVTecDataset, resolve_categories
from engine.calibration_rule import GoodImages, calibrate_and_evaluate, gathered_good_scores
from engine.distributed import is_main_process, make_shard
from engine.evaluation import evaluate
from engine.outputs import CategoryOutputs
from engine.pipeline import fit, rebuild_extractor, score_batches, shard_images
from engine.settings import RunSettings
from models.feature_extractor import PatchFeatureExtractor, build_extractor
from models.model_file import AnomalyModel, model_path
from models.registry import METHODS
from models.scoring import Scores
from utils.config import Config
from utils.errors import UserError
from utils.io import output_lock, remove_stale_temporaries
from utils.table import format_table, with_mean_row, write_csv

METRIC_COLUMNS = ("Image_AUROC", "Pixel_AUROC", "PRO_score", "false_reject_rate", "miss_rate")


def train(config: Config, run: RunSettings) -> list[dict[str, Any]]:
    """train.py: fit (and evaluate) every category `run.category` names, print and save the table."""
    categories = resolve_categories(run.data_path, run.category)
    main = is_main_process()
    # One run at a time per folder: two would mix their models and tables. Only worker 0 of a
    # distributed fit writes, so only it holds the folder.
    with output_lock(run.save_path) if main else contextlib.nullcontext():
        if main:
            remove_stale_temporaries(run.save_path)
        rows = [train_category(config, run, name) for name in categories]
        if main:
            columns = (("category",) + (METRIC_COLUMNS if run.run_eval else ())
                       + ("fit_seconds", METHODS[config.model.method].size_column))
            report(rows, columns, os.path.join(run.save_path, "train_results.csv"))
    return rows


def train_category(config: Config, run: RunSettings, category: str) -> dict[str, Any]:
    """Fit one category, place its thresholds, evaluate it if asked; worker 0 writes its files."""
    config = category_geometry(config, run, MVTecDataset(run.data_path, category, "train", config.data))
    extractor = build_extractor(config.model)
    images = GoodImages.split(MVTecDataset(run.data_path, category, "train", config.data), config.model)
    shard = make_shard(len(images.fitted))
    model, replay = fit(extractor, images.fitted, config, category, run, shard)
    if len(images.held_out):
        model.fit_stats["held_out_images"] = float(len(images.held_out))
    if len(images.held_out) or run.run_eval:
        replay = None       # the kept training features (as large as the fit) are not needed
        if not shard.is_main:
            return {"category": category}       # worker 0 alone scores held-out or test images

    def good_scores() -> tuple:
        # The fit's kept embeddings where it kept them (no second extraction); each rank its own.
        if replay is None:
            quiet = replace(run, progress=run.progress and shard.is_main)
            return gathered_good_scores(score_batches(model, extractor, shard_images(images.fitted, shard),
                                                      quiet)[0], shard)
        scorer = model.scorer(run.backend)
        return gathered_good_scores(Scores.concatenate([scorer(e) for e in replay(run.batch_size)]), shard)

    with CategoryOutputs(run.save_path, category) as outputs:
        row = calibrate_and_evaluate(model, extractor, images, run, outputs, good_scores)
        if not shard.is_main:
            return row
        outputs.write(os.path.basename(model_path(run.save_path, category)), model.save)
        outputs.publish()
    size_column = METHODS[model.method].size_column
    row.update({"fit_seconds": model.fit_stats["fit_seconds"], size_column: int(model.fit_stats[size_column])})
    return row


def category_geometry(config: Config, run: RunSettings, good: MVTecDataset) -> Config:
    """`config` with the auto sides chosen for this category's images; one warning line (worker 0)
    when the geometry squashes them."""
    size = median_size(sample.path for sample in good.samples)
    config = replace(config, data=choose_geometry(config.data, run.auto_geometry, size))
    try:
        config.check()
    except ValueError as err:
        raise UserError(f"--{err}") from None
    warning = squash_warning(config.data, size, good.category)
    if warning and is_main_process():
        print(warning, file=sys.stderr)
    return config


def report(rows: list[dict[str, Any]], columns: tuple[str, ...], csv_path: str) -> str:
    """Print the results table with a mean row and save it as CSV; returns the table text."""
    numeric = [c for c in columns if c in METRIC_COLUMNS or c == "fit_seconds"]
    rows = with_mean_row(rows, "category", numeric)
    table = format_table(rows, columns)
    write_csv(csv_path, rows, columns)
    print(table)
    print(f"saved {csv_path}")
    return table


def evaluate_saved(run: RunSettings) -> list[dict[str, Any]]:
    """eval.py: evaluate the saved model of every category `run.category` names, print and save the table."""
    categories = resolve_categories(run.data_path, run.category)
    paths = [model_path(run.models_folder, name) for name in categories]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"no trained model {missing[0]}: run train.py for that category first")
    with output_lock(run.save_path):
        remove_stale_temporaries(run.save_path)
        rows = [evaluate_saved_model(path, run) for path in paths]
        report(rows, ("category",) + METRIC_COLUMNS, os.path.join(run.save_path, "eval_results.csv"))
    return rows


def evaluate_saved_model(path: str, run: RunSettings) -> dict[str, Any]:
    model = AnomalyModel.load(path)
    model.check_arch(run.arch)
    extractor: PatchFeatureExtractor = rebuild_extractor(model, run.pretrained)
    with CategoryOutputs(run.save_path, model.category) as outputs:
        row, _ = evaluate(model, extractor, run, outputs)
        outputs.publish()
    return row
