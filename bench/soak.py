#!/usr/bin/env python3
"""Soak test (not in CI): the dashboard training in headless Chromium for N minutes.

Samples the server's resident memory and thread count once a minute, prints them, and fails
(exit 1) if memory grows by more than 10% after the warm-up minute, or threads keep growing.

    python bench/soak.py --minutes 30
"""
import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]


def proc_status(pid: int) -> tuple[float, int]:
    """(resident MB, threads) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
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
            page = browser.new_page(viewport={"width": 1500, "height": 3000})
            page.goto(url)
            budget = page.get_by_label("Epoch budget")
            budget.fill("100000")  # keeps training for the whole soak
            budget.press("Enter")
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Start").click()
            print("| minute | server RSS MB | threads |\n| --- | --- | --- |", flush=True)
            for minute in range(args.minutes + 1):
                if minute:
                    time.sleep(60)
                rss, threads = proc_status(server.pid)
                samples.append((rss, threads))
                print(f"| {minute} | {rss:.0f} | {threads} |", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    warm = samples[1] if len(samples) > 1 else samples[0]
    peak_rss = max(rss for rss, _ in samples[1:] or samples)
    grew = peak_rss > 1.10 * warm[0] or samples[-1][1] > warm[1] + 2
    print(f"after warm-up: RSS {warm[0]:.0f} -> peak {peak_rss:.0f} MB, threads {warm[1]} -> {samples[-1][1]}: "
          + ("GREW" if grew else "flat"))
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
