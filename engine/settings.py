"""The settings of one run of train.py or eval.py, built once from the arguments and passed whole."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets.geometry import AutoGeometry


# train.py options a model fixes: option -> its field in the model's Config ("data" or "model").
FIXED_OPTIONS = {"method": "model", "arch": "model", "k": "model", "bank_size": "model", "aggregation": "model",
                 "local_aggregation": "model", "num_neighbors": "model", "image_score": "model", "seed": "model",
                 "val_ratio": "model", "threshold_rule": "model", "max_false_reject": "model", "pixel_false_reject": "model",
                 "keep_sums": "model", "pretrain_embed_dim": "model", "target_embed_dim": "model",
                 "resize": "data", "crop_size": "data", "interpolation": "data"}


@dataclass(frozen=True)
class RunSettings:
    """Where a run reads and writes, and how its passes over the images go.

    The model's own settings (extractor, method, geometry) are not here: a fit takes them from a
    utils.config.Config, an update or an evaluation from the model file.
    """
    data_path: str
    save_path: str
    # "all" | "objects" | "textures" | a category folder name; None: the model's own (--update).
    category: str | None = "all"
    batch_size: int = 8
    run_eval: bool = False          # evaluate on the labelled test split after fitting
    with_pro: bool = False          # also the PRO score (slower)
    figures: bool = False           # a figure per test image (eval.py --save_pic; train.py never)
    progress: bool = True
    array_lib: str = "numpy"          # utils.runtime.select_device: "numpy" or "paddle" (the device)
    # Backbone weights instead of the model's own (eval / update); None: the model's.
    pretrained: str | None = None
    model_dir: str | None = None    # eval.py: folder of the models (default: save_path)
    arch: str | None = None         # eval.py: refuse models of another arch
    # --update: options given on the command line that a model fixes, as (option, value) pairs; an
    # update refuses any that differs from the model's own.
    fixed_options: tuple[tuple[str, Any], ...] = ()
    # --resize / --crop_size auto: chosen per category from its training images.
    auto_geometry: AutoGeometry = AutoGeometry()

    @property
    def models_folder(self) -> str:
        return self.model_dir or self.save_path
