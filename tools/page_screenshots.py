"""Screenshots of the operator page after a good, a defective and a corrupt upload, at 1366x768 and 390x844.

Starts serve.py on a free 127.0.0.1 port with a fresh data folder, uploads the images one by one
through the page (Debian's Chromium through Playwright) and saves <out>/station-<width>-<n>-<what>.png.
Use demo data only (tools/make_demo_data.py): MVTec images never go into the repo.

    python tools/make_demo_data.py --out data/demo
    python train.py --data_path data/demo --category synthetic_bottle --arch mobilenet_v2 \\
        --pretrained mnv2.pdparams --k 10 --save_path demo_models
    python export_model.py --model_path demo_models/synthetic_bottle.pdparams --save_dir demo_models/bottle
    python tools/page_screenshots.py --export demo_models/bottle --good data/demo/synthetic_bottle/test/good/004.png \\
        --defect data/demo/synthetic_bottle/test/scratch/000.png --out docs
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ((1366, 768), (390, 844))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(export: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "serve.py", "--model", f"bottle={export}", "--port", str(port),
                                "--data_dir", data_dir, "--feedback_dir", os.path.join(data_dir, "feedback")],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("error: serve.py did not become ready in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, help="an export_model.py folder of a demo-data model")
    parser.add_argument("--good", required=True, help="a good demo image")
    parser.add_argument("--defect", required=True, help="a defective demo image")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = tempfile.mkdtemp(prefix="page-shots-")
    uploads = {"good": os.path.join(work, "part-1041.png"), "defect": os.path.join(work, "part-1042.png"),
               "corrupt": os.path.join(work, "part-1043.png")}
    shutil.copy(args.good, uploads["good"])
    shutil.copy(args.defect, uploads["defect"])
    with open(args.good, "rb") as f, open(uploads["corrupt"], "wb") as out:
        out.write(f.read()[:400])   # a file cut off in transfer
    process, url = start_server(args.export, os.path.join(work, "data"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            for width, height in SIZES:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(url + "/")
                page.wait_for_function("() => document.querySelector('#model-info').dataset.version")
                for n, (what, path) in enumerate(uploads.items(), 1):
                    page.set_input_files("#files", path)
                    page.wait_for_function("() => !document.querySelector('.card.pending') && "
                                           "document.querySelectorAll('.card').length > 0", timeout=60000)
                    page.wait_for_timeout(800)   # the history and counters refresh after the verdict
                    target = os.path.join(args.out, f"station-{width}-{n}-{what}.png")
                    page.screenshot(path=target)
                    print(f"saved {target}")
                page.close()
            browser.close()
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
