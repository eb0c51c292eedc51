"""serve.py's options of the operator station: the inspection log, audit images, drift alarm, watched folders."""
from __future__ import annotations

import argparse
import os

from deploy.service.station_settings import DEFAULT_DATA_DIR, LOG_FILE, OFF, StationSettings
from utils.config import non_negative_float, non_negative_int, positive_int
from utils.errors import UserError
from utils.io import is_safe_name


def add_station_args(parser: argparse.ArgumentParser) -> None:
    d = StationSettings()   # the defaults live in the settings record
    group = parser.add_argument_group("operator station (inspection log, drift alarm, watched folders)")
    group.add_argument("--data_dir", default=None,
                       help="the service's data folder: the inspection log and audit images "
                            "(default: $PATCHCORE_DATA_DIR or ./serve_data)")
    group.add_argument("--log_db", default=None,
                       help=f"the inspection log: a SQLite file, a postgresql://user:password@host/db URL, or "
                            f"'none' for no log (default: DATA_DIR/{LOG_FILE})")
    group.add_argument("--log_keep_days", type=non_negative_float, default=d.log_keep_days,
                       help="delete log rows older than this (0: keep all)")
    group.add_argument("--log_max_rows", type=non_negative_int, default=d.log_max_rows,
                       help="keep at most this many log rows, the newest (0: no bound)")
    group.add_argument("--save_ng_images", action="store_true", help="keep every NG image under DATA_DIR/images")
    group.add_argument("--save_ok_fraction", type=non_negative_float, default=d.save_ok_fraction,
                       help="keep this fraction of the OK images too (0..1, sampled at random)")
    group.add_argument("--saved_images_mb", type=non_negative_float, default=d.saved_images_mb,
                       help="bound on the kept images; the oldest are deleted beyond it")
    group.add_argument("--drift_window", type=positive_int, default=d.drift_window,
                       help="parts in the drift alarm's windows (see docs/deployment.md, Drift alarm)")
    group.add_argument("--drift_limit", type=non_negative_float, default=d.drift_limit,
                       help="drift index that raises the score alarm (1: the typical part at the threshold)")
    group.add_argument("--ng_rate_limit", type=non_negative_float, default=d.ng_rate_limit,
                       help="NG share of the last --drift_window parts that raises the NG-rate alarm")
    group.add_argument("--watch", action="append", default=[], metavar="NAME=DIR",
                       help="score every image written into DIR with model NAME, then move it to DIR/OK, "
                            "DIR/NG or DIR/error (repeatable)")
    group.add_argument("--watch_keep", action="store_true", help="leave scored files in the watched folder")
    group.add_argument("--watch_settle", type=non_negative_float, default=d.watch_settle_s,
                       help="seconds a file's size must stay the same before it is scored")


def parse_watch(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    watched = []
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not is_safe_name(name) or not folder:
            raise UserError(f"--watch {pair}: expected NAME=DIR (NAME a served model)")
        if not os.path.isdir(folder):
            raise UserError(f"--watch {pair}: folder not found: {folder}")
        watched.append((name, os.path.abspath(folder)))
    return tuple(watched)


def station_settings_from_args(args: argparse.Namespace) -> StationSettings:
    if args.save_ok_fraction > 1:
        raise UserError(f"--save_ok_fraction {args.save_ok_fraction:g}: give a fraction from 0 to 1")
    if args.ng_rate_limit > 1:
        raise UserError(f"--ng_rate_limit {args.ng_rate_limit:g}: give a fraction from 0 to 1")
    log_off = (args.log_db or "").lower() in OFF
    if log_off and args.watch:
        raise UserError("--watch records every file in the inspection log: it cannot run with --log_db none")
    data_dir = args.data_dir or os.environ.get("PATCHCORE_DATA_DIR") or DEFAULT_DATA_DIR
    return StationSettings(data_dir=data_dir, log_db=None if log_off else args.log_db, log_enabled=not log_off,
                           log_keep_days=args.log_keep_days, log_max_rows=args.log_max_rows,
                           save_ng_images=args.save_ng_images, save_ok_fraction=args.save_ok_fraction,
                           saved_images_mb=args.saved_images_mb, drift_window=args.drift_window,
                           drift_limit=args.drift_limit, ng_rate_limit=args.ng_rate_limit,
                           watch=parse_watch(args.watch), watch_keep=args.watch_keep,
                           watch_settle_s=args.watch_settle)
