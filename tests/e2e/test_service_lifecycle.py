"""serve.py's start and stop: options checked and the port bound before any model loads; a stop
after hot reloads exits 0 without a crash banner; a stalled upload and a crafted image each cost
one answer, never the connection or the process."""
from __future__ import annotations

import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from datasets.synthetic import write_crafted_tiff
from deploy.service.cli import add_service_args
from deploy.service.server import listening_socket
from helpers import ROOT
from utils.errors import UserError, script_parser

# What a native crash or an unclean exit prints (Paddle's C++ banner, Python's fatal error).
CRASH_MARKERS = ("Traceback", "C++ Traceback", "SIGSEGV", "SIGABRT", "Fatal Python error", "terminate called")


@pytest.mark.parametrize("option", ["--port=70000", "--port=0", "--max_upload_mb=0", "--max_upload_mb=-1",
                                    "--reload_interval=0", "--reload_interval=-1", "--max_wait_ms=-5",
                                    "--upload_timeout=0"])
def test_out_of_range_service_options_are_one_line(option, capsys):
    parser = script_parser("serve")
    add_service_args(parser)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([option])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: argument {option.split('=')[0]}"), err


def test_a_bad_host_or_a_port_in_use_is_refused_before_any_model_loads(tmp_path):
    with pytest.raises(UserError, match="not a valid IPv4 address"):
        listening_socket("999.1.1.1", 8000)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            listening_socket("127.0.0.1", port)
        # The models folder does not exist: had the models loaded first, that would be the error.
        start = time.monotonic()
        done = subprocess.run([sys.executable, "serve.py", "--models", str(tmp_path / "missing"), "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert time.monotonic() - start < 30


def _versions(stats: str) -> list[bytes]:
    """Two byte-different copies of one stats file (members in another order): two service versions."""
    with np.load(stats) as data:
        members = {name: data[name] for name in data.files}
    other = io.BytesIO()
    np.savez(other, **dict(reversed(list(members.items()))))
    with open(stats, "rb") as f:
        return [f.read(), other.getvalue()]


def _replace(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


class _Serve:
    def __init__(self, models, *options: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = open(os.path.join(models, f"serve-{self.port}.log"), "w+")
        self.process = subprocess.Popen([sys.executable, "serve.py", "--models", str(models), "--port", str(self.port),
                                         "--max_batch", "1", "--reload_interval", "0.1", *options],
                                        cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.wait_for("serving on")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            assert self.process.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.1)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


def test_stops_after_hot_reloads_exit_0_without_a_crash(served_models, tmp_path):
    """Each round swaps two versions in (the retired predictors stay alive until exit) and stops
    with SIGINT, then SIGTERM. Before this was fixed: exit 130 (SIGINT) and -15 (SIGTERM) here,
    SIGSEGV / SIGABRT with Paddle's banner on other exports."""
    models = shutil.copytree(served_models, tmp_path / "models", ignore=shutil.ignore_patterns(".*"))
    stats = str(models / "part" / "stats.npz")
    versions = _versions(stats)
    for stop in (signal.SIGINT, signal.SIGTERM):
        server = _Serve(models)
        for n, version in enumerate((versions[1], versions[0]), start=1):
            _replace(stats, version)
            server.wait_for("now serving version", count=n)
        server.process.send_signal(stop)
        assert server.process.wait(timeout=60) == 0, server.output()
        assert not any(marker in server.output() for marker in CRASH_MARKERS), server.output()


def test_a_crafted_image_and_a_stalled_upload_cost_one_answer(served_models, tmp_path):
    crafted = write_crafted_tiff(tmp_path / "crafted.tif").read_bytes()
    server = _Serve(served_models, "--upload_timeout", "0.5")
    try:
        conn = server.connection()
        conn.request("POST", "/api/v1/models/part/predict", body=crafted)
        answer = conn.getresponse()
        assert answer.status == 400 and b"cannot decode image" in answer.read()
        conn.request("GET", "/healthz")            # the same keep-alive connection still serves
        assert conn.getresponse().status == 200
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        stalled.sendall(b"POST /api/v1/models/part/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
                        + crafted[:16])
        start, received = time.monotonic(), b""
        while chunk := stalled.recv(4096):       # the server answers, then closes the connection
            received += chunk
        assert received.startswith(b"HTTP/1.1 408") and b"upload stalled" in received
        assert time.monotonic() - start < 15
    finally:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.output()
