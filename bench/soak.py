#!/usr/bin/env python3
"""Soak test (not in CI): the dashboard training in headless Chromium for N minutes.

Samples the server's resident memory and thread count once a minute, prints them, and fails
(exit 1) if memory grows by more than 10% after the warm-up minute, or threads keep growing.

    python bench/soak.py --minutes 30
"""
import argparse
import sys
import time

from pageserver import dashboard_server, training_page


def proc_status(pid: int) -> tuple[float, int]:
    """(resident MB, threads) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    args = parser.parse_args()
    samples = []
    with dashboard_server() as (url, server), training_page(url, 100_000):  # trains for the whole soak
        print("| minute | server RSS MB | threads |\n| --- | --- | --- |", flush=True)
        for minute in range(args.minutes + 1):
            if minute:
                time.sleep(60)
            rss, threads = proc_status(server.pid)
            samples.append((rss, threads))
            print(f"| {minute} | {rss:.0f} | {threads} |", flush=True)
    warm = samples[1] if len(samples) > 1 else samples[0]
    peak_rss = max(rss for rss, _ in samples[1:] or samples)
    grew = peak_rss > 1.10 * warm[0] or samples[-1][1] > warm[1] + 2
    print(f"after warm-up: RSS {warm[0]:.0f} -> peak {peak_rss:.0f} MB, threads {warm[1]} -> {samples[-1][1]}: "
          + ("GREW" if grew else "flat"))
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
