"""train.py --update: good images added to a trained model, its thresholds placed again.

PatchCore: extend_memory_bank; PaDiM trained with --keep_sums: extend_gaussians. New images:
ROOT/CATEGORY/train/good when --data_path is an MVTec tree, else every image of that folder. The
model's own settings apply (extractor, k, seed, val_ratio); an option on the command line that a
model fixes and that differs from the model's is refused, not ignored. The thresholds follow
engine.calibration_rule; the result replaces <save_path>/<category>.pdparams.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from datasets.mvtec import MVTecDataset
from engine.calibration_rule import GoodImages, GoodScores, calibrate_and_evaluate, calibration_rule, never_below
from engine.outputs import CategoryOutputs
from engine.pipeline import extract_batches, rebuild_extractor, score_batches
from engine.settings import FIXED_OPTIONS, RunSettings
from engine.trainer import report
from models.feature_extractor import PatchFeatureExtractor
from models.memory_estimate import check_fit_memory
from models.model_file import AnomalyModel, EmbeddingStream, model_path
from models.registry import METHOD_ALIASES, METHODS
from utils.config import AutoSize
from utils.errors import UserError
from utils.io import output_lock, remove_stale_temporaries
from utils.launch import launched_world

@dataclass(frozen=True)
class ReadModel:
    """A model file as read, with what identifies that version of the file."""
    path: str
    model: AnomalyModel
    version: tuple[int, int, int]       # (inode, size, mtime_ns)

    @classmethod
    def read(cls, path: str) -> "ReadModel":
        model = AnomalyModel.load(path)
        return cls(path, model, _file_version(path))

    def check_unchanged(self) -> None:
        """Refuse to replace a model that another run rewrote meanwhile: its update would be lost."""
        if _file_version(self.path) != self.version:
            raise UserError(f"{self.path} changed while this update ran (another run wrote it): "
                            f"run the update again on the new file")


def _file_version(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return st.st_ino, st.st_size, st.st_mtime_ns


def update(model_file: str, run: RunSettings) -> dict[str, Any]:
    """train.py --update MODEL: see the module doc."""
    if launched_world()[1] > 1:
        raise UserError("--update runs in one process: start it with python train.py, "
                        "not under paddle.distributed.launch")
    # The lock comes before the model is read: a second update of the same folder is refused
    # instead of both reading the same old model and one of them being lost.
    with output_lock(run.save_path):
        remove_stale_temporaries(run.save_path)
        source = ReadModel.read(model_file)
        model = source.model
        check_updatable(model, model_file, run)
        images = GoodImages.split(new_good_images(model, run), model.config.model)
        extractor = rebuild_extractor(model, run.pretrained)
        check_fit_memory(model.config, len(images.fitted), run.batch_size)
        extend_model(model, extractor, images, run)
        with CategoryOutputs(run.save_path, model.category) as outputs:
            row = recalibrate(model, extractor, images, run, outputs)
            source.check_unchanged()
            outputs.write(os.path.basename(model_path(run.save_path, model.category)), model.save)
            outputs.publish()
        report_update(model, row, len(images.fitted), run)
    return row


def check_updatable(model: AnomalyModel, model_file: str, run: RunSettings) -> None:
    spec = METHODS[model.method]
    if any(name not in model.arrays for name, _ in spec.update_arrays):
        raise UserError(f"{model_file} is a {spec.title} model without running sums: train it with --keep_sums to "
                        f"update it, or fit again on all images")
    if run.category and run.category != model.category:
        raise UserError(f"{model_file} is the model of category '{model.category}', not '{run.category}'")
    for option, value in run.fixed_options:
        section = getattr(model.config, FIXED_OPTIONS[option])
        stored = getattr(section, option)
        given = METHOD_ALIASES.get(value, value) if option == "method" else value
        if isinstance(stored, tuple) and isinstance(given, (int, float)):
            given = (given, given)
        if given != stored:
            raise UserError(f"--{option} {_shown(value)} differs from the model's {option} "
                            f"({_shown(stored)}): --update keeps the model's own settings; drop the option "
                            f"or fit a new model")
    if run.run_eval and not os.path.isdir(os.path.join(run.data_path, model.category, "test")):
        raise UserError(f"--eval needs an MVTec tree with {model.category}/test under --data_path; "
                        f"update from the folder, then run eval.py on the tree")


def _shown(value: Any) -> str:
    """An option's value as the command line writes it."""
    if isinstance(value, AutoSize):
        return "auto" if value.short is None else f"auto:{value.short}"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def new_good_images(model: AnomalyModel, run: RunSettings) -> MVTecDataset:
    tree = os.path.join(run.data_path, model.category, "train")
    if os.path.isdir(tree):
        return MVTecDataset(run.data_path, model.category, "train", model.config.data)
    return MVTecDataset.good_images(run.data_path, model.category, model.config.data)


def extend_model(model: AnomalyModel, extractor: PatchFeatureExtractor, images: GoodImages,
                 run: RunSettings) -> None:
    """Add the fitted new images to the model's arrays and count them in its fit_stats."""
    spec = METHODS[model.method]
    embeddings = extract_batches(extractor, model.config.data.crop_hw, images.fitted, run.batch_size,
                                 f"{model.category}: new features", run.progress)
    arrays, stats = spec.update_function()(model.arrays, EmbeddingStream(embeddings, len(images.fitted)),
                                           model.config.model, run.progress)
    model.arrays.update(arrays)
    seen = model.fit_stats
    if "train_patches" in stats:
        stats["train_patches"] += seen.get("train_patches", 0.0)
    stats.update(train_images=seen.get("train_images", 0.0) + len(images.fitted),
                 held_out_images=seen.get("held_out_images", 0.0) + len(images.held_out),
                 updates=seen.get("updates", 0.0) + 1, updated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    seen.update(stats)


def recalibrate(model: AnomalyModel, extractor: PatchFeatureExtractor, images: GoodImages, run: RunSettings,
                outputs: CategoryOutputs) -> dict[str, Any]:
    """The thresholds by the one rule, never below the previous ones where the rule says so."""
    previous = dict(model.calibration)

    def good_scores() -> tuple:
        scores = score_batches(model, extractor, images.fitted, run)[0]
        return scores.image_scores, scores.anomaly_maps

    # The added images are in the bank (their in-sample scores are low): an own_image_out threshold
    # from them is kept at the previous one unless they push it higher (never_below).
    row = calibrate_and_evaluate(model, extractor, images, run, outputs,
                                 GoodScores(good_scores, "the added images' scores against the updated bank"))
    model.calibration = never_below(model.calibration, previous, calibration_rule(model.config.model, images, run))
    return row


def report_update(model: AnomalyModel, row: dict[str, Any], added: int, run: RunSettings) -> None:
    seen = model.fit_stats
    row.update({"added_images": added, "train_images": int(seen["train_images"])})
    size_column = METHODS[model.method].size_column
    if size_column in seen:
        row[size_column] = int(seen[size_column])
    report([row], tuple(row), os.path.join(run.save_path, "update_results.csv"))
