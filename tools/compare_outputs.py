"""Check that two scorings of the same images agree, and compute metrics from saved outputs.

  python tools/compare_outputs.py A/anomaly_maps.npz B/anomaly_maps.npz
      [--data_path ROOT --category NAME --eval_PRO]

A and B are the --save_maps outputs of predict.py and/or infer.py. Prints the largest relative
differences of image scores and anomaly maps, and with --data_path the metrics of each output.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.mvtec import list_samples  # noqa: E402
from datasets.preprocess import load_mask  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.metrics import compute_metrics  # noqa: E402
from utils.table import format_table  # noqa: E402


def load_outputs(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise UserError(f"outputs not found: {path} (run predict.py / infer.py with --save_maps)")
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    out["images"] = np.array([os.path.abspath(p) for p in out["images"]])
    return out


def relative_differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """max |a - b| / max |a| for image scores and for anomaly maps (per image, worst image)."""
    if a["images"].tolist() != b["images"].tolist():
        raise UserError("the two outputs do not cover the same images in the same order")
    score_diff = np.abs(a["image_scores"] - b["image_scores"]) / np.abs(a["image_scores"]).clip(1e-12)
    map_diff = [np.abs(x - y).max() / np.abs(x).max().clip(1e-12) for x, y in zip(a["anomaly_maps"], b["anomaly_maps"])]
    return {"image_score_max_rel_diff": float(score_diff.max()), "anomaly_map_max_rel_diff": float(max(map_diff))}


def metrics_of(outputs: dict[str, np.ndarray], data_path: str, category: str, with_pro: bool) -> dict[str, float]:
    """Image AUROC, pixel AUROC, PRO of saved outputs against the category's test labels and masks."""
    samples = {os.path.abspath(s.path): s for s in list_samples(data_path, category, "test")}
    missing = [p for p in outputs["images"] if p not in samples]
    if missing:
        raise UserError(f"{missing[0]} is not a test image of {category}")
    chosen = [samples[p] for p in outputs["images"]]
    # One number (square) or height, width.
    resize, crop = (tuple(int(v) for v in np.ravel(outputs[key])) for key in ("resize", "crop_size"))
    resize, crop = (size[0] if len(size) == 1 else size for size in (resize, crop))
    masks = np.stack([load_mask(s.mask_path, resize, crop) for s in chosen])
    labels = np.array([s.label for s in chosen])
    return compute_metrics(outputs["image_scores"], labels, outputs["anomaly_maps"], masks, with_pro)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--data_path")
    parser.add_argument("--category")
    parser.add_argument("--eval_PRO", action="store_true")
    args = parser.parse_args()
    a, b = load_outputs(args.first), load_outputs(args.second)
    rows = [{"check": k, "value": f"{v:.3e}"} for k, v in relative_differences(a, b).items()]
    if args.data_path and args.category:
        for name, outputs in (("first", a), ("second", b)):
            for metric, value in metrics_of(outputs, args.data_path, args.category, args.eval_PRO).items():
                rows.append({"check": f"{name} {metric}", "value": f"{value:.4f}"})
    print(format_table(rows, ("check", "value")))
    return 0


if __name__ == "__main__":
    run_cli(main)
