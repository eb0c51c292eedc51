"""serve.py's options and the settings built from them."""
from __future__ import annotations

import argparse
import os

from deploy.service.settings import ServiceSettings
from deploy.service.station_cli import add_station_args, station_settings_from_args
from models.runtimes import RUNTIME_CHOICES
from utils.config import number_type, non_negative_float, port_int, positive_int

# Below these the service cannot work: a 0 MB limit answers 413 to every upload, a 0 s interval
# polls the export folders without pause.
upload_mb = number_type(float, 0.001, "a size in MB >= 0.001")
interval_s = number_type(float, 0.05, "a number of seconds >= 0.05")


def add_service_args(parser: argparse.ArgumentParser) -> None:
    d = ServiceSettings()   # the defaults live in the settings record
    parser.add_argument("--models", default=None, help="serve every export folder directly under this folder")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=EXPORT_DIR",
                        help="serve one export folder under NAME (repeatable)")
    parser.add_argument("--host", default=d.host, help="other than loopback needs --token or --insecure")
    parser.add_argument("--port", type=port_int, default=d.port,
                        help="bound before any model loads: a port in use is a one-line error at once")
    parser.add_argument("--token", default=os.environ.get("PATCHCORE_TOKEN"),
                        help="required on feedback, update and rollback (default: $PATCHCORE_TOKEN)")
    parser.add_argument("--insecure", action="store_true", help="allow --host without a token")
    parser.add_argument("--feedback_dir", default=None, help="where 'Mark as good / defect' store images")
    parser.add_argument("--max_upload_mb", type=upload_mb, default=d.max_upload_mb)
    parser.add_argument("--max_batch", type=positive_int, default=d.max_batch, help="images per micro-batch")
    parser.add_argument("--max_wait_ms", type=non_negative_float, default=d.max_wait_ms,
                        help="how long a batch waits for more images")
    parser.add_argument("--max_queue", type=positive_int, default=d.max_queue, help="queued images per model before 503")
    parser.add_argument("--decode_threads", type=positive_int, default=d.decode_threads)
    parser.add_argument("--runtime", "--backend", dest="runtime", default=d.runtime, choices=RUNTIME_CHOICES,
                        help="inference runtime of the extractor (--backend is its old name)")
    parser.add_argument("--cpu_threads", type=positive_int, default=d.cpu_threads)
    parser.add_argument("--reload_interval", type=interval_s, default=d.reload_interval_s,
                        help="seconds between checks for a replaced export")
    parser.add_argument("--upload_timeout", type=interval_s, default=d.upload_timeout_s,
                        help="seconds an upload may send nothing before it is answered 408 and closed")
    parser.add_argument("--allowed_hosts", default="", metavar="NAME[,NAME]",
                        help="host names the service answers to besides 127.0.0.1, localhost and --host "
                             "(e.g. the line PC's DNS name); other Host headers are refused")
    add_station_args(parser)


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    return ServiceSettings(host=args.host, port=args.port, token=args.token or None, insecure=args.insecure,
                           max_upload_mb=args.max_upload_mb, max_batch=args.max_batch,
                           max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                           decode_threads=args.decode_threads, feedback_dir=args.feedback_dir,
                           runtime=args.runtime, cpu_threads=args.cpu_threads,
                           reload_interval_s=args.reload_interval, upload_timeout_s=args.upload_timeout,
                           allowed_hosts=tuple(n.strip() for n in args.allowed_hosts.split(",") if n.strip()),
                           station=station_settings_from_args(args))
