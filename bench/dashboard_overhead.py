#!/usr/bin/env python3
"""What the page costs training: tokens per wall-clock second of a preset (the fast one unless told),
headless (the CLI's training loop) against the dashboard open in headless Chromium, streaming every view.

    python bench/dashboard_overhead.py --seconds 20 --rounds 4 --threads 1 2
    python bench/dashboard_overhead.py --preset best --threads 0 --layer-moves 6
    python bench/dashboard_overhead.py --preset best --threads 0 --live-views off

For each torch thread count, one `streamlit run` server (DEEPRNN_TORCH_THREADS set; 0: the page's own
choice for the preset, which the headless runs then use too) with the page open and every view on
screen: headless windows (the CLI's loop in a subprocess, the page's run paused and its browser tab
stopped) take turns with page windows, and each page window is compared with the mean of the headless
windows on either side, since the shared machine's speed drifts from minute to minute. The page is read
from inside it (see pageserver.watch_text). Needs Debian's chromium and playwright.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

from pageserver import (ROOT, child_pids, chromium_pids, cores_used, dashboard_server, renderers_stopped,
                        switch_live_views, text_changes, training_page, watch_text)
from deeprnn.config import preset
from deeprnn.controls import PRESET_LABELS
from deeprnn.session import torch_threads_for


def headless_tokens_per_s(name: str, seconds: float, threads: int) -> float:
    """The CLI's loop (Trainer.steps, held-out evaluations included) timed by the wall clock."""
    code = f"""
import time, torch
torch.set_num_threads({threads})
from deeprnn.config import preset
from deeprnn.train import Trainer
trainer = Trainer(preset({name!r}, epochs=1000))
steps = trainer.steps()
for _ in range(20):
    next(steps)
start, tokens = time.perf_counter(), trainer.tokens
while time.perf_counter() - start < {seconds}:
    next(steps)
print((trainer.tokens - tokens) / (time.perf_counter() - start))
"""
    # A session of its own, as the CLI has in a terminal and the page's training process has: Linux
    # shares the CPU between sessions first, so the benchmark's own processes stay out of its way.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         start_new_session=True)
    return float(out.stdout.strip().splitlines()[-1])


def interleaved(name: str, seconds: float, threads: int, rounds: int, live_views: bool = True,
                layer_moves: int = 1) -> dict:
    """Headless and page windows taking turns on one page: the page's run is paused while a headless
    run trains, so both see the same minutes of the shared machine, whose speed drifts by tens of
    percent from one minute to the next. Per page window: tokens/s and the CPU seconds per second of
    the server (training included) and of Chromium; at the end, Layers to the new run's first point, and
    the headless runs' torch threads."""
    headless, windows = [], []
    headless_threads = threads or torch_threads_for(preset(name))
    with dashboard_server({"DEEPRNN_TORCH_THREADS": str(threads)}) as (url, server), \
            training_page(url, 1000, PRESET_LABELS[name]) as page:
        wait_for_tokens(page, minimum=1)
        if not live_views:  # the sidebar's switch: only the status line redraws as the run trains
            switch_live_views(page, on=False)
        for _ in range(rounds):
            headless.append(headless_window(page, name, seconds, headless_threads))
            time.sleep(2)  # past the resumption
            windows.append(page_window(page, server.pid, seconds))
        headless.append(headless_window(page, name, seconds, headless_threads))
        # Without live views a new run's first point is drawn only if it came before the click's rerun drew
        # the page: not what Layers measures.
        return {"headless": headless, "windows": windows, "threads": headless_threads,
                "layers_s": layers_to_first_point(page, layer_moves) if live_views else None}


def headless_window(page, name: str, seconds: float, threads: int) -> float:
    """Headless tokens/s with the page's run paused and its browser tab stopped, so that the CLI's
    loop has the machine to itself."""
    press(page, "Pause", "paused")
    with renderers_stopped():
        tokens_per_s = headless_tokens_per_s(name, seconds, threads)
    press(page, "Resume", "running")
    return tokens_per_s


def press(page, button: str, status: str) -> None:
    page.get_by_role("button", name=button).click()
    page.locator("h3", has_text=status).wait_for(timeout=30_000)


def page_window(page, server_pid: int, seconds: float) -> dict:
    """Tokens/s on the page, between the first and last changes of its token count in the window, and
    CPU seconds per second of the server, its training process and Chromium."""
    groups = {"server_cpu": lambda: [server_pid], "training_cpu": lambda: child_pids(server_pid),
              "chromium_cpu": chromium_pids}
    with cores_used(groups) as used:
        changes = token_changes(page, seconds)
    (first_s, first), (last_s, last) = changes[0], changes[-1]
    return {"tokens_per_s": (last - first) / (last_s - first_s), **used}


def token_changes(page, seconds: float) -> list[tuple[float, int]]:
    """(time, tokens) at each change of the page's token count within `seconds`, recorded in the page
    as it changes: the page redraws it every 2 s, so a reading at a set time could be up to 2 s old, 13%
    of a 15 s window."""
    watch_text(page, '[data-testid="stProgress"]')
    time.sleep(seconds)
    readings = [(stamp, parse_tokens(text)) for stamp, text in text_changes(page)]
    if len(readings) < 3:
        raise RuntimeError(f"the page's token count changed {len(readings) - 1} times in {seconds:g} s")
    return readings[1:]  # the first reading's age is unknown


# Set to the browser's clock once the page shows a run of this title with tokens trained and a point
# in its curves, checked at each change of the page rather than by asking it from here (see pageserver).
WATCH_FIRST_POINT = """([title]) => {
    window.deeprnnFirstPoint = null;
    const shown = () => [...document.querySelectorAll('h3')].some(h => h.textContent.includes(title))
        && /step [\\d,]+ · [1-9]/.test(document.querySelector('[data-testid="stProgress"]')?.textContent ?? '')
        && document.querySelector('.st-key-curves .scatterlayer path.point') !== null;
    const observer = new MutationObserver(() => {
        if (shown()) { window.deeprnnFirstPoint = Date.now() / 1000; observer.disconnect(); }
    });
    observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
    return Date.now() / 1000;
}"""


LOOK_BEFORE_THE_NEXT_MOVE_S = 8


def layers_to_first_point(page, moves: int) -> list[float]:
    """Seconds from each move of Layers (2 to 3, back to 2, and so on) to the new run's first curve point on
    screen, each move made a while after the last one's point, as a person looks before moving it again."""
    slider = page.get_by_role("slider", name="Layers")
    seconds = []
    for move in range(moves):
        key, layers = ("ArrowRight", 3) if move % 2 == 0 else ("ArrowLeft", 2)
        if move:
            time.sleep(LOOK_BEFORE_THE_NEXT_MOVE_S)
        slider.focus()
        started = page.evaluate(WATCH_FIRST_POINT, [f"LSTM x{layers}"])
        slider.press(key)
        drawn = page.wait_for_function("window.deeprnnFirstPoint", polling=500, timeout=30_000).json_value()
        seconds.append(drawn - started)
    return seconds


def read_tokens(page) -> int:
    return parse_tokens(page.inner_text("body"))


def parse_tokens(text: str) -> int:
    match = re.search(r"step [\d,]+ · ([\d,]+) tokens", text)
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
    parser.add_argument("--seconds", type=float, default=20, help="length of each window")
    parser.add_argument("--rounds", type=int, default=4, help="page windows per thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="DEEPRNN_TORCH_THREADS of each page; 0: the page's choice for the preset")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESET_LABELS))
    parser.add_argument("--live-views", default="on", choices=["on", "off"],
                        help="the page's Live views switch: off, only its status line redraws as the run trains")
    parser.add_argument("--layer-moves", type=int, default=1,
                        help="moves of Layers at the end, each timed to the new run's first point on screen")
    args = parser.parse_args()
    print(f"{args.preset} preset, {args.seconds:g} s windows, {os.cpu_count()} cores, live views {args.live_views}")
    print("| torch threads | round | headless tokens/s, before / after | page open tokens/s | page / headless | "
          "server CPU | training process CPU | chromium CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for threads in args.threads:
        result = interleaved(args.preset, args.seconds, threads, args.rounds, args.live_views == "on",
                             args.layer_moves)
        threads = threads or f"the page's choice ({result['threads']})"
        ratios = []
        for i, window in enumerate(result["windows"]):
            before, after = result["headless"][i:i + 2]
            ratios.append(window["tokens_per_s"] / ((before + after) / 2))
            print(f"| {threads} | {i + 1} | {before:,.0f} / {after:,.0f} | {window['tokens_per_s']:,.0f} | {ratios[-1]:.0%} "
                  f"| {window['server_cpu']:.2f} | {window['training_cpu']:.2f} | {window['chromium_cpu']:.2f} |",
                  flush=True)
        print(f"| {threads} | median | | | {statistics.median(ratios):.0%} | | | |")
        if result["layers_s"] is not None:
            moves = ", ".join(f"{s:.1f}" for s in result["layers_s"])
            print(f"Layers to the new run's first point, {threads} torch thread(s): {moves} s "
                  f"(median {statistics.median(result['layers_s']):.1f} s)", flush=True)


if __name__ == "__main__":
    main()
