"""Command-line options of the training-side scripts, with defaults from utils.config and the registry."""
from __future__ import annotations

import argparse

from models.registry import ARCHS, METHOD_ALIASES, METHODS, check_aggregation, check_config, method_spec
from utils.config import (AGGREGATIONS, AutoSize, DEFAULT_VAL_RATIO, Config, DataConfig, ModelConfig, finite_float,
                          INTERPOLATIONS, NO_CROP, THRESHOLD_RULES, crop_size_type, non_negative_int, positive_int, resize_size,
                          seed_int, str2bool)
from utils.errors import UserError, run_cli, script_parser
from utils.io import refuse_source_package
from utils.runtime import DEVICES, select_device
from datasets.geometry import DEFAULT_CROP_SHORT, DEFAULT_RESIZE_SHORT, GRID_STRIDE, AutoGeometry
from engine.settings import FIXED_OPTIONS, RunSettings

__all__ = ["ARCH_NAMES", "add_data_args", "add_device_arg", "add_eval_args", "add_model_args", "config_from_args",
           "given_options", "refuse_source_package", "run_cli", "run_settings", "script_parser",
           "select_device"]

ARCH_NAMES = tuple(ARCHS)


def add_data_args(parser: argparse.ArgumentParser, preprocessing: bool = True) -> None:
    """Data options; `preprocessing` adds the image-size ones (a trained model already fixes them)."""
    d = DataConfig()
    parser.add_argument("--data_path", required=True, help="MVTec-layout root: ROOT/CATEGORY/{train,test,ground_truth}")
    parser.add_argument("--category", default="all", help="all | objects | textures | a category folder name")
    parser.add_argument("--batch_size", type=positive_int, default=8)
    if not preprocessing:
        return
    parser.add_argument("--resize", type=resize_size, default=d.resize,
                        help="N (square), H,W (e.g. 256,640 for elongated parts) or auto[:N]: the training images' "
                             f"median aspect with short side N (default {DEFAULT_RESIZE_SHORT}), sides multiples of "
                             f"{GRID_STRIDE}; stored in the model (default {d.resize})")
    parser.add_argument("--crop_size", type=crop_size_type, default=None,
                        help="N, H,W, auto[:N] (the resized aspect, short side N, default "
                             f"{DEFAULT_CROP_SHORT}) or none: centre crop after resizing; none or equal to --resize "
                             f"inspects the whole image (default {d.crop_size}, the MVTec protocol 256 -> 224; "
                             "none with --resize auto); train.py warns when a crop discards image area")
    parser.add_argument("--interpolation", default=d.interpolation, choices=INTERPOLATIONS,
                        help="image downscaling: antialias (PIL bilinear with its area-widened filter) or bilinear "
                             "(plain two-tap, as OpenCV INTER_LINEAR; keeps thin defects sharper)")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    m = ModelConfig()
    names = {spec.name: spec for spec in METHODS.values()}
    parser.add_argument("--method", default="patchcore", choices=sorted(METHOD_ALIASES),
                        help="; ".join(f"{name}: {spec.title}" + (f" (alias {', '.join(a for a in spec.aliases if a != name)})"
                                                                  if len(spec.aliases) > 1 else "")
                                       for name, spec in names.items()))
    parser.add_argument("--arch", default=m.arch, choices=ARCH_NAMES)
    parser.add_argument("--pretrained", default=None,
                        help=f"imagenet (paddle.vision download/cache) | none (random init) | PATH.pdparams (default "
                             f"{m.pretrained}; with --update: the model's own)")
    # One option, two meanings: say both, per method, in --help.
    k_help = "; ".join(f"{spec.name}: {spec.k_help}" for spec in METHODS.values())
    parser.add_argument("--k", type=finite_float, default=None, help=k_help)
    parser.add_argument("--bank_size", type=non_negative_int, default=m.bank_size,
                        help="patchcore only: memory-bank entries to keep, instead of --k percent of the patches "
                             "(a budget that does not grow with --resize; 0 = use --k)")
    parser.add_argument("--local_aggregation", type=str2bool, default=None,
                        help="3x3 average of each stage's features (default: True for coreset, False for padim)")
    parser.add_argument("--aggregation", default=m.aggregation, choices=AGGREGATIONS,
                        help="coreset only: avgpool = 3x3 average of each stage, concatenated; unfold = the official "
                             "PatchCore's (3x3 neighbourhoods pooled to --pretrain_embed_dim per stage, then to "
                             "--target_embed_dim); padim refuses unfold")
    parser.add_argument("--pretrain_embed_dim", type=positive_int, default=m.pretrain_embed_dim,
                        help="unfold only: length each stage's neighbourhood vector is pooled to")
    parser.add_argument("--target_embed_dim", type=positive_int, default=m.target_embed_dim,
                        help="unfold only: length of the final patch embedding")
    parser.add_argument("--num_neighbors", type=positive_int, default=m.num_neighbors, help="coreset only: b of the eq. 7 re-weighting")
    parser.add_argument("--image_score", default=m.image_score, choices=("reweighted", "max"),
                        help="coreset only (padim's image score is the maximum of its anomaly map)")
    parser.add_argument("--seed", type=seed_int, default=m.seed)
    parser.add_argument("--val_ratio", type=finite_float, default=DEFAULT_VAL_RATIO,
                        help="fraction of train/good held out of the fit (seeded) for --threshold_rule held_out "
                             f"(default {DEFAULT_VAL_RATIO:g}: every good image is in the bank; above 0 the rule "
                             "defaults to held_out; it was 0.1 before own_image_out existed)")
    parser.add_argument("--threshold_rule", default=None, choices=THRESHOLD_RULES,
                        help="own_image_out: every training image scored against the bank without its own "
                             "patches, threshold at --max_false_reject (the default); held_out: the quantile of "
                             "the --val_ratio held-out images (the default with --val_ratio > 0); test_split: "
                             "between the classes of the labelled test split (needs --eval)")
    parser.add_argument("--max_false_reject", type=finite_float, default=m.max_false_reject,
                        help="false-reject target of the image threshold on good images (default "
                             f"{m.max_false_reject:g})")
    parser.add_argument("--pixel_false_reject", type=finite_float, default=m.pixel_false_reject,
                        help="fraction of good pixels the pixel threshold may flag (shapes the outlined region)")
    parser.add_argument("--keep_sums", action="store_true",
                        help="padim only: keep the float64 running sums in the model file (positions x channels^2 "
                             "x 8 bytes more) so that train.py --update can add images exactly")


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval_PRO", action="store_true", help="also compute the PRO score (slower)")
    parser.add_argument("--save_path", default="output", help="folder of models, tables and figures")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    add_device_arg(parser)


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the network and the coreset/kNN run (auto: a GPU when Paddle has CUDA)")


def auto_geometry(args: argparse.Namespace) -> AutoGeometry:
    """What --resize / --crop_size auto or none asked for (an auto resize without a crop: no crop)."""
    crop = args.crop_size
    return AutoGeometry(
        resize_short=(args.resize.short or DEFAULT_RESIZE_SHORT) if isinstance(args.resize, AutoSize) else None,
        crop_short=(crop.short or DEFAULT_CROP_SHORT) if isinstance(crop, AutoSize) else None,
        no_crop=crop is NO_CROP or (crop is None and isinstance(args.resize, AutoSize)))


def threshold_rule(args: argparse.Namespace) -> str:
    """--threshold_rule, or its default: held_out when images are held out, else own_image_out."""
    if args.threshold_rule:
        if args.threshold_rule == "test_split" and not getattr(args, "eval", False):
            raise UserError("--threshold_rule test_split needs --eval (the labelled test split)")
        return args.threshold_rule
    return "held_out" if args.val_ratio > 0 else "own_image_out"


def config_from_args(args: argparse.Namespace) -> Config:
    """The fit's settings; auto sides hold their short side here until engine chooses them per category."""
    auto = auto_geometry(args)
    resize = auto.resize_short or args.resize
    crop = resize if auto.no_crop else DataConfig.crop_size if args.crop_size is None else args.crop_size
    data = DataConfig(resize=resize, crop_size=auto.crop_short or crop,
                      interpolation=args.interpolation)
    spec = method_spec(args.method)
    chosen = {"k": args.k, "local_aggregation": args.local_aggregation}
    settings = {**spec.defaults(args.arch), **{k: v for k, v in chosen.items() if v is not None}}
    model = ModelConfig(method=spec.name, arch=args.arch, pretrained=args.pretrained or ModelConfig.pretrained,
                        num_neighbors=args.num_neighbors,
                        image_score=args.image_score, seed=args.seed, aggregation=args.aggregation,
                        val_ratio=args.val_ratio, threshold_rule=threshold_rule(args), bank_size=args.bank_size,
                        max_false_reject=args.max_false_reject,
                        pixel_false_reject=args.pixel_false_reject, keep_sums=args.keep_sums,
                        pretrain_embed_dim=args.pretrain_embed_dim, target_embed_dim=args.target_embed_dim,
                        **settings)
    check_aggregation(model)
    config = Config(data=data, model=model)
    try:
        # Ranges that depend on other options (crop vs resize, --k per method) are checked here.
        check_config(config)
    except ValueError as err:
        raise UserError(f"--{err}") from None
    return config


def run_settings(args: argparse.Namespace, **chosen: object) -> RunSettings:
    """The run's settings from the parsed arguments common to train.py and eval.py; `chosen`: the
    script's own fields of RunSettings (run_eval, figures, model_dir, arch, fixed_options, or a
    category of its own)."""
    common = dict(data_path=args.data_path, save_path=args.save_path, category=args.category,
                  batch_size=args.batch_size, with_pro=args.eval_PRO, progress=not args.no_progress,
                  array_lib=select_device(args.device), pretrained=args.pretrained)
    return RunSettings(**{**common, **chosen})


def given_options(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> set[str]:
    """The options the command line itself gave (not filled in from their defaults)."""
    defaults = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        given, _ = parser.parse_known_args(argv)
    finally:
        for action in parser._actions:
            action.default = defaults[action.dest]
    return set(vars(given))


def fixed_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[tuple[str, object], ...]:
    """--update: the given options that a model fixes, with their values (checked against the model)."""
    given = given_options(parser)
    return tuple((name, getattr(args, name)) for name in FIXED_OPTIONS if name in given)
