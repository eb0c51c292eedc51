"""Follow the settings through one small fit (engine.trainer.train, with --eval) and count how they
travel between the layers: issue 31's "climbs back up to a higher layer" and "pipeline.py is
re-entered", measured rather than read.

    python benchmarks/settings_trace.py [--compare OTHER_CHECKOUT] [--sequence] [--save_path output/bench_settings_trace]

How it counts (one child process per checkout, on a generated 8-image category, random-init ResNet18
at 64x64): sys.setprofile records every call into a library module (utils, datasets, models,
engine, deploy) one of whose arguments other than `self` is a settings object (RunSettings,
Config, ModelConfig, DataConfig); a settings object's own properties are not hand-overs.
Consecutive calls in one module make one visit.
- visits / modules: how many hand-overs, through how many modules;
- climbs: a visit followed by one in a higher layer (utils 0, datasets/models 1, engine/deploy 2),
  i.e. a lower-layer helper returned and the next hand-over starts above it;
- upward_calls: calls made from a lower-layer frame into a higher-layer function with the settings
  (a callback carrying them back up: the import rules allow no other way);
- pipeline_visits: visits to engine/pipeline.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from utils.table import print_and_save  # noqa: E402

COLUMNS = ("checkout", "visits", "modules", "climbs", "upward_calls", "pipeline_visits")
LAYERS = {"utils": 0, "datasets": 1, "models": 1, "engine": 2, "deploy": 2}

# Run in a child with the checkout's root as argv[1]: its own modules, not this one's.
CHILD = r'''
import argparse, json, os, sys, tempfile
root = os.path.abspath(sys.argv[1])
sys.path.insert(0, root)
LAYERS = json.loads(sys.argv[2])
import utils.runtime
if hasattr(utils.runtime, "configure_environment"):
    utils.runtime.configure_environment()
    utils.runtime.quiet_paddle_logs()
from datasets.synthetic import generate_category
from engine.cli import add_data_args, add_eval_args, add_model_args, config_from_args, run_settings
from engine.settings import RunSettings
from engine.trainer import train
from utils.config import Config, DataConfig, ModelConfig

SETTINGS = (RunSettings, Config, ModelConfig, DataConfig)
data = tempfile.mkdtemp(prefix="settings_trace_")
generate_category(data, "part", kind="object", seed=1, n_train=8, n_test_good=2, n_test_per_defect=2,
                  defects=("scratch",), image_size=64)
parser = argparse.ArgumentParser()
add_data_args(parser); add_model_args(parser); add_eval_args(parser)
args = parser.parse_args(["--data_path", data, "--category", "part", "--save_path", os.path.join(data, "out"),
                          "--arch", "resnet18", "--pretrained", "none", "--resize", "64", "--crop_size", "64",
                          "--k", "25", "--no_progress"])
config, run = config_from_args(args), run_settings(args, run_eval=True)
visits, upward = [], []

def library_module(frame):
    path = frame.f_code.co_filename
    if not path.startswith(root + os.sep):
        return None
    rel = os.path.relpath(path, root)
    return rel if rel.split(os.sep)[0] in LAYERS else None

def layer(rel):
    return LAYERS[rel.split(os.sep)[0]]

def profile(frame, event, arg):
    if event != "call":
        return
    rel = library_module(frame)
    code = frame.f_code
    names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    if rel is None or not any(isinstance(frame.f_locals.get(n), SETTINGS) for n in names if n != "self"):
        return
    if not visits or visits[-1][0] != rel:
        visits.append((rel, code.co_name))
    caller = frame.f_back
    while caller is not None and library_module(caller) is None:
        caller = caller.f_back
    if caller is not None and layer(library_module(caller)) < layer(rel):
        upward.append(f"{library_module(caller)} -> {rel}:{code.co_name}")

sys.setprofile(profile)
with open(os.devnull, "w") as quiet:
    stdout, sys.stdout = sys.stdout, quiet
    try:
        train(config, run)
    finally:
        sys.stdout = stdout
sys.setprofile(None)
climbs = sum(layer(b[0]) > layer(a[0]) for a, b in zip(visits, visits[1:]))
print(json.dumps({"visits": len(visits), "modules": len({v[0] for v in visits}), "climbs": climbs,
                  "upward_calls": len(upward), "pipeline_visits": sum(v[0] == os.path.join("engine", "pipeline.py")
                                                                      for v in visits),
                  "sequence": [f"{'  ' * layer(rel)}{rel}:{name}" for rel, name in visits], "upward": upward}))
'''


def trace(checkout: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, checkout, json.dumps(LAYERS)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if done.returncode != 0:
        raise SystemExit(f"error: the trace of {checkout} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", default=None, help="another checkout of the project, traced the same way")
    parser.add_argument("--sequence", action="store_true", help="also print each checkout's visits, indented by layer")
    parser.add_argument("--save_path", default="output/bench_settings_trace")
    args = parser.parse_args()
    rows = []
    for checkout in [c for c in (args.compare, ROOT) if c]:
        result = trace(os.path.abspath(checkout))
        if args.sequence:
            print(f"== {checkout}", *result["sequence"], *result["upward"], sep="\n")
        rows.append({"checkout": checkout, **{c: result[c] for c in COLUMNS[1:]}})
    os.makedirs(args.save_path, exist_ok=True)
    print_and_save(rows, COLUMNS, os.path.join(args.save_path, "settings_trace.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
