"""Command-line options shared by the entry scripts, with defaults taken from utils.config."""
from __future__ import annotations

import argparse

from utils.config import ARCHS, PADIM_CHANNELS, Config, DataConfig, ModelConfig, method_defaults

# The seed projects call PatchCore's method "coreset"; both names are accepted.
METHOD_ALIASES = {"coreset": "patchcore", "patchcore": "patchcore", "padim": "padim"}


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes", "y"):
        return True
    if value.lower() in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


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
    padim_k = ", ".join(f"{arch} {n or 'all'}" for arch, n in PADIM_CHANNELS.items())
    parser.add_argument("--k", type=float, default=None,
                        help=f"coreset: percentage of training patches kept (default {m.k:g}); padim: number of "
                             f"channels kept by a seeded random selection, 0 = all (default {padim_k})")
    parser.add_argument("--local_aggregation", type=str2bool, default=None,
                        help="3x3 average of each stage's features (default: True for coreset, False for padim)")
    parser.add_argument("--num_neighbors", type=int, default=m.num_neighbors, help="coreset only: b of the eq. 7 re-weighting")
    parser.add_argument("--image_score", default=m.image_score, choices=("reweighted", "max"),
                        help="coreset only (padim's image score is the maximum of its anomaly map)")
    parser.add_argument("--seed", type=int, default=m.seed)


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval_PRO", action="store_true", help="also compute the PRO score (slower)")
    parser.add_argument("--save_path", default="output", help="folder of models, tables and figures")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> Config:
    data = DataConfig(resize=args.resize, crop_size=args.crop_size)
    method = METHOD_ALIASES[args.method]
    chosen = {"k": args.k, "local_aggregation": args.local_aggregation}
    settings = {**method_defaults(method, args.arch), **{k: v for k, v in chosen.items() if v is not None}}
    model = ModelConfig(method=method, arch=args.arch, pretrained=args.pretrained, num_neighbors=args.num_neighbors,
                        image_score=args.image_score, seed=args.seed, **settings)
    return Config(data=data, model=model)


def add_decision_args(parser: argparse.ArgumentParser) -> None:
    """Overrides of the calibrated thresholds, in raw score units."""
    parser.add_argument("--image_threshold", type=float, default=None,
                        help="raw image score at which a part is anomalous (default: the model's calibrated one)")
    parser.add_argument("--pixel_threshold", type=float, default=None,
                        help="raw anomaly-map value outlined as defect (default: the model's calibrated one)")
    parser.add_argument("--no_pictures", action="store_true", help="write only the CSV/JSON results")
    parser.add_argument("--save_maps", action="store_true", help="also write the raw anomaly maps (anomaly_maps.npz)")
