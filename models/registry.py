"""One record per backbone arch and one per method: everything the rest of the project needs to know.

The CLI (choices, defaults, help), the feature extractor, the model file, the training side (engine/) and
the weights converter all read these records, so adding an arch or a method means adding a record
(plus its modules) here and nowhere else.

Importing this module is cheap and safe for deployment: it holds data and dotted references only.
Fit functions and scorers are imported when first asked for, so infer.py, which builds a scorer,
never loads any fit code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Union

from utils.config import AGGREGATIONS, Config, require as _require
from utils.errors import UserError

# A stage is either one named sub-layer of the paddle.vision network ("layer2", "features.6") or a
# tuple of such parts chained in an nn.Sequential. The nesting is part of the parameter names and
# therefore of every model's extractor fingerprint: it must not change once models exist.
StagePart = Union[str, tuple["StagePart", ...]]

# Stage names are the same for every arch: layer1/2/3 end at strides 4/8/16.
STAGE_NAMES = ("layer1", "layer2", "layer3")


@dataclass(frozen=True)
class ArchSpec:
    """A paddle.vision backbone cut into the three stages of STAGE_NAMES."""
    name: str
    builder: str                                  # function of paddle.vision.models
    stages: tuple[StagePart, StagePart, StagePart]
    channels: tuple[int, int, int]                # output channels of layer1/2/3
    classifier_prefix: str                        # the ImageNet head: unused, may be absent
    linear_weights: tuple[str, ...]               # nn.Linear weights: torch [out, in], paddle [in, out]


def _mobilenet_blocks(first: int, last: int) -> tuple[str, ...]:
    return tuple(f"features.{i}" for i in range(first, last + 1))


_RESNET_STAGES = ((("conv1", "bn1", "relu", "maxpool"), "layer1"), "layer2", "layer3")

ARCHS: dict[str, ArchSpec] = {spec.name: spec for spec in (
    ArchSpec("resnet18", "resnet18", _RESNET_STAGES, (64, 128, 256), "fc.", ("fc.weight",)),
    ArchSpec("wide_resnet50_2", "wide_resnet50_2", _RESNET_STAGES, (256, 512, 1024), "fc.", ("fc.weight",)),
    # features.3, .6 and .13 are the last blocks before the stride doubles (24, 32, 96 channels).
    ArchSpec("mobilenet_v2", "mobilenet_v2", (_mobilenet_blocks(0, 3), _mobilenet_blocks(4, 6),
                                              _mobilenet_blocks(7, 13)),
             (24, 32, 96), "classifier.", ("classifier.1.weight",)),
)}


def arch_spec(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise UserError(f"unknown arch '{name}'; choose one of {', '.join(ARCHS)}")
    return ARCHS[name]


def _resolve(reference: str) -> Any:
    """'package.module:attribute' -> the attribute, importing the module on first use."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class MethodSpec:
    """An anomaly-detection method: how it is named, configured, fitted, stored and scored."""
    name: str
    title: str
    aliases: tuple[str, ...]
    # ModelConfig keyword arguments that differ from PatchCore's, per arch where they depend on it.
    defaults: Callable[[str], dict[str, Any]]
    arrays: tuple[str, ...]                       # the arrays its model file holds
    # "module:function(arrays, config, array_lib, product_threads) -> scorer"; array_lib "numpy" or "paddle"
    # (current device); product_threads: threads for its large products (models.scoring.ScoringOptions)
    scorer: str
    # "module:function(EmbeddingStream, model_config, progress, array_lib) -> FitResult"
    fit: str
    size_column: str                              # fit_stats entry shown beside the fit time
    k_help: str = ""
    aggregations: tuple[str, ...] = ("avgpool",)  # --aggregation values it accepts (utils.config.AGGREGATIONS)
    # The shape of each of `arrays`, checked when a model loads: N any count, P the feature grid's
    # positions, C the embedding width (the last axis of the first array is always C).
    array_shapes: tuple[tuple[str, ...], ...] = ()
    # --k: a percentage of training patches kept (False) or a number of channels kept, 0 = all (True).
    k_counts_channels: bool = False
    bank_budget: bool = False                     # --bank_size caps its memory bank
    # How a patch is scored: "nearest_neighbour" (distance to the nearest bank entry; the image score
    # is --image_score over the patch scores, eq. 7 by default) or "mahalanobis" (a Gaussian per
    # position; the image score is the maximum of the smoothed map).
    patch_distance: str = "nearest_neighbour"
    # "module:function(positions, channels, n_images, batch_size, model_config) -> bytes": the fit's
    # own arrays (models.memory_estimate)
    fit_bytes: str = ""
    # "module:function(arrays, EmbeddingStream, model_config, progress) -> (arrays, stats)": adds
    # good images to a fitted model (train.py --update)
    update: str = ""
    # Arrays kept, float64, only for updates (never exported): name -> ndim
    update_arrays: tuple[tuple[str, int], ...] = ()
    # "module:function(model, embeddings, entry_images, first_image, array_lib, progress, gather) -> Scores":
    # the training images' leave-own-image-out scores (the default threshold rule's input)
    own_image_out: str = ""

    def build_scorer(self, arrays: dict[str, Any], config: Any, array_lib: str = "numpy",
                     product_threads: int = 1) -> Callable[[Any], Any]:
        return _resolve(self.scorer)(arrays, config, array_lib, product_threads)

    def fit_function(self) -> Callable[..., Any]:
        return _resolve(self.fit)

    def update_function(self) -> Callable[..., Any]:
        return _resolve(self.update)

    def own_image_out_function(self) -> Callable[..., Any]:
        return _resolve(self.own_image_out)

    def fit_bytes_function(self) -> Callable[..., int]:
        return _resolve(self.fit_bytes)

    @property
    def array_ranks(self) -> tuple[int, ...]:
        return tuple(len(shape) for shape in self.array_shapes)

    @property
    def image_score_from_map(self) -> bool:
        """Whether the image score is the maximum of the smoothed map rather than --image_score over patches."""
        return self.patch_distance == "mahalanobis"

    def reweights(self, cfg: Any) -> bool:
        """Whether the image score is eq. 7's re-weighting over the nearest entry's bank neighbours."""
        return self.patch_distance == "nearest_neighbour" and cfg.image_score == "reweighted"

    def unfolds(self, cfg: Any) -> bool:
        """Whether the embedding is the unfold aggregation's (the method accepts it and cfg asks for it)."""
        return cfg.aggregation == "unfold" and "unfold" in self.aggregations

    def embedding_width(self, cfg: Any, total: int) -> int:
        """Channels the fit stores per patch, of `total` the chosen stages give."""
        if self.k_counts_channels:
            return min(int(cfg.k), total) or total
        return cfg.target_embed_dim if self.unfolds(cfg) else total

    def check_settings(self, cfg: Any) -> None:
        """The ranges of the settings whose meaning is the method's; ValueError naming the setting
        (as utils.config.Config.check)."""
        if self.k_counts_channels:
            _require(cfg.k >= 0 and cfg.k == int(cfg.k), "k", cfg.k, f"a whole number of channels >= 0 for {self.name}")
        else:
            _require(0 < cfg.k <= 100, "k", cfg.k, "a percentage in (0, 100]")
        _require(cfg.bank_size == 0 or self.bank_budget, "bank_size", cfg.bank_size,
                 f"0 for {self.name} (patchcore only)")


PATCHCORE_LAYERS = ("layer2", "layer3")
PADIM_LAYERS = ("layer1", "layer2", "layer3")
# PaDiM's --k is a channel count; these are the paper's choices (R18 100 of 448, WRN50 550 of 1792).
# MobileNetV2's three stages give only 24 + 32 + 96 = 152 channels, all kept (0 = all).
PADIM_CHANNELS = {"resnet18": 100, "wide_resnet50_2": 550, "mobilenet_v2": 0}


def _patchcore_defaults(arch: str) -> dict[str, Any]:
    return {"layers": PATCHCORE_LAYERS, "k": 10.0, "local_aggregation": True}


def _padim_defaults(arch: str) -> dict[str, Any]:
    """PaDiM (Defard et al. 2020) embeds all three stages and models each position with a Gaussian.

    It skips the 3x3 average, as the original does: on MVTec bottle (ImageNet MobileNetV2, all 152
    channels) it measured pixel AUROC 0.9795 / PRO 0.930 without it and 0.9783 / 0.913 with it
    (image AUROC 1.0 both).
    """
    return {"layers": PADIM_LAYERS, "k": float(PADIM_CHANNELS[arch]), "local_aggregation": False}


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("patchcore", "PatchCore", ("patchcore", "coreset"), _patchcore_defaults, ("memory_bank",),
               "models.patchcore.scorer:build_scorer", "models.patchcore.fit:fit_memory_bank", "bank_size",
               k_help="percentage of training patches kept (default 10)", aggregations=AGGREGATIONS,
               array_shapes=(("N", "C"),), bank_budget=True, fit_bytes="models.patchcore.fit:estimate_fit_bytes",
               update="models.patchcore.fit:extend_memory_bank",
               own_image_out="models.patchcore.own_image_out:leave_own_image_out"),
    MethodSpec("padim", "PaDiM", ("padim",), _padim_defaults, ("mean", "inv_covariance"),
               "models.padim.scorer:build_scorer", "models.padim.fit:fit_gaussians", "channels",
               k_help="number of channels kept by a seeded random selection, 0 = all (default "
                      + ", ".join(f"{arch} {n or 'all'}" for arch, n in PADIM_CHANNELS.items()) + ")",
               array_shapes=(("P", "C"), ("P", "C", "C")), k_counts_channels=True, patch_distance="mahalanobis",
               fit_bytes="models.padim.fit:estimate_fit_bytes", update="models.padim.fit:extend_gaussians",
               update_arrays=(("sum_shift", 2), ("sum", 2), ("sum_outer", 3), ("count", 1)),
               own_image_out="models.padim.own_image_out:leave_own_image_out"),
)}

# The seed projects call PatchCore's method "coreset"; every alias names its method.
METHOD_ALIASES = {alias: spec.name for spec in METHODS.values() for alias in spec.aliases}


def method_spec(name: str) -> MethodSpec:
    """The record of a method, by its name or an alias."""
    if name not in METHOD_ALIASES:
        raise UserError(f"unknown method '{name}'; choose one of {', '.join(sorted(METHOD_ALIASES))}")
    return METHODS[METHOD_ALIASES[name]]


def check_config(config: Config) -> None:
    """Config.check's ranges and those its method gives a meaning to (--k, --bank_size); ValueError
    naming the setting. Every Config built from options or read from a file passes here."""
    config.check()
    method_spec(config.model.method).check_settings(config.model)


def check_aggregation(cfg: Any) -> None:
    """Refuse, in one line, a ModelConfig whose aggregation its method or its other settings cannot use."""
    if cfg.aggregation not in AGGREGATIONS:
        raise UserError(f"unknown --aggregation '{cfg.aggregation}'; choose one of {', '.join(AGGREGATIONS)}")
    if cfg.aggregation != "unfold":
        return
    if cfg.aggregation not in METHODS[cfg.method].aggregations:
        raise UserError(f"--aggregation unfold is PatchCore's; {cfg.method} has no local aggregation to replace")
    if not cfg.local_aggregation:
        raise UserError("--aggregation unfold is a local aggregation: it cannot go with --local_aggregation False")
    if min(cfg.pretrain_embed_dim, cfg.target_embed_dim) < 1:
        raise UserError(f"--pretrain_embed_dim and --target_embed_dim must be at least 1, not "
                        f"{cfg.pretrain_embed_dim} / {cfg.target_embed_dim}")
