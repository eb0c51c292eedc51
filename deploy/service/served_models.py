"""The served models: which export folders, their current version, and hot reload.

A model is an export folder (what export_model.py writes). Its training model file, needed only by
"Update model", is `<parent of the export>/<category>.pdparams`: what train.py --save_path writes
when the export folder sits in the same folder (train.py --save_path DIR, export_model.py
--save_dir DIR/<name>).

Hot reload: a watcher compares each export's files (inode, size, mtime) every few seconds; when
they changed, the new version is loaded and warmed beside the old one, then swapped in with one
assignment. Requests already preprocessed for the old version finish with it. A half-replaced export
(the stats not tied to the program and parameters yet) is left alone until it is whole.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploy.inferencer import Inferencer
from deploy.service.batching import MicroBatcher
from deploy.service.settings import ServiceSettings
from models.runtimes import STATS_FILE, ExportFiles, RuntimeOptions
from utils.config import DataConfig
from utils.errors import UserError
from utils.io import file_sha256, is_safe_name, remove_stale_temporaries

VERSIONS_DIR = ".versions"


@dataclass(frozen=True)
class LoadedVersion:
    inferencer: Inferencer
    version: str      # the first 12 hex digits of stats.npz's SHA-256: a new export is a new version
    created: str      # stats.npz's modification time (UTC, ISO 8601)
    signature: tuple

    def describe(self) -> dict[str, Any]:
        model, thresholds = self.inferencer.model, self.inferencer.thresholds
        return {"version": self.version, "created": self.created, "category": model.category,
                "method": model.title, "arch": model.config.model.arch,
                "thresholds": {"image": thresholds.image, "pixel": thresholds.pixel},
                "geometry": geometry(model.config.data)}


def geometry(data: DataConfig) -> dict[str, Any]:
    """The model's input geometry as GET /api/v1/models shows it: resize and crop (height, width;
    one number for a square), whether a centre crop discards image area and how much."""
    (resize_h, resize_w), (crop_h, crop_w) = data.resize_hw, data.crop_hw
    return {"resize": list(np.atleast_1d(data.resize).tolist()), "crop_size": list(np.atleast_1d(data.crop_size).tolist()),
            "cropped": (crop_h, crop_w) != (resize_h, resize_w),
            "discarded_fraction": round(1.0 - (crop_h * crop_w) / (resize_h * resize_w), 6)}


def files_signature(export_dir: str) -> tuple:
    files = ExportFiles.in_folder(export_dir)
    parts = []
    for path in (files.program, files.params, files.stats):
        try:
            st = os.stat(path)
            parts.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            parts.append((path, None))
    return tuple(parts)


def load_version(export_dir: str, settings: ServiceSettings) -> LoadedVersion:
    """Load the export in `export_dir` and warm it up at every batch size up to --max_batch.

    The predictor plans its memory per input shape on first use (bottle, MobileNetV2: RSS 0.43 GB
    after batches of one, 1.0 GB once batches of 1..8 have run, then flat): done here, before the
    version serves, so neither the first requests nor the memory curve of a running service pay it.
    """
    signature = files_signature(export_dir)
    # shared_cores: the service decodes uploads and takes requests while it scores (one scoring thread).
    inferencer = Inferencer(export_dir, options=RuntimeOptions(runtime=settings.runtime,
                                                               cpu_threads=settings.cpu_threads), shared_cores=True)
    crop = np.atleast_1d(inferencer.data.crop_size)
    for size in range(1, settings.max_batch + 1):
        inferencer.predict_preprocessed(np.zeros((size, 3, int(crop[0]), int(crop[-1])), np.float32))
    stats = inferencer.files.stats
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(stats)))
    return LoadedVersion(inferencer, file_sha256(stats)[:12], created, signature)


class ModelEntry:
    """One served model: its folder, its current version, its batcher."""

    def __init__(self, name: str, export_dir: str, settings: ServiceSettings):
        self.name, self.export_dir, self.settings = name, os.path.abspath(export_dir), settings
        self.current = load_version(self.export_dir, settings)
        self.parent = os.path.dirname(self.export_dir)
        self.versions_dir = os.path.join(self.parent, VERSIONS_DIR, name)
        self.batcher = MicroBatcher(settings.max_batch, settings.max_wait_ms / 1000.0, settings.max_queue)
        self.lock = threading.Lock()
        self.unloadable: tuple | None = None   # the files' signature when they last failed to load

    @property
    def training_file(self) -> str:
        return os.path.join(self.parent, f"{self.current.inferencer.model.category}.pdparams")

    @property
    def previous_dir(self) -> str:
        return os.path.join(self.versions_dir, "previous")

    def reload_if_changed(self, force: bool = False) -> bool:
        """Load the export again if its files changed; True when a new version was swapped in."""
        with self.lock:
            try:
                if not force and files_signature(self.export_dir) == self.current.signature:
                    return False
                loaded = load_version(self.export_dir, self.settings)
            except UserError as err:
                if force:
                    raise
                signature = files_signature(self.export_dir)
                if signature != self.unloadable:   # one line per state of the files, not per check
                    print(f"model '{self.name}': not reloaded yet ({err})", file=sys.stderr, flush=True)
                    self.unloadable = signature
                return False
            changed = loaded.version != self.current.version
            self.current = loaded   # one assignment: new requests use it, queued ones keep theirs
        if changed:
            print(f"model '{self.name}': now serving version {loaded.version}", flush=True)
        return changed

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.current.describe(),
                "updatable": os.path.isfile(self.training_file),
                "has_previous": os.path.isfile(os.path.join(self.previous_dir, "export", STATS_FILE))}


def find_exports(models_dir: str) -> dict[str, str]:
    """{name: folder} of every export folder (one holding stats.npz) directly under `models_dir`."""
    if not os.path.isdir(models_dir):
        raise UserError(f"--models folder not found: {models_dir}")
    found = {name: os.path.join(models_dir, name) for name in sorted(os.listdir(models_dir))
             if is_safe_name(name) and os.path.isfile(os.path.join(models_dir, name, STATS_FILE))}
    if not found:
        raise UserError(f"no export folders (a folder with {STATS_FILE}, as export_model.py writes) in {models_dir}")
    return found


class ServedModels:
    def __init__(self, exports: dict[str, str], settings: ServiceSettings):
        self.settings = settings
        for folder in {os.path.dirname(os.path.abspath(f)) for f in exports.values()}:
            remove_stale_temporaries(folder)   # an update killed mid-way leaves only these
        self.entries: dict[str, ModelEntry] = {}
        for name, folder in exports.items():
            if not is_safe_name(name):
                raise UserError(f"model name '{name}' is not a plain name (letters, digits, '-', '_', '.')")
            self.entries[name] = ModelEntry(name, folder, settings)
        self._stop = threading.Event()
        self.watcher = threading.Thread(target=self._watch, name="hot-reload", daemon=True)
        self.watcher.start()

    def get(self, name: str) -> ModelEntry | None:
        return self.entries.get(name)

    def ready(self) -> bool:
        return bool(self.entries) and all(e.batcher.thread.is_alive() for e in self.entries.values())

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_s):
            for entry in list(self.entries.values()):
                try:
                    entry.reload_if_changed()
                except Exception as err:   # the watcher must outlive any one bad export
                    print(f"model '{entry.name}': reload failed: {err}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        for entry in self.entries.values():
            entry.batcher.close()


def parse_model_args(models_dir: str | None, pairs: list[str]) -> dict[str, str]:
    """--models DIR and --model NAME=EXPORT_DIR (repeated) -> {name: export folder}."""
    exports = find_exports(models_dir) if models_dir else {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--model {pair}: expected NAME=EXPORT_DIR")
        if not os.path.isfile(os.path.join(folder, STATS_FILE)):
            raise UserError(f"--model {pair}: no {STATS_FILE} in {folder} (an export_model.py folder)")
        exports[name] = folder
    if not exports:
        raise UserError("nothing to serve: give --models DIR or --model NAME=EXPORT_DIR")
    return exports
