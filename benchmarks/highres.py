"""Scoring at several resolutions: today's kNN against the tiled exact search, side by side.

    python benchmarks/highres.py --models b224/bottle.pdparams,b448/bottle.pdparams \\
        --test_dir MVTEC_ROOT/bottle/test --weights mnv2.pdparams --images 12 --save_path output/bench_highres

Each model (one per input size or bank budget) runs in its own process, so its peak RSS is its own.
The test images (--images of them, evenly spread over the sorted folder) are embedded once, then
scored one at a time (as infer.py --batch_size 1) by each method, alternating method by method for
--rounds rounds; ms/img is the median of the scorer call (kNN, eq. 7, upsampling and blur; the
network is the same for all and left out), wall and process CPU time (on a shared machine the CPU
time is the steadier of the two). Methods:

- today: models/knn.py of the base commit (--base, read with `git show`), grouped + plain product
  (in this process, so with the entry scripts' memory setting and today's maps: the search alone
  is compared; infer.py of the base tree against this one is the end-to-end comparison);
- tiled: the full product in cache-sized tiles with the minimum fused, ties settled in float64;
- grouped: the grouped search falling back to the tiled product (the scorer's default now), on one
  thread as predict.py and training run it (beside Paddle's dynamic graph);
- threads: the same with the tiles shared by --threads threads, as the deploy runtimes run it
  (infer.py, the Inferencer, serve.py: deploy.exported_model.scoring_options). This process runs the
  network in Paddle's dynamic graph first, as predict.py does;
- faiss-flat, faiss-hnsw (--faiss, needs `pip install faiss-cpu`, not a project requirement):
  faiss's exact flat L2 index and its approximate HNSW graph (32 links, efSearch 64) on --threads
  threads, measured against the same reference.

recall@1 is the share of patches whose entry is the float64 nearest (a float64 product over the
whole bank, the reference); `verdicts` counts images whose decision (image score >= the model's
threshold) and defect area (map >= pixel threshold) equal the reference's. The machine load
(1-minute load average) is printed before and after and stored with each row.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

import numpy as np  # noqa: E402

from models.knn import MemoryBank, exact_sq_distances, one_blas_thread  # noqa: E402
from utils.table import format_table, print_and_save, write_csv  # noqa: E402

COLUMNS = ("model", "input", "patches", "bank", "method", "ms_per_img", "cpu_ms_per_img", "recall_at_1", "verdicts", "max_score_diff",
           "settled_ties", "scoring_peak_mb", "process_peak_rss_mb", "load_1min")
REFERENCE_ROWS = 256


class SearchBank:
    """What the scorer needs of a memory bank (features, len, dim, search); subclasses find the indices
    and the distances are recomputed exactly, as MemoryBank does."""

    def __init__(self, features: np.ndarray):
        self.features = np.ascontiguousarray(features, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def indices(self, queries: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        index = self.indices(queries, k).astype(np.int64)
        dist = np.sqrt(exact_sq_distances(np.repeat(queries, k, axis=0), self.features[index.reshape(-1)]))
        return dist.reshape(len(queries), k).astype(np.float32), index


class Float64Bank(SearchBank):
    """Brute-force reference: float64 products over the whole bank."""

    def __init__(self, features: np.ndarray):
        super().__init__(features)
        self._bank64 = self.features.astype(np.float64)
        self._sq = np.einsum("mc,mc->m", self._bank64, self._bank64)

    def indices(self, queries: np.ndarray, k: int) -> np.ndarray:
        parts = []
        for s in range(0, len(queries), REFERENCE_ROWS):
            partial = self._sq - 2.0 * (queries[s:s + REFERENCE_ROWS].astype(np.float64) @ self._bank64.T)
            parts.append(np.argsort(partial, axis=1, kind="stable")[:, :k] if k > 1
                         else np.argmin(partial, axis=1)[:, None])
        return np.concatenate(parts)


class FaissBank(SearchBank):
    """A faiss index: exact flat L2, or the approximate HNSW graph (32 links, efSearch 64)."""

    def __init__(self, features: np.ndarray, kind: str, threads: int):
        import faiss

        super().__init__(features)
        faiss.omp_set_num_threads(threads)
        self.index = faiss.IndexFlatL2(self.dim) if kind == "flat" else faiss.IndexHNSWFlat(self.dim, 32)
        if kind == "hnsw":
            self.index.hnsw.efSearch = 64
        self.index.add(self.features)

    def indices(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(queries, k)[1]


def base_memory_bank(commit: str) -> type:
    """MemoryBank class of models/knn.py at `commit` (today's search, for the side-by-side)."""
    source = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:models/knn.py"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("knn_base", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{commit}:models/knn.py", "exec"), module.__dict__)
    return module.MemoryBank


def spread(paths: list[str], count: int) -> list[str]:
    """`count` paths evenly spaced over the sorted list (every defect type of a test folder)."""
    picks = np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int)
    return [paths[i] for i in sorted(set(picks))]


def _child(args: argparse.Namespace, model_path: str) -> list[dict]:
    from datasets.preprocess import load_image, preprocess_image
    from deploy.batch_scoring import collect_images
    from models.feature_extractor import build_extractor, extract
    from models.model_file import AnomalyModel
    from models.patchcore.scorer import PatchCoreScorer
    from models.thresholds import Thresholds
    from utils.runtime import peak_memory_mb

    model = AnomalyModel.load(model_path)
    data, m = model.config.data, model.config.model
    thresholds = Thresholds.from_calibration(model.calibration)
    extractor = build_extractor(m, pretrained=args.weights)
    embeddings = [extract(extractor, preprocess_image(load_image(p), data.resize, data.crop_size, data.mean,
                                                      data.std, data.interpolation)[None])
                  for p in spread(collect_images(args.test_dir), args.images)]
    bank = model.arrays["memory_bank"]
    banks = {"reference": Float64Bank(bank), "today": base_memory_bank(args.base)(bank),
             "tiled": MemoryBank(bank, grouped=False), "grouped": MemoryBank(bank),
             "threads": MemoryBank(bank, product_threads=args.threads)}
    if args.faiss:
        banks.update({"faiss-flat": FaissBank(bank, "flat", args.threads),
                      "faiss-hnsw": FaissBank(bank, "hnsw", args.threads)})
    scorers = {}
    for name, memory in banks.items():
        threads = args.threads if name.startswith(("threads", "faiss")) else 1
        scorers[name] = PatchCoreScorer(bank[:1], data.crop_size, m.num_neighbors, m.image_score, m.sigma,
                                        product_threads=threads)
        scorers[name].bank = memory
    scores = {name: [scorer(e) for e in embeddings[:1]] for name, scorer in scorers.items()}   # warm-up
    times = {name: [] for name in scorers}
    cpu_times = {name: [] for name in scorers}
    peaks = {}
    for _ in range(args.rounds):
        for name, scorer in scorers.items():
            if name == "reference":
                continue
            tracemalloc.start()
            scores[name] = []
            for embedding in embeddings:
                start, cpu_start = time.perf_counter(), time.process_time()
                with one_blas_thread():   # as deploy.batch_scoring.score_batch runs every scorer
                    scores[name].append(scorer(embedding))
                times[name].append(1000 * (time.perf_counter() - start))
                cpu_times[name].append(1000 * (time.process_time() - cpu_start))
            peaks[name] = max(peaks.get(name, 0.0), tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
    scores["reference"] = [scorers["reference"](e) for e in embeddings]

    def verdict(s) -> tuple:
        return tuple(s.image_scores >= thresholds.image) + tuple((s.anomaly_maps >= thresholds.pixel).sum((1, 2)))

    reference_nearest = [banks["reference"].search(patches(e))[1][:, 0] for e in embeddings]
    rows = []
    for name in (name for name in banks if name != "reference"):
        found = [banks[name].search(patches(e))[1][:, 0] for e in embeddings]
        hits = sum(int((f == r).sum()) for f, r in zip(found, reference_nearest))
        rows.append({"model": os.path.basename(os.path.dirname(model_path)) or model_path,
                     "input": "x".join(map(str, data.crop_hw)), "patches": int(np.prod(embeddings[0].shape[2:])),
                     "bank": len(bank), "method": f"threads x{args.threads}" if name == "threads" else name, "ms_per_img": statistics.median(times[name]),
                     "cpu_ms_per_img": statistics.median(cpu_times[name]),
                     "recall_at_1": hits / sum(len(r) for r in reference_nearest),
                     "verdicts": f"{sum(verdict(a) == verdict(b) for a, b in zip(scores[name], scores['reference']))}"
                                 f"/{len(embeddings)}",
                     "max_score_diff": max(float(np.abs(a.image_scores - b.image_scores).max())
                                           for a, b in zip(scores[name], scores["reference"])),
                     "settled_ties": getattr(banks[name], "settled_ties", "-"), "scoring_peak_mb": peaks[name],
                     "process_peak_rss_mb": peak_memory_mb(), "load_1min": os.getloadavg()[0]})
    return rows


def patches(embedding: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(embedding.transpose(0, 2, 3, 1).reshape(-1, embedding.shape[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, help="comma-separated PatchCore model files (.pdparams)")
    parser.add_argument("--test_dir", required=True, help="folder of test images (searched recursively)")
    parser.add_argument("--weights", default=None, help="backbone weights (.pdparams) if the model's are elsewhere")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds per method")
    parser.add_argument("--base", default="37b858a", help="commit whose models/knn.py is 'today'")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of the 'threads' method (and faiss's), as the deploy runtimes' --cpu_threads")
    parser.add_argument("--faiss", action="store_true", help="also faiss flat and HNSW indexes (pip install faiss-cpu)")
    parser.add_argument("--save_path", default="output/bench_highres")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args, args.child)))
        return 0
    os.makedirs(args.save_path, exist_ok=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    for model_path in args.models.split(","):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", model_path], check=True,
                             capture_output=True, text=True).stdout
        model_rows = json.loads(out.strip().splitlines()[-1])
        rows += model_rows
        print(format_table(model_rows, COLUMNS), flush=True)
        write_csv(os.path.join(args.save_path, "highres.csv"), rows, COLUMNS)
    print(f"load average after: {os.getloadavg()}")
    print_and_save(rows, COLUMNS, os.path.join(args.save_path, "highres.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
