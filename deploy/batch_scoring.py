"""Scoring new images and reporting decisions: shared by predict.py (dynamic graph) and infer.py.

Both scripts differ only in how a batch of images becomes patch embeddings (the dynamic-graph
extractor or an inference runtime); everything after that is `run_inference`, which
streams: each image's row, figure and map are written as soon as its batch is scored, so memory
does not grow with the number of images (see ResultWriter for the file names while a run is going).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections import deque
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from datasets.image_files import images_below
from datasets.preprocess import IMAGE_EXTENSIONS, load_image, preprocess_image, resized_rgb
from deploy.benchmark import StageTimer
from models.knn import one_blas_thread
from models.model_file import AnomalyModel
from models.scoring import Scores, ScoringOptions
from models.thresholds import Thresholds
from utils.config import DataConfig
from utils.errors import UserError
from utils.io import (atomic_path, ensure_writable_dir, naming_the_file, output_lock, readable_text,
                      remove_stale_temporaries, temp_prefix)
from utils.visualize import save_figure

# "error" is empty for scored images; for the others decision is "error" and it says why.
RESULT_COLUMNS = ("image", "image_score", "normalized_score", "decision", "defect_area", "error")


def collect_images(input_path: str) -> list[str]:
    """One image, or every image below a folder (sorted, recursively)."""
    if os.path.isfile(input_path):
        return [input_path]
    if not os.path.isdir(input_path):
        # A named pipe, socket or device is no image: reading it could block forever.
        raise UserError(f"input is not a regular file or folder: {input_path}" if os.path.exists(input_path)
                        else f"input not found: {input_path}")
    paths = images_below(input_path)
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {input_path}")
    return paths


Embedder = Callable[[np.ndarray], np.ndarray]


def preprocessed_batches(paths: list[str], data: DataConfig, batch_size: int,
                         ahead: int = 2) -> Iterator[tuple[list[str], list[np.ndarray], dict[str, str]]]:
    """(paths, images [3,H,W] of those that could be read, {path: error} of the others) batch by
    batch, read and preprocessed `ahead` batches in advance.

    A background thread does the reading: PIL releases the GIL while it decodes and resizes, so on
    a machine with two cores the next images are decoded while the current ones go through the
    network and the memory bank (decoding a 900x900 PNG alone costs about 20 ms).
    """
    def load(batch: list[str]) -> tuple[list[np.ndarray], dict[str, str]]:
        images, errors = [], {}
        for path in batch:
            try:
                images.append(preprocess_image(load_image(path), data.resize, data.crop_size, data.mean, data.std,
                                               data.interpolation))
            except UserError as err:
                errors[path] = str(err)
        return images, errors

    batches = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = deque(reader.submit(load, batch) for batch in batches[:ahead])
        for i, batch in enumerate(batches):
            images, errors = pending.popleft().result()
            if i + ahead < len(batches):
                pending.append(reader.submit(load, batches[i + ahead]))
            yield batch, images, errors


class Scored(NamedTuple):
    """One image's outcome: its scores (index into `scores`) or why it could not be scored."""
    path: str
    scores: Scores | None
    index: int
    error: str


def iter_scores(paths: list[str], data: DataConfig, embed: Embedder, scorer: Callable[[np.ndarray], Scores],
                batch_size: int, timer: StageTimer | None = None) -> Iterator[Scored]:
    """Preprocess -> embed (dynamic graph or predictor) -> score, batch by batch, one Scored per image.

    An image that cannot be decoded, or whose scores are not finite, is yielded with its error and
    the others go on; a model that does not fit the features stops the run (every image would fail).
    The preprocess stage's time is what the scoring waited for the reader (see preprocessed_batches).
    """
    timer = timer or StageTimer()
    batches = preprocessed_batches(paths, data, batch_size)
    while True:
        with timer.stage("preprocess"):
            batch, images, errors = next(batches, (None, None, None))
        if batch is None:
            break
        scores = score_batch(np.stack(images), embed, scorer, timer) if images else None
        index = 0
        for path in batch:   # in input order, failed images included
            if path in errors:
                yield Scored(path, None, 0, errors[path])
                continue
            yield Scored(path, scores, index, non_finite_error(scores, index, path))
            index += 1


def score_batch(images: np.ndarray, embed: Embedder, scorer: Callable[[np.ndarray], Scores],
                timer: StageTimer | None = None) -> Scores:
    """Preprocessed images [B,3,H,W] -> embeddings -> scores: the one scoring step of infer.py,
    predict.py and the service (deploy.inferencer)."""
    timer = timer or StageTimer()
    with timer.stage("inference", len(images)):
        embedding = embed(images)
    # NumPy's BLAS on one thread for the scorer's small steps: OpenBLAS threads woken for them spin
    # afterwards, taking the other core's time (bottle: 25 CPU-ms per image's scoring with two
    # threads, 15 with one). The memory bank's large products take the threads its
    # ScoringOptions allow (models.knn.MemoryBank.product_threads).
    with timer.stage("postprocess"), one_blas_thread():
        try:
            return scorer(embedding)
        except ValueError as err:
            raise UserError(f"model and memory bank do not match: {err}") from None


def non_finite_error(scores: Scores, index: int, name: str) -> str:
    """Why image `index` of `scores` cannot be decided ('' when its score and map are finite)."""
    finite = np.isfinite(scores.image_scores[index]) and np.isfinite(scores.anomaly_maps[index]).all()
    return "" if finite else f"non-finite score for image '{name}'"


def score_images(paths: list[str], data: DataConfig, embed: Embedder,
                 scorer: Callable[[np.ndarray], Scores], batch_size: int, timer: StageTimer | None = None) -> Scores:
    """All images' scores at once (benchmarks); any image that cannot be scored is an error."""
    parts = []
    for item in iter_scores(paths, data, embed, scorer, batch_size, timer):
        if item.error:
            raise UserError(item.error)
        if item.index == 0:   # the first image of each scored batch carries the batch's scores
            parts.append(item.scores)
    return Scores.concatenate(parts)


def decision_row(path: str, image_score: float, anomaly_map: np.ndarray, thresholds: Thresholds) -> dict[str, Any]:
    """Raw score, score normalised to [0, 1] (0.5 = threshold), decision, shown defect area of one
    image (Thresholds.decide / region_shown: the area is 0 on a normal image)."""
    return {"image": path, "image_score": float(image_score),
            "normalized_score": float(thresholds.normalize(image_score)),
            "decision": thresholds.decide(image_score),
            "defect_area": float(thresholds.region_shown(image_score, anomaly_map).mean()), "error": ""}


def figure_name(path: str, used: set[str]) -> str:
    """`<parent>_<stem>.png`, with more of the path (then a counter) when another image already has it.

    Keeps a/good/x.png and b/good/x.png from overwriting each other's figure.
    """
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    parts[-1] = os.path.splitext(parts[-1])[0]
    for depth in range(2, len(parts) + 1):
        name = "_".join(p for p in parts[-depth:] if p) + ".png"
        if name not in used:
            break
    counter = 2
    while name in used:
        name, counter = f"{name[:-4].rsplit('~', 1)[0]}~{counter}.png", counter + 1
    used.add(name)
    return name


def _partial(path: str) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}.partial{ext}"


class ResultWriter:
    """Writes each image's results as soon as it is scored: nothing but its name and score is kept.

    results.csv and results.json grow row by row under the names results.partial.csv / .json and
    are renamed to their final names when the run completes, so a complete-looking file is always
    complete and an interrupted run leaves its rows so far, clearly named. Figures are written per
    image. Anomaly maps (--save_maps) go to a raw temporary file and become anomaly_maps.npz at the
    end, copied block by block. Results of an earlier run in the same folder are removed first, so a
    folder never mixes two runs' results.
    """

    def __init__(self, save_path: str, data: DataConfig, thresholds: Thresholds, calibration: dict[str, Any],
                 figures: bool = True, save_maps: bool = False):
        self.save_path, self.data, self.thresholds = save_path, data, thresholds
        self.figures, self.save_maps = figures, save_maps
        # One colour scale for every image, so heat maps can be compared side by side; a model
        # without a calibrated range gets each image's own range.
        self.value_range = (calibration.get("pixel_min"), calibration.get("pixel_max"))
        ensure_writable_dir(save_path)
        remove_stale_temporaries(save_path)
        self.csv_path, self.json_path = (os.path.join(save_path, n) for n in ("results.csv", "results.json"))
        self.maps_path = os.path.join(save_path, "anomaly_maps.npz")
        for stale in (self.csv_path, self.json_path, self.maps_path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
        self.csv_file = open(_partial(self.csv_path), "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.csv_file, lineterminator="\n")
        self.csv.writerow(RESULT_COLUMNS)
        self.json_file = open(_partial(self.json_path), "w", encoding="utf-8")
        self.json_file.write("[")
        self.n_rows = self.n_failed = 0
        self.figure_names: set[str] = set()
        self.map_images: list[str] = []
        self.map_scores: list[float] = []
        self.raw_maps = None
        if save_maps:
            fd, self.raw_maps_path = tempfile.mkstemp(dir=save_path, prefix=temp_prefix("anomaly_maps"), suffix=".tmp.raw")
            self.raw_maps = os.fdopen(fd, "wb")

    def add(self, row: dict[str, Any], anomaly_map: np.ndarray | None) -> None:
        shown = readable_row(row)   # non-UTF-8 names backslash-escaped; row keeps the real path to read
        # A full disk raises ENOSPC from write() or flush() without a file name: say which file.
        with naming_the_file(_partial(self.csv_path)):
            self.csv.writerow([f"{shown[c]:.4f}" if isinstance(shown[c], float) else "" if shown[c] is None
                               else shown[c] for c in RESULT_COLUMNS])
            self.csv_file.flush()     # flushed per image: an interrupted run keeps every row so far
        with naming_the_file(_partial(self.json_path)):
            self.json_file.write(("," if self.n_rows else "") + "\n" + json.dumps(shown))
            self.json_file.flush()
        self.n_rows += 1
        if row["error"]:
            self.n_failed += 1
            return
        if self.raw_maps is not None:
            with naming_the_file(self.raw_maps_path):
                self.raw_maps.write(np.ascontiguousarray(anomaly_map, dtype=np.float32).tobytes())
            self.map_images.append(shown["image"])
            self.map_scores.append(row["image_score"])
        if self.figures:
            self._figure(row, anomaly_map)

    def _figure(self, row: dict[str, Any], anomaly_map: np.ndarray) -> None:
        vmin, vmax = self.value_range
        vmin = float(anomaly_map.min()) if vmin is None else vmin
        vmax = float(anomaly_map.max()) if vmax is None else vmax
        image = resized_rgb(load_image(row["image"]), self.data.resize, self.data.crop_size, self.data.interpolation)
        figure = os.path.join(self.save_path, figure_name(row["image"], self.figure_names))
        with naming_the_file(figure):
            save_figure(figure, image, anomaly_map, self.thresholds.region_shown(row["image_score"], anomaly_map),
                        vmin, vmax, title=f"{row['image']}: {row['decision']} (score {row['image_score']:.3f}, "
                                          f"normalised {row['normalized_score']:.2f})")

    def close(self, complete: bool) -> None:
        """Complete: final names (and anomaly_maps.npz). Otherwise the partial files stay as they are."""
        self.json_file.write("\n]\n" if complete else "")
        self.csv_file.close()
        self.json_file.close()
        try:
            if self.raw_maps is not None:
                self.raw_maps.close()
                if complete:
                    self._write_maps()
            if complete:
                os.replace(_partial(self.csv_path), self.csv_path)
                os.replace(_partial(self.json_path), self.json_path)
        finally:
            if self.raw_maps is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.raw_maps_path)

    def _write_maps(self) -> None:
        # Same members as np.savez would write; the big one is streamed from the raw file.
        size = self.data.crop_size
        small = {"images": np.array(self.map_images, dtype=str), "image_scores": np.array(self.map_scores),
                 "resize": np.array(self.data.resize), "crop_size": np.array(size)}
        with atomic_path(self.maps_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in small.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
            with zf.open("anomaly_maps.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                              "fortran_order": False,
                                                              "shape": (len(self.map_images),
                                                                        *self.data.crop_hw)})
                with open(self.raw_maps_path, "rb") as raw:
                    shutil.copyfileobj(raw, member, 2**20)


def readable_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its text fields as utils.io.readable_text writes them (names that are not UTF-8)."""
    return {key: readable_text(value) if isinstance(value, str) else value for key, value in row.items()}


def check_embedder_fits(embed: Embedder, model: AnomalyModel) -> None:
    """One blank image of the model's crop through the network, before any output file exists: a
    program exported for another geometry (a crop edited in an old stats file) fails here, in one
    line, rather than at the first batch beside a header-only results.partial.csv."""
    crop_h, crop_w = model.config.data.crop_hw
    shape = tuple(embed(np.zeros((1, 3, crop_h, crop_w), np.float32)).shape)
    if shape[2:] != tuple(model.feature_grid):
        raise UserError(f"the network gives a {shape[2]}x{shape[3]} feature grid for a {crop_h}x{crop_w} crop, the "
                        f"model file {model.feature_grid[0]}x{model.feature_grid[1]}: they are not from one export")


def _print_row(row: dict[str, Any], first: bool) -> None:
    row = readable_row(row)
    if first:
        print(f"{'decision':<10} {'score':>10} {'normalized':>10} {'area':>7}  image", flush=True)
    if row["error"]:
        print(f"{'error':<10} {'':>10} {'':>10} {'':>7}  {row['image']}", flush=True)
    else:
        print(f"{row['decision']:<10} {row['image_score']:>10.4f} {row['normalized_score']:>10.4f} "
              f"{row['defect_area']:>7.4f}  {row['image']}", flush=True)


@dataclass(frozen=True)
class ScoringRun:
    """How a scoring run decides, writes and times: built once from the script's options
    (deploy.cli.scoring_run) and passed whole."""
    save_path: str
    batch_size: int = 1
    image_threshold: float | None = None       # overrides of the calibrated thresholds (raw score units)
    pixel_threshold: float | None = None
    figures: bool = True                        # a figure per image
    save_maps: bool = False                     # the raw anomaly maps (anomaly_maps.npz)
    scoring: ScoringOptions = ScoringOptions()  # the scorer's array library and threads
    timer: StageTimer | None = None             # infer.py --enable_benchmark's stage timings


def run_inference(paths: list[str], model: AnomalyModel, make_embedder: Callable[[], Embedder], run: ScoringRun) -> int:
    """Score `paths` (see collect_images), decide, and write each image's results as it is scored.

    An image that cannot be read or scored gets a row with decision 'error' (and a line on stderr)
    and the run goes on. Returns the number of such images: the scripts exit with 2 if it is not 0.
    The thresholds are checked before `make_embedder` loads a network, so a model without them
    fails at once.
    """
    thresholds = Thresholds.from_calibration(model.calibration, run.image_threshold, run.pixel_threshold)
    embed, scorer = make_embedder(), run.scoring.scorer(model)
    check_embedder_fits(embed, model)
    # One run at a time per folder: two would remove and mix each other's results.
    with output_lock(run.save_path):
        writer = ResultWriter(run.save_path, model.config.data, thresholds, model.calibration, run.figures,
                              run.save_maps)
        complete = False
        try:
            for item in iter_scores(paths, model.config.data, embed, scorer, run.batch_size, run.timer):
                if item.error:
                    print(f"error: {item.error}", file=sys.stderr, flush=True)
                    row = {"image": item.path, "image_score": None, "normalized_score": None, "decision": "error",
                           "defect_area": None, "error": item.error}
                    anomaly_map = None
                else:
                    anomaly_map = item.scores.anomaly_maps[item.index]
                    row = decision_row(item.path, item.scores.image_scores[item.index], anomaly_map, thresholds)
                writer.add(row, anomaly_map)
                _print_row(row, writer.n_rows == 1)
            complete = True
        finally:
            writer.close(complete)
    if complete:
        print(f"saved results{' and figures' if run.figures else ''} in {readable_text(os.path.abspath(run.save_path))}")
    if writer.n_failed and len(paths) > 1:
        print(f"error: {writer.n_failed} of {len(paths)} images could not be scored (decision 'error' in "
              f"{writer.csv_path})", file=sys.stderr)
    return writer.n_failed
