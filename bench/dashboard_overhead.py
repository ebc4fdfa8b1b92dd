#!/usr/bin/env python3
"""What the page costs training: tokens per wall-clock second of the fast preset, headless (the
CLI's training loop) against the dashboard open in headless Chromium, streaming every view.

    python bench/dashboard_overhead.py --seconds 40 --threads 1 2

For each torch thread count: a headless run, a page run (a fresh `streamlit run` server with
DEEPRNN_TORCH_THREADS set, the page open and every view on screen), and a headless run again; the
page is compared with the mean of the two headless runs around it, since the shared machine's speed
drifts from minute to minute. Needs Debian's chromium and playwright.
"""
import argparse
import os
import re
import subprocess
import sys
import time

from pageserver import ROOT, chromium_pids, cpu_seconds, dashboard_server, training_page


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


def page_tokens_per_s(seconds: float, threads: int) -> dict:
    """tokens/s with the page open, the CPU seconds per second of the server (training included)
    and of Chromium meanwhile, and seconds from moving Layers to the new run's first point."""
    with dashboard_server({"DEEPRNN_TORCH_THREADS": str(threads)}) as (url, server), \
            training_page(url, 1000) as page:
        wait_for_tokens(page, minimum=1)
        time.sleep(2)  # past the start-up
        start, tokens_start = time.perf_counter(), read_tokens(page)
        server_start, chromium_start = cpu_seconds([server.pid]), cpu_seconds(chromium_pids())
        time.sleep(seconds)
        tokens_end, end = read_tokens(page), time.perf_counter()
        elapsed = end - start
        return {"tokens_per_s": (tokens_end - tokens_start) / elapsed,
                "server_cpu": (cpu_seconds([server.pid]) - server_start) / elapsed,
                "chromium_cpu": (cpu_seconds(chromium_pids()) - chromium_start) / elapsed,
                "layers_s": layers_to_first_point(page)}


def layers_to_first_point(page) -> float:
    """Seconds from moving Layers (2 to 3) to the new run's first curve point on screen."""
    slider = page.get_by_role("slider", name="Layers")
    slider.focus()
    started = time.perf_counter()
    slider.press("ArrowRight")
    page.locator("h3", has_text="LSTM x3").wait_for(timeout=30_000)  # the new run's title
    wait_for_tokens(page, minimum=1)
    page.locator(".st-key-curves .scatterlayer path.point").first.wait_for(timeout=30_000)  # drawn
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
    print("| torch threads | headless tokens/s, before / after | page open tokens/s | page / headless | server CPU | "
          "chromium CPU | Layers to first point |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for threads in args.threads:
        before = headless_tokens_per_s(args.seconds, threads)
        page = page_tokens_per_s(args.seconds, threads)
        after = headless_tokens_per_s(args.seconds, threads)
        headless = (before + after) / 2
        print(f"| {threads} | {before:,.0f} / {after:,.0f} | {page['tokens_per_s']:,.0f} | {page['tokens_per_s'] / headless:.0%} "
              f"| {page['server_cpu']:.2f} | {page['chromium_cpu']:.2f} | {page['layers_s']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
