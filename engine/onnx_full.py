"""A self-contained ONNX model: the extractor graph and the method's scoring in one graph.

Inputs images [N,3,H,W] float32 (preprocessed as datasets.preprocess does); outputs image_score [N],
normalized_score [N], anomaly_map [N,H,W] and mask [N,H,W] (bool, map >= pixel threshold). Built
with the onnx helper API on top of the verified extractor graph; every step is the one the
project's scorers take:
- PatchCore: nearest bank entry by ||b||^2 - 2 a.b (one MatMul), its distance recomputed directly,
  eq. 7 re-weighting of the worst patch over its bank neighbourhood (m* and its b-1 nearest other
  entries, a table computed here with models.knn exactly as models.patchcore.scorer.reweight does);
- PaDiM: Mahalanobis distance per position, image score the maximum of the smoothed map;
- bilinear upsampling then the sigma-4 Gaussian blur (scipy's reflect border, truncate 4) as two
  fixed matrices per axis, A_H @ grid @ A_W^T: the very matrices models.scoring.upsample_and_smooth
  multiplies by (map_operators), so the border rule is the same;
- normalisation and mask with the model's calibrated thresholds (models.thresholds).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.knn import MemoryBank
from models.model_file import AnomalyModel
from models.registry import METHODS
from models.scoring import map_operators
from models.thresholds import Thresholds
from utils.config import hw

OUTPUTS = ("image_score", "normalized_score", "anomaly_map", "mask")


def neighbourhood_table(bank: np.ndarray, num_neighbors: int) -> np.ndarray:
    """[M, min(b, M)] int64: each entry m and its b-1 nearest other entries, as
    models.patchcore.scorer.reweight takes them (a bank smaller than b gives every entry)."""
    memory = MemoryBank(bank)
    _, support = memory.search(memory.features, k=num_neighbors + 1)
    width = min(num_neighbors, len(bank))
    table = np.empty((len(bank), width), dtype=np.int64)
    for m, row in enumerate(support):
        table[m] = [m] + [int(i) for i in row if i != m][: width - 1]
    return table


class GraphBuilder:
    """Nodes and constants appended to the extractor graph, with generated names."""

    def __init__(self, graph: onnx.GraphProto, opset: int):
        self.graph, self.opset, self.count = graph, opset, 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"full_{stem}_{self.count}"

    def const(self, value: np.ndarray | float | list, dtype=np.float32) -> str:
        name = self.name("const")
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, *inputs: str, output: str | None = None, **attributes) -> str:
        output = output or self.name(kind.lower())
        self.graph.node.append(helper.make_node(kind, list(inputs), [output], **attributes))
        return output

    def reduce_max(self, x: str, axes: list[int], keepdims: int) -> str:
        """ReduceMax's axes became an input in opset 18 (an attribute before)."""
        if self.opset >= 18:
            return self.op("ReduceMax", x, self.const(axes, np.int64), keepdims=keepdims)
        return self.op("ReduceMax", x, axes=axes, keepdims=keepdims)


def _nearest_neighbour_scores(g: GraphBuilder, patches: str, model: AnomalyModel) -> tuple[str, str]:
    """patches [N, P, C] -> (patch scores [N, P], image scores [N])."""
    bank = np.ascontiguousarray(model.arrays["memory_bank"], dtype=np.float32)
    settings = model.config.model
    ranking = g.op("Add", g.op("MatMul", patches, g.const(-2.0 * bank.T)), g.const(np.einsum("mc,mc->m", bank, bank)))
    nearest = g.op("ArgMin", ranking, axis=2, keepdims=0)                                 # [N, P]
    bank_const = g.const(bank)
    diff = g.op("Sub", patches, g.op("Gather", bank_const, nearest, axis=0))               # [N, P, C]
    patch_scores = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", diff, diff), g.const([2], np.int64), keepdims=0))
    worst = g.op("ArgMax", patch_scores, axis=1, keepdims=1)                               # [N, 1]
    if settings.image_score == "max":
        return patch_scores, g.op("Squeeze", g.op("GatherElements", patch_scores, worst, axis=1), g.const([1], np.int64))
    test_patch = g.op("GatherND", patches, worst, batch_dims=1)                            # [N, C]
    centre = g.op("Squeeze", g.op("GatherElements", nearest, worst, axis=1), g.const([1], np.int64))
    support = g.op("Gather", g.const(neighbourhood_table(bank, settings.num_neighbors), np.int64), centre, axis=0)
    offsets = g.op("Sub", g.op("Gather", bank_const, support, axis=0),
                   g.op("Unsqueeze", test_patch, g.const([1], np.int64)))                  # [N, b, C]
    dists = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", offsets, offsets), g.const([2], np.int64), keepdims=0))
    shifted = g.op("Exp", g.op("Sub", dists, g.reduce_max(dists, [1], keepdims=1)))
    first = g.op("Gather", dists, g.const(0, np.int64), axis=1)
    share = g.op("Div", g.op("Gather", shifted, g.const(0, np.int64), axis=1),
                 g.op("ReduceSum", shifted, g.const([1], np.int64), keepdims=0))
    return patch_scores, g.op("Mul", g.op("Sub", g.const(1.0), share), first)


def _mahalanobis_scores(g: GraphBuilder, patches: str, model: AnomalyModel) -> tuple[str, None]:
    """patches [N, P, C] -> (Mahalanobis patch scores [N, P] (models.padim.scorer.mahalanobis), no
    image score: it is the maximum of the smoothed map)."""
    diff = g.op("Transpose", g.op("Sub", patches, g.const(model.arrays["mean"])), perm=[1, 0, 2])   # [P, N, C]
    transformed = g.op("MatMul", diff, g.const(model.arrays["inv_covariance"]))
    squared = g.op("ReduceSum", g.op("Mul", transformed, diff), g.const([2], np.int64), keepdims=0)  # [P, N]
    return g.op("Sqrt", g.op("Max", g.op("Transpose", squared, perm=[1, 0]), g.const(0.0))), None


# The scoring graph of each patch distance a method's record names (MethodSpec.patch_distance).
PATCH_SCORES = {"nearest_neighbour": _nearest_neighbour_scores, "mahalanobis": _mahalanobis_scores}


def full_model(extractor_onnx: bytes, model: AnomalyModel) -> bytes:
    """The extractor graph with the method's scoring appended (see the module doc)."""
    graph_model = onnx.load_from_string(extractor_onnx)
    graph = graph_model.graph
    opset = next(o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        raise ValueError(f"the extractor graph has opset {opset}; the scoring needs 13 or later")
    g = GraphBuilder(graph, opset)
    embedding = graph.output[0].name
    thresholds = Thresholds.from_calibration(model.calibration)
    (grid_h, grid_w), size = model.feature_grid, hw(model.config.data.crop_size)
    spec = METHODS[model.method]
    channels = model.arrays[spec.arrays[0]].shape[-1]   # the registry: the first array's last axis is C
    flat = g.op("Reshape", embedding, g.const([0, channels, grid_h * grid_w], np.int64))
    patches = g.op("Transpose", flat, perm=[0, 2, 1])                                     # [N, P, C]
    patch_scores, image_score = PATCH_SCORES[spec.patch_distance](g, patches, model)
    grid = g.op("Reshape", patch_scores, g.const([0, grid_h, grid_w], np.int64))
    rows, cols = map_operators((grid_h, grid_w), hw(size), float(model.config.model.sigma))
    anomaly_map = g.op("MatMul", g.op("MatMul", g.const(rows), grid), g.const(cols.T.copy()), output="anomaly_map")
    if spec.image_score_from_map:
        image_score = g.reduce_max(anomaly_map, [1, 2], keepdims=0)
    g.op("Identity", image_score, output="image_score")
    low, high = thresholds.image_range
    normalized = g.op("Add", g.op("Div", g.op("Sub", "image_score", g.const(thresholds.image)),
                                  g.const(max(high - low, 1e-12))), g.const(0.5))
    g.op("Clip", normalized, g.const(0.0), g.const(1.0), output="normalized_score")
    # The one verdict rule (models.thresholds): the region only on images at or above the image threshold.
    flagged = g.op("Reshape", g.op("GreaterOrEqual", "image_score", g.const(thresholds.image)),
                   g.const([-1, 1, 1], np.int64))
    g.op("And", g.op("GreaterOrEqual", anomaly_map, g.const(thresholds.pixel)), flagged, output="mask")
    del graph.output[:]
    n, height, width = "N", *size
    graph.output.extend([helper.make_tensor_value_info("image_score", TensorProto.FLOAT, [n]),
                         helper.make_tensor_value_info("normalized_score", TensorProto.FLOAT, [n]),
                         helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [n, height, width]),
                         helper.make_tensor_value_info("mask", TensorProto.BOOL, [n, height, width])])
    onnx.checker.check_model(graph_model)
    return graph_model.SerializeToString()
