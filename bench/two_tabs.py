#!/usr/bin/env python3
"""Two tabs training at once: each run's tokens/s when two of the page's sessions (each a training
process of its own, as in two browser tabs) train side by side on one machine. No browser: the runs'
speed is read from their snapshots, as the page reads it.

    python bench/two_tabs.py --presets best best
    python bench/two_tabs.py --presets best fast
"""
import argparse
import time

import repo  # noqa: F401  puts the repository's deeprnn on sys.path
from deeprnn.config import PRESETS, preset
from deeprnn.remote import ProcessSession


def side_by_side(presets: list[str], warmup_s: float, seconds: float) -> list[tuple[str, str, float]]:
    """(run name, device label, tokens/s over `seconds`) of each preset's run, all training at once."""
    tabs = [ProcessSession() for _ in presets]
    try:
        for tab, name in zip(tabs, presets):
            tab.start(preset(name, epochs=1000))
        time.sleep(warmup_s)  # every run past its first steps, and told how many train at once
        before = [(time.perf_counter(), tab.snapshot().tokens) for tab in tabs]
        time.sleep(seconds)
        rows = []
        for tab, (started, tokens) in zip(tabs, before):
            snap = tab.snapshot()
            rows.append((snap.name, snap.device, (snap.tokens - tokens) / (time.perf_counter() - started)))
        return rows
    finally:
        for tab in tabs:
            tab.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["best", "best"], choices=sorted(PRESETS))
    parser.add_argument("--warmup", type=float, default=20, help="seconds before the window")
    parser.add_argument("--seconds", type=float, default=30, help="length of the window")
    args = parser.parse_args()
    print(f"{len(args.presets)} tabs at once, {args.seconds:g} s window after {args.warmup:g} s\n")
    print("| tab | run | device | tokens/s |\n| --- | --- | --- | --- |")
    for tab, (name, device, speed) in enumerate(side_by_side(args.presets, args.warmup, args.seconds), 1):
        print(f"| {tab} | {name} | {device} | {speed:,.0f} |")


if __name__ == "__main__":
    main()
