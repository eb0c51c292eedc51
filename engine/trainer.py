"""Per-category training and evaluation, results tables: what train.py and eval.py run."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from datasets.mvtec import MVTecDataset, held_out_split, resolve_categories
from datasets.preprocess import load_image, resized_rgb
from engine.distributed import is_main_process, make_shard
from engine.pipeline import fit, iterate_batches, rebuild_extractor, score_batches, shard_images
from models.calibration import calibrate, calibrate_held_out
from models.feature_extractor import PatchFeatureExtractor, build_extractor, extract
from models.fit_memory import check_fit_memory
from models.model_file import AnomalyModel, EmbeddingStream, model_path
from models.registry import METHODS
from models.scoring import Scores
from models.sharding import Shard
from utils.config import Config
from utils.errors import UserError
from utils.io import output_lock, remove_stale_temporaries
from utils.metrics import compute_metrics
from utils.table import format_table, with_mean_row, write_csv
from utils.visualize import save_figure

METRIC_COLUMNS = ("Image_AUROC", "Pixel_AUROC", "PRO_score", "false_reject_rate", "miss_rate")


def evaluate(model: AnomalyModel, extractor: PatchFeatureExtractor, data_path: str, batch_size: int,
             with_pro: bool, save_path: str, figures: bool = False,
             progress: bool = True, backend: str = "numpy") -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the test split, write per-image scores (and figures).

    Returns the metrics row and the calibration the labelled test split implies. The row's
    false_reject_rate (good images flagged) and miss_rate (defective images passed) are at the
    model's stored image threshold, or at the test split's own (F1-optimal) one when it has none.
    """
    test_set = MVTecDataset(data_path, model.category, "test", model.config.data)
    scores, masks, labels = score_batches(model, extractor, test_set, batch_size, progress, backend)
    metrics = compute_metrics(scores.image_scores, labels, scores.anomaly_maps, masks, with_pro)
    test_calibration = calibrate(scores.image_scores, scores.anomaly_maps, labels, masks)
    threshold = model.calibration.get("image_threshold", test_calibration["image_threshold"])
    flagged = scores.image_scores >= threshold
    metrics["false_reject_rate"] = float(flagged[labels == 0].mean()) if (labels == 0).any() else float("nan")
    metrics["miss_rate"] = float((~flagged[labels == 1]).mean()) if (labels == 1).any() else float("nan")
    rows = [{"path": s.path, "defect": s.defect, "label": s.label, "image_score": float(v)}
            for s, v in zip(test_set.samples, scores.image_scores)]
    write_csv(os.path.join(save_path, f"{model.category}_test_scores.csv"), rows,
              ("path", "defect", "label", "image_score"))
    if figures:
        threshold = model.calibration.get("pixel_threshold", test_calibration["pixel_threshold"])
        save_test_figures(model, test_set, scores.anomaly_maps, masks, threshold, save_path, progress)
    return {"category": model.category, **metrics}, test_calibration


def save_test_figures(model: AnomalyModel, test_set: MVTecDataset, maps: np.ndarray, masks: np.ndarray,
                      threshold: float, save_path: str, progress: bool) -> None:
    vmin, vmax = float(maps.min()), float(maps.max())
    data = model.config.data
    folder = os.path.join(save_path, "pics", model.category)
    for sample, amap, mask in tqdm(list(zip(test_set.samples, maps, masks)), desc=f"{model.category}: figures",
                                   disable=not progress, leave=False):
        name = f"{sample.defect}_{os.path.splitext(os.path.basename(sample.path))[0]}.png"
        image = resized_rgb(load_image(sample.path), data.resize, data.crop_size, data.interpolation)
        save_figure(os.path.join(folder, name), image, amap, threshold, vmin, vmax,
                    title=f"{model.category}/{sample.defect}/{os.path.basename(sample.path)}",
                    mask=mask if sample.label else None)


def train_category(config: Config, data_path: str, category: str, save_path: str, batch_size: int,
                   run_eval: bool, with_pro: bool, progress: bool = True, backend: str = "numpy") -> dict[str, Any]:
    extractor = build_extractor(config.model)
    m = config.model
    good = MVTecDataset(data_path, category, "train", config.data)
    fitted, held_out = held_out_split(len(good), m.val_ratio, m.seed)
    train_set = good.subset(fitted)
    shard = make_shard(len(train_set))
    model, training_embeddings = fit(extractor, train_set, config, category, batch_size, progress, backend, shard)
    row: dict[str, Any] = {"category": category}
    if held_out:
        # Thresholds from good images the model has not seen; evaluation (if asked) reports how
        # they do on the test split.
        training_embeddings = None
        if not shard.is_main:
            return row          # rank 0 calibrates, evaluates and writes
        model.calibration = held_out_calibration(model, extractor, good.subset(held_out), batch_size, progress,
                                                 backend)
        model.fit_stats["held_out_images"] = float(len(held_out))
        if run_eval:
            row, _ = evaluate(model, extractor, data_path, batch_size, with_pro, save_path, progress=progress,
                              backend=backend)
    elif run_eval:
        # The kept training features (as large as the whole fit) are not needed for evaluation.
        training_embeddings = None
        if not shard.is_main:
            return row          # rank 0 evaluates and writes
        row, model.calibration = evaluate(model, extractor, data_path, batch_size, with_pro, save_path,
                                          progress=progress, backend=backend)
    else:
        # No labelled split: the good training images' own scores are the reference, from the
        # embeddings the fit kept where it did (no second extraction); each rank scores its own.
        if training_embeddings is None:
            scores = score_batches(model, extractor, shard_images(train_set, shard), batch_size,
                                   progress and shard.is_main, backend)[0]
        else:
            scorer = model.scorer(backend)
            scores = Scores.concatenate([scorer(e) for e in training_embeddings(batch_size)])
            training_embeddings = None
        model.calibration = calibrate_good_images(scores, shard)
        if not shard.is_main:
            return row
    model.save(model_path(save_path, category))
    size_column = METHODS[model.method].size_column
    row.update({"fit_seconds": model.fit_stats["fit_seconds"], size_column: int(model.fit_stats[size_column])})
    return row


def held_out_calibration(model: AnomalyModel, extractor: PatchFeatureExtractor, images: MVTecDataset,
                         batch_size: int, progress: bool, backend: str) -> dict[str, Any]:
    """The --val_ratio rule: thresholds from the scores of good images the model has not seen."""
    m = model.config.model
    scores = score_batches(model, extractor, images, batch_size, progress, backend)[0]
    return calibrate_held_out(scores.image_scores, scores.anomaly_maps, m.max_false_reject, m.pixel_false_reject)


def calibrate_good_images(scores: Scores, shard: Shard) -> dict[str, Any]:
    """Good-only calibration over every rank's training images.

    The rule needs the images' scores and the range of their maps, so that is all that is gathered
    from the ranks (a plain run passes its maps as they are).
    """
    if shard.world_size == 1:
        return calibrate(scores.image_scores, scores.anomaly_maps)
    maps = scores.anomaly_maps
    extremes = shard.gather_rows(np.array([maps.min(), maps.max()], dtype=maps.dtype))
    return calibrate(shard.gather_rows(scores.image_scores), extremes)


def report(rows: list[dict[str, Any]], columns: tuple[str, ...], csv_path: str) -> str:
    """Print the results table with a mean row and save it as CSV; returns the table text."""
    numeric = [c for c in columns if c in METRIC_COLUMNS or c == "fit_seconds"]
    rows = with_mean_row(rows, "category", numeric)
    table = format_table(rows, columns)
    write_csv(csv_path, rows, columns)
    print(table)
    print(f"saved {csv_path}")
    return table


def train(config: Config, data_path: str, category: str, save_path: str, batch_size: int, run_eval: bool,
          with_pro: bool, progress: bool = True, backend: str = "numpy") -> list[dict[str, Any]]:
    """train.py: fit (and evaluate) every category `category` names, print and save the table."""
    categories = resolve_categories(data_path, category)
    main = is_main_process()
    # One run at a time per folder: two would mix their models and tables. Only worker 0 of a
    # distributed fit writes, so only it holds the folder.
    with output_lock(save_path) if main else contextlib.nullcontext():
        if main:
            remove_stale_temporaries(save_path)
        rows = [train_category(config, data_path, name, save_path, batch_size, run_eval, with_pro, progress, backend)
                for name in categories]
        if not main:
            return rows             # worker 0 prints and saves the table
        columns = (("category",) + (METRIC_COLUMNS if run_eval else ())
                   + ("fit_seconds", METHODS[config.model.method].size_column))
        report(rows, columns, os.path.join(save_path, "train_results.csv"))
    return rows


def update(model_file: str, data_path: str, category: str | None, save_path: str, batch_size: int,
           run_eval: bool, with_pro: bool, pretrained: str | None = None, progress: bool = True,
           backend: str = "numpy") -> dict[str, Any]:
    """train.py --update: add good images to a trained model (PatchCore: extend_memory_bank; PaDiM
    trained with --keep_sums: extend_gaussians).

    New images: ROOT/CATEGORY/train/good when `data_path` is an MVTec tree, else every image of the
    folder `data_path`. The model's own settings apply (extractor, k, seed, val_ratio): the seeded
    held-out part of the new images recalibrates the thresholds (model trained with --val_ratio > 0);
    otherwise --eval recalibrates on the test split, or the image threshold becomes the larger of
    the old one and the new images' highest score. The result replaces <save_path>/<category>.pdparams.
    """
    model = AnomalyModel.load(model_file)
    spec = METHODS[model.method]
    if model.method == "padim" and "sum_outer" not in model.arrays:
        raise UserError(f"{model_file} is a PaDiM model without running sums: train it with --keep_sums to "
                        f"update it, or fit again on all images")
    if category and category != model.category:
        raise UserError(f"{model_file} is the model of category '{model.category}', not '{category}'")
    m = model.config.model
    previous = dict(model.calibration)
    tree = os.path.join(data_path, model.category, "train")
    good = (MVTecDataset(data_path, model.category, "train", model.config.data) if os.path.isdir(tree)
            else MVTecDataset.good_images(data_path, model.category, model.config.data))
    if run_eval and not os.path.isdir(os.path.join(data_path, model.category, "test")):
        raise UserError(f"--eval needs an MVTec tree with {model.category}/test under --data_path; "
                        f"update from the folder, then run eval.py on the tree")
    fitted, held_out = held_out_split(len(good), m.val_ratio, m.seed)
    extractor = rebuild_extractor(model, pretrained)
    check_fit_memory(model.config, len(fitted), batch_size)
    with output_lock(save_path):
        remove_stale_temporaries(save_path)
        embeddings = (extract(extractor, images) for images, _, _ in
                      iterate_batches(good.subset(fitted), batch_size, f"{model.category}: new features", progress))
        arrays, stats = spec.update_function()(model.arrays, EmbeddingStream(embeddings, len(fitted)), m, progress)
        model.arrays.update(arrays)
        seen = model.fit_stats
        if "train_patches" in stats:
            stats["train_patches"] += seen.get("train_patches", 0.0)
        stats.update(train_images=seen.get("train_images", 0.0) + len(fitted),
                     held_out_images=seen.get("held_out_images", 0.0) + len(held_out),
                     updates=seen.get("updates", 0.0) + 1, updated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        seen.update(stats)
        row: dict[str, Any] = {"category": model.category}
        if held_out:
            model.calibration = held_out_calibration(model, extractor, good.subset(held_out), batch_size, progress,
                                                     backend)
        if run_eval:
            row, test_calibration = evaluate(model, extractor, data_path, batch_size, with_pro, save_path,
                                             progress=progress, backend=backend)
            if not held_out:
                model.calibration = test_calibration
        elif not held_out:
            scores = score_batches(model, extractor, good.subset(fitted), batch_size, progress, backend)[0]
            model.calibration = calibrate(scores.image_scores, scores.anomaly_maps)
            for key in ("image_threshold", "pixel_threshold", "image_max", "pixel_max"):
                # The old images' own scores are not recomputed: their old maxima still bound them.
                model.calibration[key] = max(model.calibration[key], previous.get(key, -np.inf))
        model.save(model_path(save_path, model.category))
        row.update({"added_images": len(fitted), "train_images": int(seen["train_images"])})
        if spec.size_column in seen:
            row[spec.size_column] = int(seen[spec.size_column])
        report([row], tuple(row), os.path.join(save_path, "update_results.csv"))
    return row


def evaluate_saved(data_path: str, category: str, model_dir: str, save_path: str, batch_size: int,
                   with_pro: bool, figures: bool = False, arch: str | None = None, pretrained: str | None = None,
                   progress: bool = True, backend: str = "numpy") -> list[dict[str, Any]]:
    """eval.py: evaluate the saved model of every category `category` names, print and save the table."""
    categories = resolve_categories(data_path, category)
    paths = {name: model_path(model_dir, name) for name in categories}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise UserError(f"no trained model {missing[0]}: run train.py for that category first")
    with output_lock(save_path):
        remove_stale_temporaries(save_path)
        rows = []
        for path in paths.values():
            model = AnomalyModel.load(path)
            model.check_arch(arch)
            extractor = rebuild_extractor(model, pretrained)
            row, _ = evaluate(model, extractor, data_path, batch_size, with_pro, save_path, figures, progress,
                              backend)
            rows.append(row)
        report(rows, ("category",) + METRIC_COLUMNS, os.path.join(save_path, "eval_results.csv"))
    return rows
