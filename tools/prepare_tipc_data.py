"""Build (or confirm) the lite data set of the TIPC chain; test_tipc/prepare.sh calls it.

    python tools/prepare_tipc_data.py --kind subset --data_root test_tipc/data/mvtec --category bottle \\
        --mvtec_root ../shared/data/mvtec --n_train 20 --n_test_per_class 3
    python tools/prepare_tipc_data.py --kind synthetic --data_root test_tipc/data/mvtec --category bottle \\
        --n_train 20 --n_test_per_class 3

--kind subset links a seeded subset of the real category MVTEC_ROOT/<category>
(datasets.synthetic.subset_category); --kind synthetic generates an object category of that name
with tools/make_demo_data.py (run in this process). Either way the result is
DATA_ROOT/<category>. The marker file the generators leave in the category folder says what is
there already, so a second run with the same request prints "is up to date" and writes nothing.
Exit code 0 on success, 2 with a one-line message for bad arguments or a failed generation.
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
from utils.errors import UserError, run_cli  # noqa: E402

KINDS = ("subset", "synthetic")
SUBSET_GENERATOR = "datasets.synthetic.subset_category"
SYNTHETIC_GENERATOR = "datasets.synthetic.generate_category"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="subset: link part of a real MVTec category; synthetic: generate one")
    parser.add_argument("--data_root", required=True, help="folder the category folder is written into")
    parser.add_argument("--category", required=True, help="category folder name, e.g. bottle")
    parser.add_argument("--mvtec_root", default="",
                        help="folder of the real MVTec categories (needed by --kind subset)")
    parser.add_argument("--n_train", type=int, required=True, help="good training images")
    parser.add_argument("--n_test_per_class", "--n_test", dest="n_test_per_class", type=int, required=True,
                        help="test images per class (good and each defect type)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset choice / synthetic images")
    return parser.parse_args(argv)


def read_marker(folder: str) -> dict:
    """The generator's record in `folder`, or {} when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(folder, MARKER_NAME)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def subset_is_current(info: dict, source: str, n_train: int, n_test_per_class: int, seed: int) -> bool:
    """Whether the marker describes a subset of `source` as asked (fewer images where it has fewer)."""
    counts = info.get("counts", {})
    n_available = len(os.listdir(os.path.join(source, "train", "good")))
    return (info.get("generator") == SUBSET_GENERATOR and info.get("source") == source
            and info.get("seed") == seed and counts.get("train/good", 0) == min(n_train, n_available)
            and 0 < counts.get("test/good", 0) <= n_test_per_class)


def synthetic_is_current(info: dict, category: str, n_train: int, n_test_per_class: int, seed: int) -> bool:
    """Whether the marker describes the synthetic object category make_demo_data.py would write."""
    wanted = {"generator": SYNTHETIC_GENERATOR, "category": category, "kind": "object", "seed": seed,
              "n_train": n_train, "n_test_good": n_test_per_class, "n_test_per_defect": n_test_per_class}
    return all(info.get(k) == v for k, v in wanted.items())


def prepare_subset(args: argparse.Namespace, target: str, info: dict) -> int:
    source = os.path.realpath(os.path.join(args.mvtec_root, args.category))
    if not args.mvtec_root or not os.path.isdir(os.path.join(source, "train", "good")):
        raise UserError(f"--kind subset needs --mvtec_root with a category '{args.category}' "
                        f"(no train/good in {source})")
    if subset_is_current(info, source, args.n_train, args.n_test_per_class, args.seed):
        print(f"data: {target} is up to date")
        return 0
    try:
        written = subset_category(source, args.data_root, args.n_train, args.n_test_per_class, seed=args.seed)
    except OSError as err:
        raise UserError(f"cannot write the subset to '{args.data_root}': {err.strerror or err}") from None
    print(f"data: writing {written}")
    return 0


def prepare_synthetic(args: argparse.Namespace, target: str, info: dict) -> int:
    if synthetic_is_current(info, args.category, args.n_train, args.n_test_per_class, args.seed):
        print(f"data: {target} is up to date")
        return 0
    demo_args = ["--out", args.data_root, "--categories", f"{args.category}:object", "--seed", str(args.seed),
                 "--n_train", str(args.n_train), "--n_test_good", str(args.n_test_per_class),
                 "--n_test_per_defect", str(args.n_test_per_class)]
    # The equivalent command line; make_demo_data.main then runs in this process.
    print("data: " + " ".join([sys.executable, "tools/make_demo_data.py", *demo_args]), flush=True)
    return make_demo_data.main(demo_args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.n_train < 1 or args.n_test_per_class < 1:
        raise UserError("--n_train and --n_test_per_class must be at least 1")
    target = os.path.join(args.data_root, args.category)
    info = read_marker(target)
    if args.kind == "subset":
        return prepare_subset(args, target, info)
    return prepare_synthetic(args, target, info)


if __name__ == "__main__":
    run_cli(main)
