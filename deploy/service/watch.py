"""A watched folder (serve.py --watch NAME=DIR): score every image file dropped into DIR, once.

Every --watch_interval a thread lists DIR (not its subfolders; hidden names and .tmp/.part files are
skipped). A file is taken once its size and modification time have stayed the same for
--watch_settle seconds (a camera still writing it changes them; a file renamed in is whole at once).
Then, in this order:
  1. its key is looked up in the inspection log: DIR/name, modification time and SHA-256;
  2. if not there, it is scored and its row inserted at once (not through the queue), keyed, in one
     transaction: a row with the same key is never inserted twice;
  3. it is moved to DIR/OK, DIR/NG or DIR/error (a name taken there gets -1, -2, ...), or left in
     place with --watch_keep.
A server killed anywhere in between finds the file again on start: its key is in the log, so it is
moved without being recorded again; or it is not, and it is scored as if new. So every file is
recorded exactly once and none is lost. A log that cannot be written leaves the file in DIR for the
next pass. Memory: the sizes of the files present in DIR, nothing per file already moved.
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from typing import Any

from datasets.preprocess import IMAGE_EXTENSIONS
from deploy.service.batching import QueueFull
from deploy.service.log_store import LogStore, open_store
from deploy.service.served_models import ModelEntry
from utils.errors import UserError

FOLDERS = {"normal": "OK", "anomalous": "NG", "error": "error"}
SKIPPED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


def is_candidate(name: str) -> bool:
    lower = name.lower()
    return (not name.startswith(".") and not lower.endswith(SKIPPED_SUFFIXES)
            and os.path.splitext(lower)[1] in IMAGE_EXTENSIONS)


def free_name(folder: str, name: str) -> str:
    stem, extension = os.path.splitext(name)
    candidate, n = name, 0
    while os.path.exists(os.path.join(folder, candidate)):
        n += 1
        candidate = f"{stem}-{n}{extension}"
    return os.path.join(folder, candidate)


class FolderWatcher:
    def __init__(self, entry: ModelEntry, folder: str, station: Any):
        self.entry, self.folder, self.station = entry, folder, station
        self.settings = station.settings
        self.source = "folder:" + os.path.basename(os.path.normpath(folder))
        self.seen: dict[str, tuple[int, int, float]] = {}   # name -> (size, mtime_ns, since when unchanged)
        self.finished: dict[str, tuple[int, int]] = {}       # --watch_keep: files left in place, done
        self.store: LogStore | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{entry.name}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10.0)

    def _run(self) -> None:
        print(f"watching {self.folder} for model '{self.entry.name}'", flush=True)
        while not self._stop.wait(self.settings.watch_interval_s):
            try:
                for name in self._settled():
                    if self._stop.is_set():
                        break
                    self._take(name)
            except Exception as err:   # the watcher outlives any one file or a lost database
                print(f"warning: watched folder {self.folder}: {err}", file=sys.stderr, flush=True)
                if self.store is not None:
                    self.store.close()
                    self.store = None
        if self.store is not None:
            self.store.close()

    def _settled(self) -> list[str]:
        """Names whose size and time have not changed for --watch_settle seconds, oldest first."""
        now, present, ready = time.monotonic(), {}, []
        with os.scandir(self.folder) as listing:
            for item in listing:
                if item.is_file(follow_symlinks=False) and is_candidate(item.name):
                    st = item.stat(follow_symlinks=False)
                    present[item.name] = (st.st_size, st.st_mtime_ns)
        self.seen = {n: v for n, v in self.seen.items() if n in present}
        self.finished = {n: v for n, v in self.finished.items() if present.get(n) == v}
        for name, (size, mtime) in present.items():
            if name in self.finished:
                continue
            before = self.seen.get(name)
            if before is None or before[:2] != (size, mtime):
                self.seen[name] = (size, mtime, now)
            elif now - before[2] >= self.settings.watch_settle_s and size > 0:
                ready.append((mtime, name))
        return [name for _, name in sorted(ready)]

    def _take(self, name: str) -> None:
        path = os.path.join(self.folder, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return
        key = f"{self.folder}/{name}|{mtime}|{hashlib.sha256(data).hexdigest()}"
        if self.store is None:
            self.store = open_store(self.settings.log_target)
        decision = self.station.log.key_logged(self.store, key)
        if decision is None:
            row = self._score(data, name)
            if row is None:
                return   # the model is busy: the next pass takes it
            row.image_key = key
            self.store.insert([row])
            self.station.observe_drift(row)
            decision = row.decision
        self._finish(name, path, decision)

    def _score(self, data: bytes, name: str) -> Any:
        start = time.perf_counter()
        version = self.entry.current
        try:
            image = version.inferencer.preprocess(data, name)
            prediction = self.entry.batcher.submit(version.inferencer, image).result(timeout=300)
        except QueueFull:
            return None
        except UserError as err:
            return self.station.row(self.entry, self.source, None, data, 1000 * (time.perf_counter() - start),
                                    error=str(err))
        answer = {"version": version.version, **prediction.as_dict()}
        return self.station.row(self.entry, self.source, None, data, 1000 * (time.perf_counter() - start), answer)

    def _finish(self, name: str, path: str, decision: str) -> None:
        if self.settings.watch_keep:
            st = os.stat(path)
            self.finished[name] = (st.st_size, st.st_mtime_ns)
            return
        target_dir = os.path.join(self.folder, FOLDERS.get(decision, "error"))
        os.makedirs(target_dir, exist_ok=True)
        os.rename(path, free_name(target_dir, name))
        self.seen.pop(name, None)
