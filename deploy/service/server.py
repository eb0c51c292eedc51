"""Build the models and the app from the settings and run uvicorn (what serve.py calls).

Start: the address is bound first (a bad --host or a port in use is a one-line error at once, not
after the models load), then the models load, then uvicorn serves on the bound socket.

Stop: SIGINT and SIGTERM are a normal stop (exit 0). uvicorn finishes the requests in flight,
restores the handlers it found and sends the signal again; the handler it finds here then leaves
with os._exit(0). Interpreter teardown is skipped on purpose: it destroyed Paddle predictors
retired by hot reloads or rollbacks in whatever order the garbage collector chose, and crashed
(SIGSEGV / SIGABRT with Paddle's C++ banner). Nothing is lost: every file the service writes is
complete when written (atomic renames), the inspection results went out in the answers, and the
inspection log's queued rows are written by the app's shutdown handler, which uvicorn runs first.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
from types import FrameType

from deploy.service.settings import ServiceSettings
from utils.errors import UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening; UserError in one line when that is impossible."""
    if all(c.isdigit() or c == "." for c in host):
        try:
            ipaddress.IPv4Address(host)    # 999.1.1.1 would otherwise go to the resolver as a name
        except ValueError:
            raise UserError(f"--host {host}: not a valid IPv4 address") from None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"--host {host}: not an address of this machine ({err})") from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn binds its own
        listener.bind(address)
        listener.listen(2048)
    except OSError as err:
        listener.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return listener


def _stop_quietly(signum: int, frame: FrameType | None) -> None:
    """A stop request: flush what was printed and leave at once, without tearing anything down."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def serve(settings: ServiceSettings, models_dir: str | None, model_pairs: list[str]) -> None:
    """Bind, load every model (a bad export is a one-line error before anything is served), serve."""
    settings.check()
    listener = listening_socket(settings.host, settings.port)
    # Imported only now: Paddle's import alone takes seconds, and a port in use should not wait for it.
    import uvicorn

    from deploy.service.app import create_app
    from deploy.service.served_models import ServedModels, parse_model_args

    for stop in STOP_SIGNALS:          # from here on, while the models load too, a stop is exit 0
        signal.signal(stop, _stop_quietly)
    if settings.feedback_dir:
        os.makedirs(settings.feedback_dir, exist_ok=True)
    registry = ServedModels(parse_model_args(models_dir, model_pairs), settings)
    app = create_app(settings, registry)
    for name, entry in registry.entries.items():
        print(f"model '{name}': version {entry.current.version} from {entry.export_dir}", flush=True)
    print(f"serving on http://{settings.host}:{settings.port}/ (the operator page; API under /api/v1)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])
    registry.close()          # uvicorn stopped without a signal (it re-sends those): still a clean stop
    _stop_quietly(signal.SIGTERM, None)
