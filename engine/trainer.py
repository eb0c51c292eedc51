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

from datasets.geometry import choose_geometry, crop_warning, median_size, squash_warning
from datasets.mvtec import MVTecDataset, resolve_categories
from engine.calibration_rule import (FROM_TRAINING_IMAGES, OWN_IMAGE_OUT, GoodImages, GoodScores,
                                     calibrate_and_evaluate, calibration_rule, gathered_good_scores)
from engine.distributed import is_main_process, make_shard
from engine.evaluation import evaluate
from engine.outputs import CategoryOutputs
from engine.pipeline import fit, iterate_batches, rebuild_extractor, shard_images
from engine.settings import RunSettings
from models.feature_extractor import PatchFeatureExtractor, build_extractor, extract
from models.model_file import AnomalyModel, model_path
from models.registry import METHODS, check_config
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
    model, replay, entry_images = fit(extractor, images.fitted, config, category, run, shard)
    if len(images.held_out):
        model.fit_stats["held_out_images"] = float(len(images.held_out))
    rule = calibration_rule(config.model, images, run)

    def good_scores() -> tuple:
        # The training images' scores (each rank its own images, gathered): the fit's kept
        # embeddings where it kept them (no second extraction), else extracted again.
        quiet = replace(run, progress=run.progress and shard.is_main)
        if replay is not None:
            embeddings = replay(run.batch_size)
        else:
            embeddings = (extract(extractor, batch) for batch, _, _ in iterate_batches(
                shard_images(images.fitted, shard), run.batch_size, f"{category}: training images", quiet.progress))
        if rule == OWN_IMAGE_OUT:
            own_image_out = METHODS[model.method].own_image_out_function()
            scores = own_image_out(model, embeddings, entry_images, shard.first_image, run.array_lib, quiet.progress,
                                   shard.gather_rows if shard.world_size > 1 else None)
        else:
            scorer = model.scorer(run.array_lib)
            scores = Scores.concatenate([scorer(e) for e in embeddings])
        return gathered_good_scores(scores.check_finite(), shard)

    if not shard.is_main:
        # Worker 0 alone scores held-out or test images; the others give their images' scores.
        if rule in FROM_TRAINING_IMAGES:
            good_scores()
        return {"category": category}
    if rule not in FROM_TRAINING_IMAGES:
        replay = None       # the kept training features (as large as the fit) are not needed
    with CategoryOutputs(run.save_path, category) as outputs:
        row = calibrate_and_evaluate(model, extractor, images, run, outputs, GoodScores(good_scores))
        outputs.write(os.path.basename(model_path(run.save_path, category)), model.save)
        outputs.publish()
    print(threshold_line(model))
    size_column = METHODS[model.method].size_column
    row.update({"fit_seconds": model.fit_stats["fit_seconds"], size_column: int(model.fit_stats[size_column])})
    return row


def threshold_line(model: AnomalyModel) -> str:
    """One line: where the image threshold sits, from how many good scores, the false-reject rate it
    expects, and its distance to the nearest calibration score."""
    c = model.calibration
    line = f"{model.category}: image threshold {c['image_threshold']:.6g} ({c.get('image_rule', '')})"
    if "calibration_images" in c:
        line += f"; {int(c['calibration_images'])} calibration scores"
    if "expected_false_reject" in c:
        line += f", expected false-reject rate {100 * c['expected_false_reject']:.2f}%"
    if "image_margin" in c:
        line += f"; {c['image_margin']:.4g} from the nearest calibration score"
    return line


def category_geometry(config: Config, run: RunSettings, good: MVTecDataset) -> Config:
    """`config` with the auto sides chosen for this category's images; one warning line (worker 0)
    when the geometry squashes them."""
    size = median_size(sample.path for sample in good.samples)
    config = replace(config, data=choose_geometry(config.data, run.auto_geometry, size))
    try:
        check_config(config)
    except ValueError as err:
        raise UserError(f"--{err}") from None
    if is_main_process():
        for warning in (squash_warning(config.data, size, good.category), crop_warning(config.data, good.category)):
            if warning:
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
