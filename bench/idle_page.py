#!/usr/bin/env python3
"""What the page costs while nothing trains: the CPU of Chromium and of the server with the page open
and left alone, before the first Start, with its run paused, and after a run has finished (the fast
preset).

    python bench/idle_page.py --seconds 30

Needs Debian's chromium and playwright.
"""
import argparse
import time

from pageserver import CHROMIUM, CHROMIUM_ARGS, chromium_pids, cores_used, dashboard_server, start_training


def cpu_while_left_alone(server_pid: int, seconds: float) -> tuple[float, float]:
    """Cores used by Chromium and by the server (its training processes not counted) over `seconds`."""
    with cores_used({"chromium": chromium_pids, "server": lambda: [server_pid]}) as used:
        time.sleep(seconds)
    return used["chromium"], used["server"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="length of each window")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    with dashboard_server() as (url, server), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 3000})  # every view on screen
        page.goto(url)
        page.get_by_role("button", name="Start").wait_for()
        time.sleep(5)  # the page drawn and settled
        rows = [("before the first Start", *cpu_while_left_alone(server.pid, args.seconds))]
        start_training(page, url, epochs=1000)
        page.locator("h3", has_text="running").wait_for(timeout=120_000)
        time.sleep(5)
        page.get_by_role("button", name="Pause").click()
        page.locator("h3", has_text="paused").wait_for()
        time.sleep(5)
        rows.append(("its run paused", *cpu_while_left_alone(server.pid, args.seconds)))
        page.get_by_label("Epoch budget").fill("1")  # a new run, of one epoch
        page.get_by_label("Epoch budget").press("Enter")
        page.get_by_role("button", name="Start").click()
        page.locator("h3", has_text="finished").wait_for(timeout=120_000)
        time.sleep(5)
        rows.append(("after its run finished", *cpu_while_left_alone(server.pid, args.seconds)))
        browser.close()
    print(f"the page left alone, {args.seconds:g} s windows")
    print("| page | Chromium CPU | server CPU |")
    print("| --- | --- | --- |")
    for label, chromium, server in rows:
        print(f"| {label} | {chromium:.3f} | {server:.3f} |")


if __name__ == "__main__":
    main()
