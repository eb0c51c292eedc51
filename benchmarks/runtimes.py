"""Runtimes benchmark: every inference runtime on one exported model, against the dynamic graph.

  python train.py --data_path ../shared/data/mvtec --category bottle --arch mobilenet_v2 \
      --pretrained /tmp/mnv2.pdparams --k 10 --save_path /tmp/bottle_mnv2
  python export_model.py --model_path /tmp/bottle_mnv2/bottle.pdparams --save_dir /tmp/bottle_mnv2/infer --format onnx
  python benchmarks/runtimes.py --model_path /tmp/bottle_mnv2/bottle.pdparams --export_dir /tmp/bottle_mnv2/infer \
      --data_path ../shared/data/mvtec --category bottle --pretrained /tmp/mnv2.pdparams [--end_to_end] [--fit]

Per runtime (paddle with and without oneDNN, openvino on the .pdmodel and on the ONNX file,
onnxruntime) and batch size: network ms/img on the test images (after one warm-up batch), and the
max relative difference of image scores and anomaly maps to the dynamic graph (predict.py's path);
with a model_full.onnx (--format onnx_full) also that model in ONNX Runtime (network + scoring ms/img).
--end_to_end also times infer.py itself (--runtime auto against --runtime paddle --enable_mkldnn
True, alternating, each run its own process). --fit times the fit's feature extraction: dynamic
graph against the runtime (engine.runtime_extraction), alternating. Prints tables, saves them as CSV.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load
from utils.runtime import quiet_paddle_logs  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--export_dir", required=True, help="export_model.py --format onnx output")
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--batch_sizes", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--end_to_end", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs for --end_to_end and --fit")
    parser.add_argument("--save_path", default="output/benchmarks/runtimes")
    return parser.parse_args()


def print_and_save(rows: list[dict], path: str) -> None:
    columns = list(rows[0])
    print("  ".join(f"{c:>14}" for c in columns))
    for row in rows:
        print("  ".join(f"{v:>14.3g}" if isinstance(v, float) else f"{str(v):>14}" for v in row.values()))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"saved {path}\n")


def runtimes(export_dir: str, threads: int) -> list[tuple[str, object]]:
    """(label, runtime) for every runtime and file of the export."""
    from models.runtimes import ExportFiles, RuntimeOptions, installed_runtimes, open_runtime

    files = ExportFiles.in_folder(export_dir)
    variants = []
    if "paddle" in installed_runtimes():
        variants += [("paddle", files, dict(enable_mkldnn=False)), ("paddle+onednn", files, dict(enable_mkldnn=True))]
    if "openvino" in installed_runtimes():
        variants.append(("openvino/pdmodel", files, {}))
        if files.onnx:
            variants.append(("openvino/onnx", dataclasses.replace(files, program=files.onnx), {}))
    if "onnxruntime" in installed_runtimes() and files.onnx:
        variants.append(("onnxruntime", files, {}))
    return [(label, open_runtime(f, RuntimeOptions(runtime=label.split("/")[0].split("+")[0], cpu_threads=threads,
                                                   **extra)))
            for label, f, extra in variants]


def network_and_accuracy(args: argparse.Namespace) -> list[dict]:
    import numpy as np

    from datasets.preprocess import list_images, load_image, preprocess_image
    from engine.pipeline import rebuild_extractor
    from models.feature_extractor import extract
    from models.model_file import AnomalyModel
    from models.scoring import Scores

    model = AnomalyModel.load(args.model_path)
    data = model.config.data
    test_dir = os.path.join(args.data_path, args.category, "test")
    paths = [p for d in sorted(os.listdir(test_dir)) for p in list_images(os.path.join(test_dir, d))]
    images = np.stack([preprocess_image(load_image(p), data.resize, data.crop_size, data.mean, data.std,
                                        data.interpolation) for p in paths])
    scorer = model.scorer()
    extractor = rebuild_extractor(model, args.pretrained)

    def scores_of(embed, batch: int) -> tuple[Scores, float]:
        parts, seconds = [], 0.0
        embed(images[:batch])   # warm-up
        for start in range(0, len(images), batch):
            t = time.perf_counter()
            features = embed(images[start:start + batch])
            seconds += time.perf_counter() - t
            parts.append(scorer(features))
        return Scores.concatenate(parts), 1000 * seconds / len(images)

    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        reference, dynamic_ms = scores_of(lambda x: extract(extractor, x), batch)
        rows.append({"runtime": "dynamic graph", "batch": batch, "network_ms_img": dynamic_ms,
                     "score_rel_diff": 0.0, "map_rel_diff": 0.0})
        for label, runtime in runtimes(args.export_dir, args.threads):
            scores, ms = scores_of(runtime, batch)
            score_diff = np.abs(scores.image_scores - reference.image_scores) / np.abs(reference.image_scores)
            map_diff = max(float(np.abs(a - b).max() / np.abs(b).max())
                           for a, b in zip(scores.anomaly_maps, reference.anomaly_maps))
            rows.append({"runtime": label, "batch": batch, "network_ms_img": ms,
                         "score_rel_diff": float(score_diff.max()), "map_rel_diff": map_diff})
        full = os.path.join(args.export_dir, "model_full.onnx")
        if os.path.isfile(full):
            rows.append(full_model_row(full, images, reference, batch, args.threads))
    print(f"{len(images)} test images of {args.category}, {args.threads} threads")
    return rows


def full_model_row(path: str, images, reference, batch: int, threads: int) -> dict:
    """model_full.onnx in ONNX Runtime: network + scoring ms/img, and its scores against the reference."""
    import numpy as np
    import onnxruntime

    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads, settings.log_severity_level = threads, 3
    session = onnxruntime.InferenceSession(path, settings, providers=["CPUExecutionProvider"])
    session.run(None, {"images": images[:batch]})   # warm-up
    scores, maps, seconds = [], [], 0.0
    for start in range(0, len(images), batch):
        t = time.perf_counter()
        score, _, anomaly_map, _ = session.run(None, {"images": images[start:start + batch]})
        seconds += time.perf_counter() - t
        scores.append(score)
        maps.append(anomaly_map)
    scores, maps = np.concatenate(scores), np.concatenate(maps)
    return {"runtime": "onnx_full (ort)", "batch": batch, "network_ms_img": 1000 * seconds / len(images),
            "score_rel_diff": float((np.abs(scores - reference.image_scores) / np.abs(reference.image_scores)).max()),
            "map_rel_diff": max(float(np.abs(a - b).max() / np.abs(b).max())
                                for a, b in zip(maps, reference.anomaly_maps))}


def end_to_end(args: argparse.Namespace) -> list[dict]:
    """infer.py --enable_benchmark, auto against paddle + oneDNN, alternating runs."""
    folder = args.export_dir
    test_dir = os.path.join(args.data_path, args.category, "test")
    settings = {"auto": ["--runtime", "auto"], "paddle+onednn": ["--runtime", "paddle", "--enable_mkldnn", "True"]}
    rows = []
    for repeat in range(args.repeats):
        for label, extra in settings.items():
            with tempfile.TemporaryDirectory() as out:
                command = [sys.executable, os.path.join(ROOT, "infer.py"), "--model_file",
                           os.path.join(folder, "model.pdmodel"), "--params_file", os.path.join(folder, "model.pdiparams"),
                           "--stats", os.path.join(folder, "stats.npz"), "--input_file", test_dir, "--save_path", out,
                           "--no_pictures", "--enable_benchmark", "True", "--cpu_threads", str(args.threads), *extra]
                subprocess.run(command, check=True, capture_output=True, text=True)
                with open(os.path.join(out, "benchmark.json")) as f:
                    numbers = json.load(f)
                with open(os.path.join(out, "results.csv")) as f:
                    decisions = [r["decision"] for r in csv.DictReader(f)]
            rows.append({"run": repeat, "infer.py": label, "runtime": numbers["runtime"],
                         "total_ms_img": numbers["total_time(ms/img)"],
                         "inference_ms_img": numbers["inference_time(ms/img)"],
                         "anomalous": decisions.count("anomalous")})
    return rows


def fit_extraction(args: argparse.Namespace) -> list[dict]:
    """The fit's feature extraction over the training images: dynamic graph against the runtime."""
    import numpy as np

    from datasets.mvtec import MVTecDataset
    from engine.runtime_extraction import dynamic_graph, training_embedder
    from engine.pipeline import iterate_batches, rebuild_extractor
    from models.model_file import AnomalyModel

    model = AnomalyModel.load(args.model_path)
    extractor = rebuild_extractor(model, args.pretrained)
    train_set = MVTecDataset(args.data_path, args.category, "train", model.config.data)
    batches = [images for images, _, _ in iterate_batches(train_set, 8, "", False)]
    rows, features = [], {}
    for repeat in range(args.repeats):
        for label in ("dynamic graph", "runtime"):
            embed = (dynamic_graph(extractor) if label == "dynamic graph"
                     else training_embedder(extractor, model.config.data.crop_hw))
            start = time.perf_counter()
            features[label] = np.concatenate([embed(b) for b in batches])
            seconds = time.perf_counter() - start
            rows.append({"run": repeat, "extraction": label, "seconds": seconds,
                         "ms_img": 1000 * seconds / len(train_set)})
    ref = features["dynamic graph"]
    print(f"fit features, {len(train_set)} training images: runtime against dynamic graph max rel. diff "
          f"{float(np.abs(features['runtime'] - ref).max() / np.abs(ref).max()):.2e}")
    return rows


def main() -> int:
    args = parse_args()
    quiet_paddle_logs()
    os.makedirs(args.save_path, exist_ok=True)
    print_and_save(network_and_accuracy(args), os.path.join(args.save_path, "runtimes.csv"))
    if args.end_to_end:
        print_and_save(end_to_end(args), os.path.join(args.save_path, "end_to_end.csv"))
    if args.fit:
        print_and_save(fit_extraction(args), os.path.join(args.save_path, "fit_extraction.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
