"""serve.py: the scoring API, errors, micro-batching, hot reload, feedback -> update -> rollback, kill -9.

Real uvicorn servers (serve.py as a user starts it) on 127.0.0.1 on a free port for what needs the
network; FastAPI's TestClient on the same app for the error table and the token. One small
random-init export (conftest.served_models), copied where a test changes it.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from datasets.synthetic import write_corrupt_image
from helpers import ROOT, infer_args, run_script

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """serve.py in a subprocess; stopped (or killed) by the test."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen([sys.executable, "serve.py", "--port", str(self.port), *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve.py exited: {self.process.stdout.read()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError("serve.py did not become ready in 180 s")

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out or ""


def copy_models(served_models: Path, into: Path) -> Path:
    shutil.copytree(served_models, into, ignore=shutil.ignore_patterns(".*"))
    return into


@pytest.fixture(scope="module")
def images(synthetic_root, tmp_path_factory):
    """A good and a defective test image, a truncated PNG and the scripts' results for the two."""
    test = synthetic_root / "part" / "test"
    good, bad = sorted((test / "good").iterdir())[0], sorted((test / "scratch").iterdir())[0]
    corrupt = write_corrupt_image(tmp_path_factory.mktemp("corrupt") / "corrupt.png", truncated=True)
    return {"good": good, "defect": bad, "corrupt": corrupt}


@pytest.fixture(scope="module")
def infer_results(served_models, images, tmp_path_factory):
    """infer.py's rows (results.json, full precision) for the good and the defective image, by path."""
    folder = tmp_path_factory.mktemp("infer_in")
    for key in ("good", "defect"):
        shutil.copy(images[key], folder / f"{key}.png")
    out = tmp_path_factory.mktemp("infer_out")
    done = run_script(*infer_args(served_models / "part", input_file=folder, save_path=out), "--no_pictures")
    assert done.returncode == 0, done.stderr
    return {Path(r["image"]).stem: r for r in json.loads((out / "results.json").read_text())}


@pytest.fixture(scope="module")
def server(served_models, tmp_path_factory):
    models = copy_models(served_models, tmp_path_factory.mktemp("srv") / "models")
    srv = Server("--models", str(models), "--feedback_dir", str(models.parent / "feedback"), "--reload_interval",
                 "0.2", "--max_batch", "4", "--max_wait_ms", "20")
    srv.models = models
    yield srv
    srv.stop()


def predict(url: str, data: bytes, **params) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/models/part/predict", content=data, params=params, timeout=60)


def test_inferencer_gives_infer_py_numbers_for_paths_bytes_and_arrays(served_models, images, infer_results):
    from deploy import Inferencer

    inferencer = Inferencer(served_models / "part", runtime="paddle")
    for key in ("good", "defect"):
        want = infer_results[key]
        path = images[key]
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for given in (str(path), path.read_bytes(), rgb):
            got = inferencer.predict(given)
            assert abs(got.image_score - want["image_score"]) <= 1e-5
            assert got.decision == want["decision"] and abs(got.defect_area - want["defect_area"]) < 1e-9
            assert got.normalized_score == pytest.approx(want["normalized_score"], abs=1e-6)
            assert got.mask.shape == got.anomaly_map.shape and got.mask.mean() == got.defect_area
    batch = inferencer.predict_batch([images["good"], images["defect"]])
    assert [p.decision for p in batch] == [infer_results[k]["decision"] for k in ("good", "defect")]
    from utils.errors import UserError
    with pytest.raises(UserError, match="cannot decode image 'image 0'"):
        inferencer.predict(images["corrupt"].read_bytes())


def test_every_endpoint_of_a_real_server(server, images, infer_results):
    url = server.url
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(url + "/readyz").json()["models"] == ["part"]
    listed = httpx.get(url + "/api/v1/models").json()["models"]
    assert [m["name"] for m in listed] == ["part"] and listed[0]["geometry"]["crop_size"] == [64]
    assert listed[0]["geometry"]["cropped"] is False and listed[0]["geometry"]["discarded_fraction"] == 0.0
    assert set(listed[0]["thresholds"]) == {"image", "pixel"} and listed[0]["updatable"]
    raw = predict(url, images["good"].read_bytes())
    assert raw.status_code == 200, raw.text
    answer = raw.json()
    assert abs(answer["image_score"] - infer_results["good"]["image_score"]) <= 1e-5
    assert answer["decision"] == infer_results["good"]["decision"]          # the same verdict as infer.py
    assert answer["version"] == listed[0]["version"] and answer["latency_ms"] > 0
    multipart = httpx.post(f"{url}/api/v1/models/part/predict", params={"map": "png"}, timeout=60,
                           files={"file": ("whatever.txt", images["defect"].read_bytes(), "text/plain")})
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert abs(body["image_score"] - infer_results["defect"]["image_score"]) <= 1e-5
    assert body["decision"] == infer_results["defect"]["decision"]
    png = Image.open(io.BytesIO(__import__("base64").b64decode(body["map_png"].split(",", 1)[1])))
    assert png.size == (64, 64)
    assert httpx.get(url + "/openapi.json").status_code == 200
    assert httpx.get(url + "/docs").status_code == 404       # no CDN-loaded Swagger UI
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]
    metrics = httpx.get(url + "/metrics").text
    assert 'patchcore_predict_requests_total{decision="' in metrics and "patchcore_queue_depth" in metrics
    assert "patchcore_predict_latency_seconds_bucket" in metrics and "patchcore_batch_size_count" in metrics


def test_a_corrupt_image_among_concurrent_uploads_fails_only_itself(server, images, infer_results):
    uploads = [images["good"].read_bytes()] * 5 + [images["corrupt"].read_bytes()] + [images["defect"].read_bytes()] * 5
    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(lambda data: predict(server.url, data), uploads))
    assert [a.status_code for a in answers] == [200] * 5 + [400] + [200] * 5
    assert "cannot decode image 'upload'" in answers[5].json()["error"]
    for answer, key in zip(answers[:5] + answers[6:], ["good"] * 5 + ["defect"] * 5):
        assert abs(answer.json()["image_score"] - infer_results[key]["image_score"]) <= 1e-5


def test_a_client_that_disconnects_mid_upload_leaves_the_server_serving(server, images):
    data = images["good"].read_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"POST /api/v1/models/part/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data) * 4}\r\n"
                  f"Content-Type: image/png\r\n\r\n".encode() + data[:100])
    assert predict(server.url, data).status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_hot_reload_under_load_fails_no_request(server, images, synthetic_root, tmp_path):
    # Another model of the same category, exported elsewhere, moved in file by file as a deploy script would.
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path",
                      str(tmp_path), "--arch", "resnet18", "--pretrained", "none", "--resize", "64", "--crop_size",
                      "64", "--k", "10", "--no_progress", "--seed", "7")
    assert done.returncode == 0, done.stderr
    done = run_script("export_model.py", "--model_path", str(tmp_path / "part.pdparams"), "--save_dir",
                      str(tmp_path / "new"))
    assert done.returncode == 0, done.stderr
    before = httpx.get(server.url + "/api/v1/models").json()["models"][0]["version"]
    data = images["good"].read_bytes()
    statuses, versions, stop = [], set(), threading.Event()

    def load() -> None:
        for _ in range(150):   # bounded, in count and (below) in time
            if stop.is_set():
                return
            answer = predict(server.url, data)
            statuses.append(answer.status_code)
            versions.add(answer.json().get("version"))

    clients = [threading.Thread(target=load) for _ in range(3)]
    for client in clients:
        client.start()
    time.sleep(1.0)
    target = server.models / "part"
    for name in ("model.pdiparams", "model.pdmodel", "stats.npz"):
        shutil.copy(tmp_path / "new" / name, target / f".{name}.tmp")
        os.replace(target / f".{name}.tmp", target / name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = httpx.get(server.url + "/api/v1/models").json()["models"][0]["version"]
        if now != before and len(versions) > 1:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for client in clients:
        client.join(60)
    assert now != before
    assert statuses and set(statuses) == {200}
    assert {before, now} <= versions


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def wait_for_job(url: str, limit_s: float = 300) -> dict:
    deadline = time.monotonic() + limit_s
    while (state := httpx.get(f"{url}/api/v1/models/part/update").json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    return state


def test_guarded_update_black_frame_defect_regression_force_repeat_and_rollback(served_models, synthetic_root,
                                                                              tmp_path):
    """The black-frame scenario of issue 28 through the API, then the guard on the defects, forcing, a repeated
    update (adds nothing) and a rollback (its images count as new again)."""
    models = copy_models(served_models, tmp_path / "models")
    srv = Server("--models", str(models), "--feedback_dir", str(tmp_path / "feedback"), "--token", "line-token-1")
    auth = {"Authorization": "Bearer line-token-1"}
    url, feedback = srv.url, f"{srv.url}/api/v1/models/part/feedback"

    def mark(label: str, data: bytes) -> dict:
        answer = httpx.post(feedback, params={"label": label}, content=data, headers=auth)
        assert answer.status_code == 200, answer.text
        return answer.json()

    try:
        before = httpx.get(url + "/api/v1/models").json()["models"][0]
        black = png_bytes(np.zeros((64, 64, 3), np.uint8))
        assert predict(url, black).json()["decision"] == "anomalous"
        black_sha = mark("good", black)["sha256"]
        refused = httpx.post(f"{url}/api/v1/models/part/update", headers=auth)
        assert refused.status_code == 409, refused.text
        assert [r["sha256"] for r in refused.json()["refused"]] == [black_sha]
        assert black_sha[:12] in refused.json()["error"] and "near-constant" in refused.json()["error"]
        assert predict(url, black).json()["decision"] == "anomalous"   # still NG: nothing was trained
        relabelled = mark("defect", black)            # a later label replaces the earlier one
        assert relabelled["replaced"] and relabelled["previous_label"] == "good"
        assert relabelled["feedback"] == {"good": 0, "defect": 1}
        # A defect the model flags, and near copies of it marked good (the update holds one of every ten out
        # for its thresholds): the update would teach the model to pass it.
        # A faint defect: the least anomalous flagged defect blended into a good part until the model just
        # flags it. Its near copies then pass the guard's score bound (2x the threshold) before training, so
        # the guard's check after training is what refuses them.
        def pixels(path):
            return np.asarray(Image.open(path).convert("RGB"), np.float32)

        threshold = before["thresholds"]["image"]
        defects = [p for p in sorted((synthetic_root / "part" / "test").glob("*/*.png")) if p.parent.name != "good"]
        scored = [(predict(url, p.read_bytes()).json()["image_score"], p) for p in defects]
        weakest = min((s, p) for s, p in scored if s > threshold)[1]
        good_part, defective = pixels(synthetic_root / "part" / "test" / "good" / "000.png"), pixels(weakest)
        faint = (png_bytes(np.uint8(np.rint((1 - a) * good_part + a * defective))) for a in np.linspace(0.025, 1, 40))
        stain = next(data for data in faint
                     if (answer := predict(url, data).json())["decision"] == "anomalous"
                     and answer["image_score"] < 2 * threshold)
        stain_sha = mark("defect", stain)["sha256"]
        copy_shas = []
        for i in range(4):
            copy = np.asarray(Image.open(io.BytesIO(stain)).convert("RGB")).copy()
            copy[0, i] ^= 1
            copy_shas.append(mark("good", png_bytes(copy))["sha256"])
        assert httpx.post(f"{url}/api/v1/models/part/update", headers=auth).status_code == 202
        job = wait_for_job(url)
        assert job["state"] == "refused", job
        assert [r["sha256"] for r in job["refused"]] == [stain_sha] and stain_sha[:12] in job["message"]
        assert httpx.get(url + "/api/v1/models").json()["models"][0]["version"] == before["version"]
        # Forcing needs the token; forced, the update runs and still names what the guard refused.
        assert httpx.post(f"{url}/api/v1/models/part/update", params={"force": "true"}).status_code == 401
        assert httpx.post(f"{url}/api/v1/models/part/update", params={"force": "true"}, headers=auth).status_code == 202
        job = wait_for_job(url)
        assert job["state"] == "done" and job["forced"] and job["added"] == 4, job
        assert [r["sha256"] for r in job["refused"]] == [stain_sha] and "forced" in job["message"]
        after = httpx.get(url + "/api/v1/models").json()["models"][0]
        assert after["version"] == job["after"]["version"] != before["version"] and after["has_previous"]
        assert predict(url, black).json()["decision"] == "anomalous"
        listed = {i["sha256"]: i for i in httpx.get(feedback).json()["items"]}
        assert all(listed[sha]["in_model"] for sha in copy_shas) and not listed[stain_sha]["in_model"]
        again = httpx.post(f"{url}/api/v1/models/part/update", headers=auth)   # nothing new: adds nothing
        assert again.status_code == 400 and "already in its version" in again.json()["error"], again.text
        assert "/" not in json.dumps(httpx.get(f"{url}/api/v1/models/part/update").json()).replace("/api/", "")
        assert not [p for p in models.iterdir() if p.name.startswith(".") and p.name != ".versions"]
        back = httpx.post(f"{url}/api/v1/models/part/rollback", headers=auth).json()
        assert back["after"]["version"] == before["version"]
        assert predict(url, stain).json()["version"] == before["version"]
        assert not any(i["in_model"] for i in httpx.get(feedback).json()["items"])
    finally:
        srv.stop()


def test_kill_9_during_an_update_keeps_the_previous_model_and_no_partial_files(served_models, images, tmp_path):
    models = copy_models(served_models, tmp_path / "models")
    listing = sorted((p.relative_to(models), p.stat().st_size) for p in models.rglob("*") if p.is_file())
    srv = Server("--models", str(models), "--feedback_dir", str(tmp_path / "feedback"))
    before = httpx.get(srv.url + "/api/v1/models").json()["models"][0]["version"]
    page = {"X-PatchCore-Request": "page", "Content-Type": "image/png"}
    httpx.post(f"{srv.url}/api/v1/models/part/feedback", params={"label": "good"}, content=images["good"].read_bytes(),
               headers=page)
    assert httpx.post(f"{srv.url}/api/v1/models/part/update", headers=page).status_code == 202
    deadline = time.monotonic() + 60
    while not [p for p in models.iterdir() if p.name.startswith(".update-")]:   # the update is under way
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    srv.stop(signal.SIGKILL)
    time.sleep(1.0)   # the update's commands die with the server (PR_SET_PDEATHSIG)
    again = Server("--models", str(models))
    try:
        assert httpx.get(again.url + "/api/v1/models").json()["models"][0]["version"] == before
        assert predict(again.url, images["good"].read_bytes()).json()["version"] == before
        assert sorted((p.relative_to(models), p.stat().st_size) for p in models.rglob("*") if p.is_file()) == listing
    finally:
        again.stop()


# --- in-process (TestClient): the error table, the token, the queue -------------------------------------------

@pytest.fixture(scope="module")
def make_client(served_models, tmp_path_factory):
    from fastapi.testclient import TestClient

    from deploy.service.app import create_app
    from deploy.service.served_models import ServedModels
    from deploy.service.settings import ServiceSettings

    registries = []

    def build(**settings):
        feedback = tmp_path_factory.mktemp("fb")
        registry = ServedModels({"part": str(served_models / "part")},
                            ServiceSettings(feedback_dir=str(feedback), reload_interval_s=60, **settings))
        registries.append(registry)
        return TestClient(create_app(registry.settings, registry), base_url="http://127.0.0.1:8000",
                          raise_server_exceptions=False), registry

    yield build
    for registry in registries:
        registry.close()


def test_errors_are_one_line_json_with_their_status(make_client, images):
    client, _ = make_client(max_upload_mb=0.01, token="secret-token")
    png = images["good"].read_bytes()
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(big, "PNG")
    # A PNG header claiming 20000 x 20000 pixels: above Pillow's decompression-bomb limit, as for infer.py.
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    cases = [
        (client.post("/api/v1/models/part/predict", content=images["corrupt"].read_bytes()), 400, "cannot decode"),
        (client.post("/api/v1/models/part/predict", content=bomb), 413, "too large to decode safely"),
        (client.post("/api/v1/models/part/feedback?label=good", content=png), 401, "token"),
        (client.post("/api/v1/models/nope/predict", content=png), 404, "no model named 'nope'"),
        (client.post("/api/v1/models/part/predict", content=big.getvalue()), 413, "--max_upload_mb"),
        (client.post("/api/v1/models/part/predict", content=b"GIF89a" + bytes(100)), 415, "unsupported image type"),
        (client.post("/api/v1/models/part/predict", content=b""), 400, "empty upload"),
        (client.get("/api/v1/nothing"), 404, "nothing at GET /api/v1/nothing"),
    ]
    for response, status, fragment in cases:
        assert response.status_code == status, response.text
        assert list(response.json()) == ["error"] and fragment in response.json()["error"]
        assert "Traceback" not in response.text and "\n" not in response.json()["error"]


def test_token_guards_mutating_calls_only(make_client, images):
    client, _ = make_client(token="secret-token")
    png = images["good"].read_bytes()
    assert client.post("/api/v1/models/part/predict", content=png).status_code == 200
    for path in ("/api/v1/models/part/feedback?label=good", "/api/v1/models/part/update",
                 "/api/v1/models/part/rollback"):
        assert client.post(path, content=png).status_code == 401
        assert client.post(path, content=png, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    ok = client.post("/api/v1/models/part/feedback?label=defect", content=png,
                     headers={"Authorization": "Bearer secret-token"})
    assert ok.status_code == 200 and ok.json()["label"] == "defect" and len(ok.json()["sha256"]) == 64
    assert client.get("/api/v1/models").json()["token_required"] is True


def test_serve_py_refuses_an_exposed_host_without_a_token(served_models):
    done = run_script("serve.py", "--models", str(served_models), "--host", "0.0.0.0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "--token" in done.stderr


def test_a_full_queue_answers_503_and_the_batcher_batches(make_client, images):
    client, registry = make_client(max_queue=2, max_batch=4)
    entry = registry.get("part")
    release = threading.Event()

    class Stalled:   # stands in for a model version whose network is busy
        def predict_preprocessed(self, images):
            release.wait(30)
            return [None] * len(images)

    stalled = Stalled()
    image = np.zeros((3, 64, 64), np.float32)
    futures = [entry.batcher.submit(stalled, image)]
    time.sleep(0.2)   # the worker took it and is stuck in the network
    futures += [entry.batcher.submit(stalled, image) for _ in range(2)]
    busy = client.post("/api/v1/models/part/predict", content=images["good"].read_bytes())
    assert busy.status_code == 503 and "busy" in busy.json()["error"]
    release.set()
    for future in futures:
        future.result(30)
    assert client.post("/api/v1/models/part/predict", content=images["good"].read_bytes()).status_code == 200
    # Batches of 1 (the stalled one), 2 (the two queued behind it, together) and 1 (the last request).
    metrics = client.get("/metrics").text
    assert 'patchcore_batch_size_bucket{le="1.0",model="part"} 2.0' in metrics
    assert 'patchcore_batch_size_bucket{le="2.0",model="part"} 3.0' in metrics


# --- the operator page in a real browser ----------------------------------------------------------------------

def need_chromium() -> None:
    """Skip without Debian's Chromium, except in CI (.ci/run installs it)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs it with apt-get)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")


def test_operator_page_in_chromium(served_models, images, infer_results, tmp_path):
    need_chromium()
    from playwright.sync_api import sync_playwright

    models = copy_models(served_models, tmp_path / "models")
    srv = Server("--models", str(models), "--feedback_dir", str(tmp_path / "feedback"), "--data_dir",
                 str(tmp_path / "data"))
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for key in ("good", "defect", "corrupt"):
        shutil.copy(images[key], uploads / f"{key}.png")
    want = {key: {"anomalous": "NG", "normal": "OK"}[infer_results[key]["decision"]] for key in ("good", "defect")}
    want["corrupt"] = "error"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(srv.url + "/")
            # Predicates as functions: a string one is eval()ed in the page, which the service's CSP forbids.
            page.wait_for_function("() => document.querySelector('#model-info').dataset.version")
            before = page.get_attribute("#model-info", "data-version")
            page.set_input_files("#files", [str(uploads / f"{k}.png") for k in ("good", "defect", "corrupt")])
            page.wait_for_function("() => document.querySelectorAll('#table tbody tr').length === 3", timeout=60000)
            for key, badge in want.items():
                card = page.locator(f'.card[data-name="{key}.png"]')
                assert card.locator(".badge").inner_text() == badge
            for key in ("good", "defect"):
                width = page.eval_on_selector(f'.card[data-name="{key}.png"] img', "img => img.naturalWidth")
                assert width > 0
            page.select_option("#filter", "error")
            page.wait_for_function("() => document.querySelectorAll('#table tbody tr').length === 1")
            page.select_option("#filter", "")
            page.on("dialog", lambda dialog: dialog.accept())   # "Mark as good" on an NG card asks first
            page.click('.card[data-name="good.png"] .mark-good')
            page.wait_for_selector('.card[data-name="good.png"] .marked')
            assert len(list((tmp_path / "feedback" / "part" / "good").iterdir())) == 1
            page.click("#update")
            # A second tab opened during the update follows it through its stages to the end.
            second = browser.new_page(viewport={"width": 1100, "height": 800})
            second.goto(srv.url + "/")
            page.wait_for_function(f"() => document.querySelector('#model-info').dataset.version !== '{before}'",
                                   timeout=300000)
            second.wait_for_function("() => document.querySelector('#update-status').dataset.state === 'done'",
                                     timeout=60000)
            status = page.inner_text("#update-status")
            assert f"before {before}" in status and "after" in status
            page.screenshot(path=str(tmp_path / "operator_page.png"), full_page=True)
            browser.close()
        assert (tmp_path / "operator_page.png").stat().st_size > 10000
    finally:
        srv.stop()


def test_model_arguments_name_export_folders(served_models, tmp_path):
    from deploy.service.served_models import parse_model_args
    from utils.errors import UserError

    part = str(served_models / "part")
    assert parse_model_args(str(served_models), []) == {"part": part}
    assert parse_model_args(None, [f"line1={part}"]) == {"line1": part}
    for models_dir, pairs, fragment in ((None, [], "nothing to serve"), (None, [part], "expected NAME=EXPORT_DIR"),
                                        (None, [f"x={tmp_path}"], "no stats.npz"),
                                        (str(tmp_path), [], "no export folders"),
                                        (str(tmp_path / "none"), [], "folder not found")):
        with pytest.raises(UserError, match=fragment):
            parse_model_args(models_dir, pairs)
