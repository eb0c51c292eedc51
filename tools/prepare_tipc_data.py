"""Build (or confirm) the TIPC lite data set: called by test_tipc/prepare.sh.

    python tools/prepare_tipc_data.py --kind subset --data_root test_tipc/data/mvtec --category bottle \\
        --mvtec_root ../shared/data/mvtec --n_train 20 --n_test 3

--kind subset links a seeded subset of the real category (datasets.synthetic.subset_category);
--kind synthetic generates one (tools/make_demo_data.py). The marker file the generators leave in
the category folder says what is there already, so a second run with the same request does nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# Runnable as `python tools/prepare_tipc_data.py` from the repo root without installing the project.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic import MARKER_NAME, subset_category  # noqa: E402
from tools import make_demo_data  # noqa: E402
from utils.errors import run_cli  # noqa: E402

SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=("subset", "synthetic"))
    parser.add_argument("--data_root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--mvtec_root", default="", help="folder of real MVTec categories (--kind subset)")
    parser.add_argument("--n_train", type=int, required=True)
    parser.add_argument("--n_test", type=int, required=True, help="images per test class")
    return parser.parse_args()


def read_marker(folder: str) -> dict:
    try:
        with open(os.path.join(folder, MARKER_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def subset_is_current(info: dict, source: str, n_train: int, n_test: int) -> bool:
    counts = info.get("counts", {})
    n_available = len(os.listdir(os.path.join(source, "train", "good")))
    return (info.get("generator") == "datasets.synthetic.subset_category" and info.get("source") == source
            and info.get("seed") == SEED and counts.get("train/good", 0) == min(n_train, n_available)
            and 0 < counts.get("test/good", 0) <= n_test)


def synthetic_is_current(info: dict, category: str, n_train: int, n_test: int) -> bool:
    wanted = {"generator": "datasets.synthetic.generate_category", "category": category, "kind": "object",
              "seed": SEED, "n_train": n_train, "n_test_good": n_test, "n_test_per_defect": n_test}
    return all(info.get(k) == v for k, v in wanted.items())


def main() -> int:
    args = parse_args()
    target = os.path.join(args.data_root, args.category)
    info = read_marker(target)
    if args.kind == "subset":
        source = os.path.realpath(os.path.join(args.mvtec_root, args.category))
        if subset_is_current(info, source, args.n_train, args.n_test):
            print(f"data: {target} is up to date")
        else:
            print(f"data: writing {subset_category(source, args.data_root, args.n_train, args.n_test, seed=SEED)}")
        return 0
    if synthetic_is_current(info, args.category, args.n_train, args.n_test):
        print(f"data: {target} is up to date")
        return 0
    demo_args = ["--out", args.data_root, "--categories", f"{args.category}:object", "--seed", str(SEED),
                 "--n_train", str(args.n_train), "--n_test_good", str(args.n_test),
                 "--n_test_per_defect", str(args.n_test)]
    print("data: tools/make_demo_data.py " + " ".join(demo_args))
    return make_demo_data.main(demo_args)


if __name__ == "__main__":
    run_cli(main)
