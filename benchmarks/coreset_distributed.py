"""A distributed fit against one process, as a user runs both: train.py alone and under
`python -m paddle.distributed.launch --nproc_per_node W` on the same data, alternating, then the
banks compared bit for bit and the fit_stats of each run side by side.

    python benchmarks/coreset_distributed.py --workers 2 --repeats 2 --latency_ms 0,5 -- \\
        --data_path MVTEC_ROOT --category bottle --arch mobilenet_v2 --pretrained mnv2.pdparams --k 10 --val_ratio 0

Everything after `--` goes to train.py as it is. --latency_ms sets PATCHCORE_COLLECTIVE_LATENCY_MS
(engine/distributed.py: every collective first sleeps that long, a stand-in for separate
machines) for the distributed runs; one process has no collectives. Rows: one per run, in the
order run; the table is saved as CSV.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

import numpy as np  # noqa: E402

from models.model_file import AnomalyModel  # noqa: E402
from utils.table import format_table, write_csv  # noqa: E402

COLUMNS = ("run", "workers", "latency_ms", "same_as_one", "feature_s", "coreset_s", "coreset_ratio", "picks",
           "collectives", "rounds", "single_pick_rounds", "wait_s_per_worker", "peak_MB_per_worker")


def train(train_args: list[str], save_path: str, workers: int, latency_ms: float) -> AnomalyModel:
    """One train.py run (launched over `workers` processes if more than one); its model."""
    launch = [] if workers == 1 else ["-m", "paddle.distributed.launch", "--nproc_per_node", str(workers),
                                      "--log_dir", os.path.join(save_path, "log")]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PATCHCORE_COLLECTIVE_LATENCY_MS=str(latency_ms))
    done = subprocess.run([sys.executable, *launch, "train.py", *train_args, "--save_path", save_path, "--no_progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"train.py failed ({workers} workers):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    models = [name for name in os.listdir(save_path) if name.endswith(".pdparams")]
    return AnomalyModel.load(os.path.join(save_path, models[0]))


def compare(model: AnomalyModel, one: AnomalyModel) -> str:
    """"yes" for bit-identical arrays, else their largest absolute difference."""
    if all(np.array_equal(model.arrays[k], one.arrays[k]) for k in one.arrays):
        return "yes"
    return "max |diff| %.1e" % max(float(np.abs(model.arrays[k].astype(np.float64) - one.arrays[k]).max())
                                   for k in one.arrays)


def row_of(run: int, model: AnomalyModel, workers: int, latency_ms: float, one: AnomalyModel | None) -> dict:
    stats = model.fit_stats
    per_rank = lambda name: [stats.get(f"rank{r}_{name}", stats.get(name, float("nan"))) for r in range(workers)]  # noqa: E731
    same = "" if one is None else compare(model, one)
    return {"run": run, "workers": workers, "latency_ms": latency_ms if workers > 1 else "", "same_as_one": same,
            "feature_s": stats.get("feature_seconds", stats.get("accumulate_seconds")),
            "coreset_s": stats.get("coreset_seconds", float("nan")),
            "coreset_ratio": "" if one is None else stats.get("coreset_seconds", float("nan")) / one.fit_stats.get(
                "coreset_seconds", float("nan")),
            "picks": int(stats.get("bank_size", 0)), "collectives": stats.get("rank0_selection_collectives", ""),
            "rounds": stats.get("rank0_selection_rounds", ""),
            "single_pick_rounds": stats.get("rank0_selection_single_pick_rounds", ""),
            "wait_s_per_worker": " / ".join(f"{w:.2f}" for w in per_rank("selection_wait_seconds")),
            "peak_MB_per_worker": " / ".join(f"{p:.0f}" for p in per_rank("peak_memory_mb"))}


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="alternating pairs of runs")
    parser.add_argument("--latency_ms", default="0", help="comma-separated, one distributed run each per repeat")
    parser.add_argument("--save_path", default="output/bench_coreset_distributed")
    args = parser.parse_args(argv[:split])
    train_args = argv[split + 1:]
    os.makedirs(args.save_path, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            one = train(train_args, os.path.join(work, f"one{repeat}"), 1, 0)
            rows.append(row_of(len(rows) + 1, one, 1, 0, None))
            print(format_table(rows[-1:], COLUMNS).splitlines()[-2], flush=True)
            for latency in (float(v) for v in args.latency_ms.split(",")):
                model = train(train_args, os.path.join(work, f"w{repeat}_{latency}"), args.workers, latency)
                rows.append(row_of(len(rows) + 1, model, args.workers, latency, one))
                print(format_table(rows[-1:], COLUMNS).splitlines()[-2], flush=True)
    csv_path = os.path.join(args.save_path, "coreset_distributed.csv")
    write_csv(csv_path, rows, COLUMNS)
    print(f"{format_table(rows, COLUMNS)}\nsaved {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
