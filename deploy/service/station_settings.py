"""The operator station's settings (inspection log, audit images, drift alarm, watched folders), built once."""
from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATA_DIR = "serve_data"
LOG_FILE = "inspections.sqlite3"
OFF = ("none", "off")


@dataclass(frozen=True)
class StationSettings:
    data_dir: str = DEFAULT_DATA_DIR
    log_db: str | None = None          # a SQLite path or a postgresql:// URL; None: <data_dir>/inspections.sqlite3
    log_enabled: bool = False          # serve.py turns it on (unless --log_db none)
    log_keep_days: float = 365.0       # 0: keep every row
    log_max_rows: int = 5_000_000      # 0: no bound
    log_queue: int = 4096              # rows waiting for the writer before new ones are dropped
    save_ng_images: bool = False
    save_ok_fraction: float = 0.0
    saved_images_mb: float = 1024.0
    drift_window: int = 50
    drift_limit: float = 0.5
    ng_rate_limit: float = 0.2
    watch: tuple[tuple[str, str], ...] = ()   # (model name, folder)
    watch_keep: bool = False           # leave scored files where they are (default: move to OK/NG/error)
    watch_settle_s: float = 1.0
    watch_interval_s: float = 0.5

    @property
    def log_target(self) -> str:
        return self.log_db or os.path.join(self.data_dir, LOG_FILE)

    @property
    def images_dir(self) -> str:
        return os.path.join(self.data_dir, "images")

    @property
    def saved_images_bytes(self) -> int:
        return int(self.saved_images_mb * 2**20)
