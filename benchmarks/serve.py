"""serve.py under load against infer.py on the same images, in one run.

Starts serve.py on a free 127.0.0.1 port with one export, sends the test images repeatedly with
1, 4 and 16 concurrent clients (--requests each), and prints per level: throughput (img/s), p50 /
p95 / p99 latency, errors, and the largest score difference from infer.py's for the same image. Also
infer.py's own throughput (--batch_size 8 and 1, from its --enable_benchmark timing, which leaves out
its start-up; run before and after the server, averaged) and the server's RSS after 100 and after
1,000 requests. Optionally saves a screenshot of the operator page scoring three images.

Example (bottle, MobileNetV2 weights converted with tools/convert_weights.py):
    python train.py --data_path MVTEC_ROOT --category bottle --arch mobilenet_v2 --pretrained mnv2.pdparams \\
        --k 10 --save_path output/models
    python export_model.py --model_path output/models/bottle.pdparams --save_dir output/models/bottle
    python benchmarks/serve.py --export output/models/bottle --images MVTEC_ROOT/bottle/test \\
        --screenshot docs/service-page.png
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from deploy.batch_scoring import collect_images  # noqa: E402
from utils.table import format_table, write_csv  # noqa: E402

COLUMNS = ("what", "clients", "requests", "img_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "max_score_diff")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024.0


def run_infer(export: str, images: str, batch_size: int, out: str) -> tuple[float, dict[str, float]]:
    """infer.py's per-image time (ms, its end-to-end benchmark timing) and its scores by image path."""
    files = {ext: os.path.join(export, f"model.{ext}") for ext in ("pdmodel", "pdiparams")}
    done = subprocess.run([sys.executable, "infer.py", "--model_file", files["pdmodel"], "--params_file",
                           files["pdiparams"], "--stats", os.path.join(export, "stats.npz"), "--input_file", images,
                           "--batch_size", str(batch_size), "--save_path", out, "--no_pictures",
                           "--enable_benchmark", "True"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"infer.py failed: {done.stderr.strip()[-300:]}")
    with open(os.path.join(out, "benchmark.json")) as f:
        per_image_ms = json.load(f)["total_time(ms/img)"]
    with open(os.path.join(out, "results.json")) as f:
        scores = {row["image"]: row["image_score"] for row in json.load(f)}
    return per_image_ms, scores


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def load(url: str, name: str, paths: list[str], clients: int, requests: int, want: dict[str, float]) -> dict[str, float]:
    """`requests` predict calls over `clients` threads, each with its own connection; bounded in count."""
    payloads = [(p, Path(p).read_bytes()) for p in paths]
    latencies: list[float] = []
    errors, max_diff, counter, lock = [0], [0.0], iter(range(requests)), threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                path, data = payloads[i % len(payloads)]
                start = time.perf_counter()
                try:
                    answer = http.post(f"{url}/api/v1/models/{name}/predict", content=data)
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    if not ok:
                        errors[0] += 1
                        continue
                    latencies.append(elapsed)
                    max_diff[0] = max(max_diff[0], abs(answer.json()["image_score"] - want[path]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"what": "serve.py", "clients": clients, "requests": requests, "img_per_s": len(latencies) / wall,
            "p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
            "p99_ms": 1000 * percentile(latencies, 99), "errors": errors[0], "max_score_diff": max_diff[0]}


def screenshot(url: str, paths: list[str], target: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(url + "/")
        # Predicates as functions: a string one is eval()ed in the page, which the service's CSP forbids.
        page.wait_for_function("() => document.querySelector('#model-info').dataset.version")
        page.set_input_files("#files", paths)
        page.wait_for_function(f"() => document.querySelectorAll('.card:not(.pending)').length === {len(paths)}",
                               timeout=120000)
        page.screenshot(path=target, full_page=True)
        browser.close()
    print(f"saved {target}")


def start_server(export: str, name: str, args: argparse.Namespace, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "serve.py", "--model", f"{name}={export}", "--port", str(port),
                               "--max_batch", str(args.max_batch), "--max_wait_ms", str(args.max_wait_ms), *extra],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("serve.py did not start")
        time.sleep(0.3)


def compare_log(args: argparse.Namespace, paths: list[str], name: str, work: str) -> None:
    """The inspection log on against off: two servers, load levels alternated between them in rounds."""
    servers = {"log off": start_server(args.export, name, args, "--log_db", "none"),
               "log on": start_server(args.export, name, args, "--data_dir", os.path.join(work, "data"))}
    sent = dict.fromkeys(servers, 0)
    rows, memory = [], {}
    try:
        first = servers["log off"][1]
        want = {p: httpx.post(f"{first}/api/v1/models/{name}/predict", content=Path(p).read_bytes(),
                              timeout=60).json()["image_score"] for p in paths}
        sent["log off"] += len(paths)
        for mode, (server, url) in servers.items():
            load(url, name, paths, 16, 200, want)   # warm-up
            sent[mode] += 200
            memory[mode] = [(sent[mode], rss_mb(server.pid))]
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(servers)[::-1]
            for mode in order:
                server, url = servers[mode]
                for clients, count in ((16, args.requests), (1, max(args.requests // 4, 50))):
                    row = load(url, name, paths, clients, count, want)
                    rows.append({**row, "what": mode, "round": round_})
                    sent[mode] += count
                memory[mode].append((sent[mode], rss_mb(server.pid)))
        logged = httpx.get(f"{servers['log on'][1]}/api/v1/log", params={"limit": 1}, timeout=60).json()["total"]
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(30)
    columns = ("what", "round", "clients", "requests", "img_per_s", "p50_ms", "p95_ms", "p99_ms", "errors")
    print(format_table(rows, columns))
    write_csv(os.path.join(args.save_path, "serve_log_benchmark.csv"), rows, columns)

    def total(mode: str, clients: int, key: str) -> float:
        chosen = [r for r in rows if r["what"] == mode and r["clients"] == clients]
        return statistics.median(r[key] for r in chosen)

    throughput = total("log on", 16, "img_per_s") / total("log off", 16, "img_per_s")
    p50 = total("log on", 1, "p50_ms") / total("log off", 1, "p50_ms")
    rss = memory["log on"]
    print(f"16 clients, median of {args.rounds} rounds: log on {total('log on', 16, 'img_per_s'):.1f} img/s, "
          f"log off {total('log off', 16, 'img_per_s'):.1f} img/s = {throughput:.3f}x")
    print(f"1 client p50, median of {args.rounds} rounds: log on {total('log on', 1, 'p50_ms'):.2f} ms, "
          f"log off {total('log off', 1, 'p50_ms'):.2f} ms = {p50:.3f}x")
    print(f"log rows {logged}, requests to the log-on server {sent['log on']}")
    print("RSS of the log-on server: " + ", ".join(f"after {n} requests {mb:.1f} MB" for n, mb in rss))
    checks = {"16 clients log on >= 0.95x log off": throughput >= 0.95, "1 client p50 log on <= 1.05x log off": p50 <= 1.05,
              "log rows = requests": logged == sent["log on"], "0 errors": all(r["errors"] == 0 for r in rows),
              f"RSS flat over {rss[-1][0] - rss[1][0]} requests (<= +20 MB after round 1)": rss[-1][1] <= rss[1][1] + 20}
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    print(f"saved {os.path.join(args.save_path, 'serve_log_benchmark.csv')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, help="an export_model.py folder")
    parser.add_argument("--images", required=True, help="the images to send (e.g. MVTEC_ROOT/bottle/test)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=500, help="requests per client level")
    parser.add_argument("--max_batch", type=int, default=8)
    parser.add_argument("--max_wait_ms", type=float, default=5.0)
    parser.add_argument("--save_path", default="output/benchmark_serve")
    parser.add_argument("--screenshot", default=None, help="save a PNG of the operator page here")
    parser.add_argument("--screenshot_images", nargs="*", default=None,
                        help="images for the screenshot (default: the first good, and two defective ones)")
    parser.add_argument("--compare_log", action="store_true",
                        help="instead: the inspection log on against off (--rounds rounds of 16 clients x --requests "
                             "and 1 client x --requests/4 each, alternated), log rows and RSS")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of --compare_log")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)   # not a line per request
    paths = collect_images(args.images)
    name = os.path.basename(os.path.normpath(args.export))
    os.makedirs(args.save_path, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-serve-")
    if args.compare_log:
        compare_log(args, paths, name, work)
        return
    rows, infer_ms = [], {8: [], 1: []}
    want: dict[str, float] = {}

    def infer_rows(tag: str) -> None:
        for batch in (8, 1):
            ms, scores = run_infer(args.export, args.images, batch, os.path.join(work, f"infer{batch}{tag}"))
            infer_ms[batch].append(ms)
            want.update(scores)
            rows.append({"what": f"infer.py --batch_size {batch} ({tag})", "clients": "", "requests": len(paths),
                         "img_per_s": 1000.0 / ms, "p50_ms": ms, "errors": 0})

    infer_rows("before")
    server, url = start_server(args.export, name, args, "--data_dir", os.path.join(work, "data"))
    memory = {}
    try:
        load(url, name, paths, 16, 100, want)
        memory["after 100"] = rss_mb(server.pid)
        done = 100
        for clients in (int(c) for c in args.clients.split(",")):
            rows.append(load(url, name, paths, clients, args.requests, want))
            done += args.requests
            memory[f"after {done}"] = rss_mb(server.pid)
        if done < 1000:
            load(url, name, paths, 4, 1000 - done, want)
            memory["after 1000"] = rss_mb(server.pid)
        if args.screenshot:
            chosen = args.screenshot_images or [next(p for p in paths if "/good/" in p),
                                                 *[p for p in paths if "/good/" not in p][:2]]
            screenshot(url, chosen, args.screenshot)
    finally:
        server.terminate()
        server.wait(30)
    infer_rows("after")
    print(format_table(rows, COLUMNS))
    write_csv(os.path.join(args.save_path, "serve_benchmark.csv"), rows, COLUMNS)
    batch8 = statistics.mean(1000.0 / ms for ms in infer_ms[8])
    one_ms = statistics.mean(infer_ms[1])
    served = {r["clients"]: r for r in rows if r["what"] == "serve.py"}
    print(f"server RSS: {', '.join(f'{k} requests {v:.1f} MB' for k, v in memory.items())}")
    checks = {
        "16 clients >= 0.9x infer.py --batch_size 8": served[16]["img_per_s"] >= 0.9 * batch8 if 16 in served else None,
        "p50 at 1 client <= 1.2x infer.py per image": served[1]["p50_ms"] <= 1.2 * one_ms if 1 in served else None,
        "0 errors": all(r["errors"] == 0 for r in served.values()),
        "RSS at the end (>= 1000 requests) <= after 100 + 50 MB": list(memory.values())[-1] <= memory["after 100"] + 50,
        "scores equal infer.py's within 1e-5": all(r["max_score_diff"] <= 1e-5 for r in served.values()),
    }
    if 16 in served:
        print(f"16 clients: {served[16]['img_per_s']:.2f} img/s = {served[16]['img_per_s'] / batch8:.2f}x "
              f"infer.py --batch_size 8 ({batch8:.2f} img/s)")
    if 1 in served:
        print(f"1 client p50: {served[1]['p50_ms']:.1f} ms = {served[1]['p50_ms'] / one_ms:.2f}x "
              f"infer.py --batch_size 1 per image ({one_ms:.1f} ms)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL' if ok is not None else 'n/a '}  {name}")
    print(f"saved {os.path.join(args.save_path, 'serve_benchmark.csv')}")


if __name__ == "__main__":
    main()
