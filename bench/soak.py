#!/usr/bin/env python3
"""Soak test (not in CI): the dashboard training in headless Chromium for N minutes.

Samples the resident memory and thread count of the server and its training processes together once
a minute, prints them, and fails (exit 1) if memory grows by more than 10% after warm-up, or threads
keep growing. Warm-up is the first two minutes (the page's first views, the allocator's first pools);
"grows" compares the median of the last five samples with the median of the five after warm-up, so
one noisy minute (the garbage collector, a large figure in flight) neither hides nor fakes growth.

    python bench/soak.py --minutes 30
"""
import argparse
import statistics
import sys
import time

from pageserver import child_pids, dashboard_server, process_status, training_page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    args = parser.parse_args()
    samples = []
    with dashboard_server() as (url, server), training_page(url, 100_000):  # trains for the whole soak
        print("| minute | server and training processes RSS MB | threads |\n| --- | --- | --- |", flush=True)
        for minute in range(args.minutes + 1):
            if minute:
                time.sleep(60)
            rss, threads = map(sum, zip(*(process_status(pid) for pid in [server.pid, *child_pids(server.pid)])))
            samples.append((rss, threads))
            print(f"| {minute} | {rss:.0f} | {threads} |", flush=True)
    after_warm_up = samples[2:] or samples
    warm_rss = statistics.median(rss for rss, _ in after_warm_up[:5])
    late_rss = statistics.median(rss for rss, _ in after_warm_up[-5:])
    warm_threads, late_threads = after_warm_up[0][1], after_warm_up[-1][1]
    grew = late_rss > 1.10 * warm_rss or late_threads > warm_threads + 2
    print(f"after warm-up: median RSS {warm_rss:.0f} -> {late_rss:.0f} MB ({late_rss / warm_rss - 1:+.1%}), "
          f"peak {max(rss for rss, _ in after_warm_up):.0f} MB, threads {warm_threads} -> {late_threads}: "
          + ("GREW" if grew else "flat"))
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
