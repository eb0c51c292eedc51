"""Generate the offline demo data set (synthetic, MVTec AD layout).

    python tools/make_demo_data.py --out data/demo

MVTec AD may not be redistributed, so the README's first command and CI use this data instead.
By default one object category and one texture category are written; see datasets/synthetic.py.
"""
from __future__ import annotations

import argparse
import os
import sys

# Runnable as `python tools/make_demo_data.py` from the repo root without installing the project.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm  # noqa: E402

from datasets.synthetic import (DEFAULT_CATEGORIES, DEFECT_TYPES, KINDS,  # noqa: E402
                                generate_category)
from utils.errors import OneLineArgumentParser, UserError, run_cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="data/demo", help="data root to write the categories into")
    parser.add_argument("--categories", nargs="+", default=None, metavar="NAME[:KIND]",
                        help="categories to write; KIND is object or texture (default: "
                             + ", ".join(f"{n}:{k}" for n, k in DEFAULT_CATEGORIES.items()) + ")")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_train", type=int, default=20, help="good training images per category")
    parser.add_argument("--n_test_good", type=int, default=5, help="good test images per category")
    parser.add_argument("--n_test_per_defect", type=int, default=5, help="test images per defect type")
    parser.add_argument("--defects", nargs="+", default=list(DEFECT_TYPES), choices=DEFECT_TYPES)
    parser.add_argument("--image_size", type=int, default=128, help="square image side in pixels")
    return parser.parse_args(argv)


def parse_categories(specs: list[str] | None) -> dict[str, str]:
    """NAME[:KIND] -> {name: kind}; a default category name may omit its kind."""
    if not specs:
        return dict(DEFAULT_CATEGORIES)
    categories: dict[str, str] = {}
    for spec in specs:
        name, _, kind = spec.partition(":")
        kind = kind or DEFAULT_CATEGORIES.get(name, "")
        if not kind:
            raise UserError(f"category '{name}' needs a kind: write {name}:object or {name}:texture")
        if kind not in KINDS:
            raise UserError(f"unknown kind '{kind}' in '{spec}'; choose object or texture")
        if name in categories:
            raise UserError(f"category '{name}' is given twice")
        categories[name] = kind
    return categories


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    categories = parse_categories(args.categories)
    if args.n_train < 1:
        raise UserError("--n_train must be at least 1")
    if args.n_test_good < 0 or args.n_test_per_defect < 0:
        raise UserError("--n_test_good and --n_test_per_defect must not be negative")

    per_category = args.n_train + args.n_test_good + args.n_test_per_defect * len(args.defects)
    written = []
    with tqdm(total=per_category * len(categories), unit="img", desc="demo data",
              disable=None) as bar:
        for name, kind in categories.items():
            try:
                folder = generate_category(
                    args.out, name, kind=kind, seed=args.seed, n_train=args.n_train,
                    n_test_good=args.n_test_good, n_test_per_defect=args.n_test_per_defect,
                    defects=tuple(args.defects), image_size=args.image_size,
                    on_image=lambda _path: bar.update(1))
            except ValueError as err:
                raise UserError(str(err)) from None
            except OSError as err:
                raise UserError(f"cannot write demo data to '{args.out}': "
                                     f"{err.strerror or err}") from None
            written.append((name, kind, folder))

    for name, kind, folder in written:
        print(f"{folder}  ({kind}, {args.image_size}x{args.image_size}, seed {args.seed})")
        print(f"  train/good: {args.n_train}   test/good: {args.n_test_good}   "
              + "   ".join(f"test/{d}: {args.n_test_per_defect}" for d in args.defects)
              + f"   masks: {args.n_test_per_defect * len(args.defects)}")
    print(f"data root: {os.path.abspath(args.out)}  (categories: {', '.join(categories)})")
    return 0


if __name__ == "__main__":
    run_cli(main)
