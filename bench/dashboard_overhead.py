#!/usr/bin/env python3
"""What the page costs training: tokens per wall-clock second of the fast preset, headless (the
CLI's training loop) against the dashboard open in headless Chromium, streaming every view.

    python bench/dashboard_overhead.py --seconds 40 --threads 1 2

For each torch thread count: one headless run, then one page run (a fresh `streamlit run` server
with DEEPRNN_TORCH_THREADS set, the page open and scrolled through all views). Needs Debian's
chromium and playwright.
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]


def headless_tokens_per_s(seconds: float, threads: int) -> float:
    """The CLI's loop (Trainer.steps, held-out evaluations included) timed by the wall clock."""
    code = f"""
import time, torch
torch.set_num_threads({threads})
from deeprnn.config import preset
from deeprnn.train import Trainer
trainer = Trainer(preset("fast", epochs=1000))
steps = trainer.steps()
for _ in range(20):
    next(steps)
start, tokens = time.perf_counter(), trainer.tokens
while time.perf_counter() - start < {seconds}:
    next(steps)
print((trainer.tokens - tokens) / (time.perf_counter() - start))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def page_tokens_per_s(seconds: float, threads: int) -> float:
    from playwright.sync_api import sync_playwright
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DEEPRNN_TORCH_THREADS": str(threads)}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 3000})  # every view on screen
            page.goto(url)
            epochs = page.get_by_label("Epoch budget")
            epochs.fill("1000")
            epochs.press("Enter")
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Start").click()
            first = wait_for_tokens(page, minimum=1)
            time.sleep(2)  # past the start-up
            start, tokens_start = time.perf_counter(), read_tokens(page)
            time.sleep(seconds)
            tokens_end, end = read_tokens(page), time.perf_counter()
            respond = layers_to_first_point(page)
            browser.close()
        assert first
        return (tokens_end - tokens_start) / (end - start), respond
    finally:
        server.terminate()
        server.wait(10)


def layers_to_first_point(page) -> float:
    """Seconds from moving Layers (2 to 3) to the new run's first curve point on screen."""
    slider = page.get_by_role("slider", name="Layers")
    slider.focus()
    started = time.perf_counter()
    slider.press("ArrowRight")
    page.get_by_text("LSTM x3").first.wait_for(timeout=30_000)
    wait_for_tokens(page, minimum=1)
    page.locator(".st-key-curves path.js-line").first.wait_for(timeout=30_000)
    return time.perf_counter() - started


def read_tokens(page) -> int:
    match = re.search(r"step [\d,]+ · ([\d,]+) tokens", page.inner_text("body"))
    return int(match.group(1).replace(",", "")) if match else 0


def wait_for_tokens(page, minimum: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (tokens := read_tokens(page)) >= minimum:
            return tokens
        time.sleep(0.2)
    raise RuntimeError("the page never showed training progress")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"fast preset, {args.seconds:g} s windows, {os.cpu_count()} cores")
    print("| torch threads | headless tokens/s | page open tokens/s | page / headless | Layers to first point |")
    print("| --- | --- | --- | --- | --- |")
    for threads in args.threads:
        headless = headless_tokens_per_s(args.seconds, threads)
        page, respond = page_tokens_per_s(args.seconds, threads)
        print(f"| {threads} | {headless:,.0f} | {page:,.0f} | {page / headless:.0%} | {respond:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
