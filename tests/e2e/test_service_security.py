"""The service's guard against poisoned feedback and cross-site requests (issue 28, items 1-2).

In-process (TestClient) for the rules and the feedback store; one uvicorn server in a thread and a
second small HTTP server on another port for the cross-origin test in Chromium.
"""
from __future__ import annotations

import contextlib
import http.server
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.synthetic import write_corrupt_image

CHROMIUM = "/usr/bin/chromium"
TOKEN = "line-token-1"
PAGE = {"X-PatchCore-Request": "page"}


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def make_service(served_models, tmp_path_factory):
    """build(**settings) -> (TestClient on http://127.0.0.1:8000, app, models folder, feedback folder)."""
    from fastapi.testclient import TestClient

    from deploy.service.app import create_app
    from deploy.service.served_models import ServedModels
    from deploy.service.settings import ServiceSettings

    registries = []

    def build(**settings):
        folder = tmp_path_factory.mktemp("security")
        models = folder / "models"
        shutil.copytree(served_models, models, ignore=shutil.ignore_patterns(".*"))
        registry = ServedModels({"part": str(models / "part")}, ServiceSettings(
            feedback_dir=str(folder / "feedback"), reload_interval_s=60, max_batch=2, **settings))
        registries.append(registry)
        app = create_app(registry.settings, registry)
        client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
        return client, app, models, folder / "feedback"

    yield build
    for registry in registries:
        registry.close()


@pytest.fixture(scope="module")
def good_png(synthetic_root) -> bytes:
    return (synthetic_root / "part" / "train" / "good" / "000.png").read_bytes()


@contextlib.contextmanager
def serving(app):
    """The app under uvicorn in a thread on a free port of 127.0.0.1; yields its port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True


def need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs it with apt-get)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")


def stored_files(feedback: Path) -> list[str]:
    return sorted(p.name for p in feedback.rglob("*") if p.is_file()) if feedback.exists() else []


def test_host_names_headers_methods_and_plain_errors(make_service, good_png):
    client, app, _, _ = make_service(token=TOKEN, allowed_hosts=("line-pc.plant.example",))
    rebinding = client.get("/api/v1/models", headers={"Host": "attacker.example"})
    assert rebinding.status_code == 400 and "attacker.example" in rebinding.json()["error"]
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "line-pc.plant.example"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    answers = {"page": client.get("/"), "head page": client.head("/"), "head healthz": client.head("/healthz"),
               "static": client.get("/static/app.js"), "404": client.get("/api/v1/nothing"),
               "405": client.put("/healthz"), "401": client.post("/api/v1/models/part/rollback"),
               "refused host": rebinding}
    from deploy.service.security import CSP
    for name, answer in answers.items():
        assert answer.headers["content-security-policy"] == CSP, name
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["referrer-policy"] == "same-origin"
    assert answers["head page"].status_code == answers["head healthz"].status_code == 200
    assert answers["head page"].content == b""
    assert answers["405"].status_code == 405 and answers["405"].headers["allow"] == "GET, HEAD"
    assert answers["405"].json() == {"error": "PUT is not allowed on /healthz: use GET, HEAD"}
    both = client.delete("/api/v1/models/part/update")   # a GET and a POST route share this path
    assert both.status_code == 405 and both.headers["allow"] == "GET, POST"
    assert answers["401"].status_code == 401 and answers["401"].headers["www-authenticate"].startswith("Bearer")
    assert answers["404"].json()["error"].startswith("nothing at GET /api/v1/nothing")
    # What anyone may read carries no server path, even when a command of a failed update named one.
    from deploy.service.updates import UpdateJob
    app.state.service.updater.jobs["part"] = UpdateJob("part", state="failed", message=(
        "updating the memory bank failed: cannot read '/srv/line/models/.update-part.pid7.tmp/good/ab.png'"))
    for read in (client.get("/api/v1/models/part/update").text, client.get("/api/v1/models").text):
        assert "cannot read 'ab.png'" in read and "/srv/" not in read and ".update-part" not in read
    # An engineer's curl with the token: raw body, curl's default form content type, no Origin.
    curl = client.post("/api/v1/models/part/feedback?label=good", content=good_png,
                       headers={"Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/x-www-form-urlencoded"})
    assert curl.status_code == 200, curl.text


def test_without_a_token_only_same_origin_requests_change_a_model(make_service, good_png):
    client, app, _, feedback = make_service()
    path = "/api/v1/models/part/feedback?label=good"
    own, other = "http://127.0.0.1:8000", "http://127.0.0.1:9999"
    refused = {
        "no page header": client.post(path, content=good_png, headers={"Content-Type": "image/png"}),
        "foreign Origin": client.post(path, content=good_png, headers={**PAGE, "Origin": other}),
        "null Origin": client.post(path, content=good_png, headers={**PAGE, "Origin": "null"}),
        "foreign Referer": client.post(path, content=good_png, headers={**PAGE, "Referer": other + "/x.html"}),
        "text/plain": client.post(path, content=good_png, headers={**PAGE, "Content-Type": "text/plain"}),
        "form post": client.post(path, content=good_png,
                                 headers={**PAGE, "Content-Type": "application/x-www-form-urlencoded"}),
        "update": client.post("/api/v1/models/part/update", headers={"Origin": other}),
        "rollback": client.post("/api/v1/models/part/rollback", headers={**PAGE, "Origin": other}),
        "delete": client.delete("/api/v1/models/part/feedback/" + "0" * 64),
        "force without token": client.post("/api/v1/models/part/update?force=true", headers=PAGE),
        "predict from another site": client.post("/api/v1/models/part/predict", content=good_png,
                                                 headers={"Origin": other}),
    }
    for name, answer in refused.items():
        assert answer.status_code in (403, 415), (name, answer.status_code, answer.text)
        assert list(answer.json()) == ["error"] and answer.json()["error"].startswith(("refused", "force=true"))
    assert stored_files(feedback) == [] and not app.state.service.updater.jobs
    page_upload = client.post(path, files={"file": ("x.png", good_png, "image/png")},
                              headers={**PAGE, "Origin": own, "Referer": own + "/"})
    assert page_upload.status_code == 200, page_upload.text
    api_client = client.post(path, content=good_png, headers={**PAGE, "Content-Type": "image/png"})
    assert api_client.status_code == 200 and not api_client.json()["replaced"]
    assert len(stored_files(feedback)) == 1
    # Scoring stays open to API clients: a raw body without Origin, as curl --data-binary sends it.
    curl = client.post("/api/v1/models/part/predict", content=good_png,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert curl.status_code == 200 and curl.json()["decision"] in ("normal", "anomalous")


def test_feedback_is_decoded_labelled_once_listed_deleted_and_a_black_frame_refused(make_service, tmp_path,
                                                                                     good_png):
    client, app, _, feedback = make_service()
    path = "/api/v1/models/part/feedback"
    truncated = write_corrupt_image(tmp_path / "t.png", truncated=True).read_bytes()
    bad = {"truncated PNG": truncated, "BM and garbage": b"BM" + bytes(range(256)) * 4,
           "1x1 PNG": png_bytes(np.zeros((1, 1, 3), np.uint8)), "JPEG header only": b"\xff\xd8\xff" + bytes(50)}
    for name, data in bad.items():
        answer = client.post(path, params={"label": "good"}, content=data,
                             headers={**PAGE, "Content-Type": "image/png"})
        assert answer.status_code == 400 and answer.json()["error"].startswith("feedback not stored"), name
        assert "\n" not in answer.json()["error"]
    assert stored_files(feedback) == []

    def mark(label: str, data: bytes) -> dict:
        answer = client.post(path, params={"label": label}, content=data, headers={**PAGE, "Content-Type": "image/png"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    black = png_bytes(np.zeros((64, 64, 3), np.uint8))
    first, second = mark("good", black), mark("defect", black)
    assert first["sha256"] == second["sha256"] and not first["replaced"]
    assert second["replaced"] and second["previous_label"] == "good" and second["feedback"] == {"good": 0, "defect": 1}
    mark("good", black)
    listed = client.get(path).json()
    assert [(i["sha256"], i["label"]) for i in listed["items"]] == [(first["sha256"], "good")]
    assert listed["counts"] == {"good": 1, "defect": 0} and set(listed["items"][0]) >= {"stored_at", "size"}
    refused = client.post("/api/v1/models/part/update", headers=PAGE)
    assert refused.status_code == 409 and refused.json()["refused"][0]["sha256"] == first["sha256"]
    assert "near-constant" in refused.json()["error"] and not app.state.service.updater.jobs
    # A grey-but-noisy frame far above the threshold is refused by its score.
    noisy = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mark("good", noisy)
    reasons = [r["reason"] for r in client.post("/api/v1/models/part/update", headers=PAGE).json()["refused"]]
    assert len(reasons) == 2 and any("x the image threshold" in r for r in reasons)
    assert client.delete(f"{path}/{first['sha256']}", headers=PAGE).status_code == 200
    assert client.delete(f"{path}/{first['sha256']}", headers=PAGE).status_code == 404
    assert client.delete(f"{path}/not-a-hash", headers=PAGE).status_code == 400
    assert client.get(path).json()["counts"] == {"good": 1, "defect": 0}


def test_a_page_of_another_origin_stores_and_runs_nothing(make_service, good_png, tmp_path):
    need_chromium()
    from playwright.sync_api import sync_playwright

    from deploy.service.feedback import FeedbackImage, FeedbackStore

    _, app, models, feedback = make_service()
    FeedbackStore(str(feedback), "part").store("good", FeedbackImage.check(good_png))   # an update could run
    previous = models / ".versions" / "part" / "previous"
    shutil.copytree(models / "part", previous / "export")                          # a rollback could run
    before = (stored_files(feedback), (models / "part" / "stats.npz").stat().st_ino)
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    (attacker / "index.html").write_text('<!doctype html><script src="attack.js">'
                                         '</script>')
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(attacker))  # noqa: E731
    site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        with serving(app) as port, sync_playwright() as p:
            (attacker / "attack.js").write_text(ATTACK_JS.replace("SERVICE", f"http://127.0.0.1:{port}"))
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{site.server_port}/index.html")
            page.wait_for_function("() => window.attackDone === true", timeout=30000)
            tried = page.evaluate("() => window.attackLog")
            assert len(tried) == 10 and sum("type opaque" in t for t in tried) == 4, tried   # no-cors: sent
            assert (stored_files(feedback), (models / "part" / "stats.npz").stat().st_ino) == before, tried
            assert not app.state.service.updater.jobs
            # The same script from the service's own origin does store: the refusals above are the rules'.
            page.goto(f"http://127.0.0.1:{port}/")
            status = page.evaluate(SAME_ORIGIN_UPLOAD)
            browser.close()
        assert status == 200 and len(stored_files(feedback)) == 2
    finally:
        site.shutdown()


def test_the_black_frame_on_the_page_confirm_mark_good_update_refused_still_ng(make_service, tmp_path):
    need_chromium()
    from playwright.sync_api import sync_playwright

    from deploy.service.station_settings import StationSettings

    # The page's history is the inspection log's: this service keeps one, as serve.py does.
    _, app, _, feedback = make_service(station=StationSettings(data_dir=str(tmp_path / "data"), log_enabled=True))
    black = tmp_path / "black.png"
    black.write_bytes(png_bytes(np.zeros((64, 64, 3), np.uint8)))
    dialogs = []
    with serving(app) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("() => document.querySelector('#model-info').dataset.version")
        version = page.get_attribute("#model-info", "data-version")
        page.set_input_files("#files", [str(black)])
        card = page.locator('.card[data-name="black.png"]')
        page.wait_for_function("() => document.querySelectorAll('#table tbody tr').length === 1")
        assert card.locator(".badge").inner_text() == "NG"
        card.locator(".mark-good").click()
        card.locator(".marked").wait_for()
        assert len(dialogs) == 1 and "as good" in dialogs[0] and "accept parts that look like this one" in dialogs[0]
        page.locator("#feedback-list li").wait_for()
        sha = page.get_attribute("#feedback-list li", "data-sha256")
        assert stored_files(feedback) == [f"{sha}.png"]
        page.click("#update")
        page.wait_for_function("() => document.querySelector('#update-status').dataset.state === 'refused'")
        status = page.inner_text("#update-status")
        assert "update refused" in status and sha[:12] in status and "near-constant" in status
        page.set_input_files("#files", [str(black)])   # scored again: still NG, same version
        page.wait_for_function("() => document.querySelectorAll('#table tbody tr').length === 2")
        assert page.locator(".card .badge").first.inner_text() == "NG"
        assert page.get_attribute("#model-info", "data-version") == version
        page.click("#feedback-list .remove")
        page.wait_for_function("() => document.querySelectorAll('#feedback-list li').length === 0")
        browser.close()
    assert stored_files(feedback) == [] and not app.state.service.updater.jobs


SAME_ORIGIN_UPLOAD = """async () => {
  const c = document.createElement("canvas"); c.width = c.height = 64;
  const g = c.getContext("2d"); g.fillStyle = "#3a7"; g.fillRect(0, 0, 64, 64); g.fillStyle = "#fff"; g.fillRect(9, 9, 20, 20);
  const form = new FormData(); form.append("file", await new Promise((resolve) => c.toBlob(resolve)), "x.png");
  const answer = await fetch("/api/v1/models/part/feedback?label=defect",
                             { method: "POST", body: form, headers: { "X-PatchCore-Request": "page" } });
  return answer.status;
}"""

# What a hostile page does: no-cors fetches (a "simple" request the browser sends without asking), a CORS
# fetch with the page's header (needs a preflight, never granted), and plain form posts into an iframe.
ATTACK_JS = """
window.attackLog = [];
const log = (what, outcome) => window.attackLog.push(what + ": " + outcome);
async function attempt(what, url, init) {
  try { const r = await fetch(url, init); log(what, "status " + r.status + " type " + r.type); }
  catch (e) { log(what, "blocked " + e.message); }
}
function black() {
  const c = document.createElement("canvas"); c.width = c.height = 64;
  c.getContext("2d").fillRect(0, 0, 64, 64);
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}
function formPost(name, url, withFile, blob) {
  // Each form into its own iframe (a second navigation of one frame would cancel the first).
  const frame = document.createElement("iframe"); frame.name = name; document.body.appendChild(frame);
  const loaded = new Promise((resolve) => frame.addEventListener("load", resolve));
  const form = document.createElement("form");
  form.method = "POST"; form.action = url; form.target = name;
  if (withFile) {
    form.enctype = "multipart/form-data";
    const input = document.createElement("input"); input.type = "file"; input.name = "file";
    const files = new DataTransfer(); files.items.add(new File([blob], "black.png", { type: "image/png" }));
    input.files = files.files; form.appendChild(input);
  }
  document.body.appendChild(form); form.submit();
  return loaded.then(() => log("form " + name, "sent"));
}
(async () => {
  const S = "SERVICE/api/v1/models/part";
  const blob = await black();
  const multipart = () => { const f = new FormData(); f.append("file", blob, "black.png"); return f; };
  await attempt("feedback no-cors multipart", S + "/feedback?label=good", { method: "POST", mode: "no-cors", body: multipart() });
  await attempt("feedback no-cors text/plain", S + "/feedback?label=good", { method: "POST", mode: "no-cors", body: blob, headers: { "Content-Type": "text/plain" } });
  await attempt("feedback cors with header", S + "/feedback?label=good", { method: "POST", body: multipart(), headers: { "X-PatchCore-Request": "page" } });
  await attempt("update no-cors", S + "/update", { method: "POST", mode: "no-cors" });
  await attempt("update cors with header", S + "/update", { method: "POST", headers: { "X-PatchCore-Request": "page" } });
  await attempt("rollback no-cors", S + "/rollback", { method: "POST", mode: "no-cors" });
  await attempt("delete cors", S + "/feedback/" + "0".repeat(64), { method: "DELETE" });
  await Promise.all([formPost("feedback", S + "/feedback?label=good", true, blob), formPost("update", S + "/update", false),
                     formPost("rollback", S + "/rollback", false)]);
  window.attackDone = true;
})();
"""
