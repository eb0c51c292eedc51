"""Command-line options shared by the entry scripts, with defaults taken from utils.config."""
from __future__ import annotations

import argparse

from utils.config import ARCHS, Config, DataConfig, ModelConfig

# The seed projects call PatchCore's method "coreset"; both names are accepted.
METHOD_ALIASES = {"coreset": "patchcore", "patchcore": "patchcore"}


def add_data_args(parser: argparse.ArgumentParser, preprocessing: bool = True) -> None:
    """Data options; `preprocessing` adds the image-size ones (a trained model already fixes them)."""
    d = DataConfig()
    parser.add_argument("--data_path", required=True, help="MVTec-layout root: ROOT/CATEGORY/{train,test,ground_truth}")
    parser.add_argument("--category", default="all", help="all | objects | textures | a category folder name")
    parser.add_argument("--batch_size", type=int, default=8)
    if not preprocessing:
        return
    parser.add_argument("--resize", type=int, default=d.resize)
    parser.add_argument("--crop_size", type=int, default=d.crop_size,
                        help="centre crop after resizing; equal to --resize means no crop")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    m = ModelConfig()
    parser.add_argument("--method", default="coreset", choices=sorted(METHOD_ALIASES))
    parser.add_argument("--arch", default=m.arch, choices=ARCHS)
    parser.add_argument("--pretrained", default=m.pretrained,
                        help="imagenet (paddle.vision download/cache) | none (random init) | PATH.pdparams")
    parser.add_argument("--k", type=float, default=m.k, help="percentage of training patches kept by the coreset")
    parser.add_argument("--num_neighbors", type=int, default=m.num_neighbors, help="b of the eq. 7 re-weighting")
    parser.add_argument("--image_score", default=m.image_score, choices=("reweighted", "max"))
    parser.add_argument("--seed", type=int, default=m.seed)


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval_PRO", action="store_true", help="also compute the PRO score (slower)")
    parser.add_argument("--save_path", default="output", help="folder of models, tables and figures")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> Config:
    data = DataConfig(resize=args.resize, crop_size=args.crop_size)
    model = ModelConfig(method=METHOD_ALIASES[args.method], arch=args.arch, pretrained=args.pretrained,
                        k=args.k, num_neighbors=args.num_neighbors, image_score=args.image_score, seed=args.seed)
    return Config(data=data, model=model)


def add_decision_args(parser: argparse.ArgumentParser) -> None:
    """Overrides of the calibrated thresholds, in raw score units."""
    parser.add_argument("--image_threshold", type=float, default=None,
                        help="raw image score at which a part is anomalous (default: the model's calibrated one)")
    parser.add_argument("--pixel_threshold", type=float, default=None,
                        help="raw anomaly-map value outlined as defect (default: the model's calibrated one)")
    parser.add_argument("--no_pictures", action="store_true", help="write only the CSV/JSON results")
    parser.add_argument("--save_maps", action="store_true", help="also write the raw anomaly maps (anomaly_maps.npz)")
