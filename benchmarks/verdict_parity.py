"""Every image's verdict through every deployment path: predict.py (dynamic graph), infer.py with
each installed runtime (paddle, openvino, onnxruntime), deploy.Inferencer, and the service.

  python benchmarks/verdict_parity.py --model_path output/bottle.pdparams \
      --images ../shared/data/mvtec/bottle/test --save_path /tmp/parity

Exports the model (--format onnx, --check_image IMAGES: the export refuses itself if a runtime flips
a verdict), runs each path on every image below IMAGES, and prints one row per path: images, verdicts
that differ from predict.py's, anomalous count, and the nearest score to the image threshold; the
model's decision margin (distance from the threshold to the nearest calibration score) is printed
first. Saves verdict_parity.csv (the table) and verdicts.csv (every image, every path).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from utils.table import format_table, write_csv  # noqa: E402

RUNTIMES = ("paddle", "openvino", "onnxruntime")
COLUMNS = ("path", "images", "differ_from_predict", "anomalous", "nearest_to_threshold")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--images", required=True, help="an image folder (searched recursively)")
    parser.add_argument("--save_path", required=True)
    return parser.parse_args()


def script(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {args[0]} failed: {done.stderr.strip().splitlines()[-1]}")
    return done.stdout


def results(folder: str) -> dict[str, tuple[str, float]]:
    with open(os.path.join(folder, "results.csv")) as f:
        return {os.path.abspath(r["image"]): (r["decision"], float(r["image_score"])) for r in csv.DictReader(f)}


def service_verdicts(export_dir: str, paths: list[str]) -> dict[str, tuple[str, float]]:
    """serve.py on a free loopback port, every image POSTed once."""
    import json

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "serve.py", "--port", str(port), "--model", f"m={export_dir}"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        out = {}
        for path in paths:
            with open(path, "rb") as f:
                request = urllib.request.Request(url + "/api/v1/models/m/predict", data=f.read(), method="POST",
                                                 headers={"Content-Type": "application/octet-stream"})
            answer = json.load(urllib.request.urlopen(request, timeout=120))
            out[os.path.abspath(path)] = (answer["decision"], float(answer["image_score"]))
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> int:
    args = parse_args()
    from deploy import Inferencer
    from deploy.batch_scoring import collect_images
    from models.model_file import AnomalyModel

    model = AnomalyModel.load(args.model_path)
    c = model.calibration
    print(f"image threshold {c['image_threshold']:.6g} ({c.get('image_rule', '')}); decision margin "
          f"{c.get('image_margin', float('nan')):.4g} from the nearest of {int(c.get('calibration_images', 0))} "
          f"calibration scores")
    paths = collect_images(args.images)
    export_dir = os.path.join(args.save_path, "export")
    print(script("export_model.py", "--model_path", args.model_path, "--save_dir", export_dir, "--format", "onnx",
                 "--check_image", args.images))
    script("predict.py", args.images, "--model_path", args.model_path, "--save_path",
           os.path.join(args.save_path, "predict"), "--no_pictures")
    every = {"predict.py": results(os.path.join(args.save_path, "predict"))}
    for runtime in RUNTIMES:
        if importlib.util.find_spec(runtime) is None:
            continue
        folder = os.path.join(args.save_path, f"infer_{runtime}")
        script("infer.py", "--model_file", os.path.join(export_dir, "model.pdmodel"), "--params_file",
               os.path.join(export_dir, "model.pdiparams"), "--stats", os.path.join(export_dir, "stats.npz"),
               "--input_file", args.images, "--runtime", runtime, "--save_path", folder, "--no_pictures")
        every[f"infer.py {runtime}"] = results(folder)
    inferencer = Inferencer(export_dir)
    every[f"Inferencer ({inferencer.options.runtime})"] = {
        os.path.abspath(p): (r.decision, r.image_score) for p, r in zip(paths, map(inferencer.predict, paths))}
    every["service"] = service_verdicts(export_dir, paths)
    reference = every["predict.py"]
    rows = []
    for name, got in every.items():
        rows.append({"path": name, "images": len(got),
                     "differ_from_predict": sum(got[p][0] != reference[p][0] for p in reference),
                     "anomalous": sum(v[0] == "anomalous" for v in got.values()),
                     "nearest_to_threshold": min(abs(v[1] - c["image_threshold"]) for v in got.values())})
    write_csv(os.path.join(args.save_path, "verdict_parity.csv"), rows, COLUMNS)
    write_csv(os.path.join(args.save_path, "verdicts.csv"),
              [{"image": p, **{n: every[n][p][0] for n in every}} for p in reference], ("image", *every))
    print(format_table(rows, COLUMNS))
    print(f"saved {os.path.join(args.save_path, 'verdict_parity.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
