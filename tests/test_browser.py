"""The dashboard in a real browser (Debian's chromium driven by Playwright), as a person sees it."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_threads(pid: int) -> int:
    return int(next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("Threads:")))


def server_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not come up: " + proc.stdout.read().decode())
    yield url, proc.pid
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def heatmap_count(page) -> int:
    return page.locator(".st-key-heatmaps g.heatmaplayer g.hm").count()


def test_start_curves_then_three_layers_then_close_stops_worker(server, browser):
    url, pid = server
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    page.goto(url)
    page.get_by_role("button", name="Start").click()
    # the curve has points once plotly drew a line path in the first chart
    page.locator("[data-testid=stPlotlyChart] .scatterlayer path.js-line").first.wait_for(timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.st-key-heatmaps g.heatmaplayer g.hm').length == 2",
                           timeout=30_000)
    page.screenshot(path=ARTIFACTS / "dashboard-running.png", full_page=True)

    slider = page.get_by_role("slider", name="Layers")
    slider.focus()
    slider.press("ArrowRight")
    assert slider.input_value() == "3"
    page.wait_for_function("document.querySelectorAll('.st-key-heatmaps g.heatmaplayer g.hm').length == 3",
                           timeout=60_000)
    assert page.locator("h3", has_text="LSTM x3").is_visible()
    page.wait_for_timeout(2500)  # let the new run's curve and samples appear
    page.screenshot(path=ARTIFACTS / "dashboard-three-layers.png", full_page=True)
    assert heatmap_count(page) == 3

    training_threads = server_threads(pid)
    page.close()
    # the tab's session is released shortly after its websocket closes; its worker must stop
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server_threads(pid) >= training_threads:
        time.sleep(0.5)
    assert server_threads(pid) < training_threads
    assert idle_within(pid, seconds=20)  # nothing trains any more: training would burn ~2 CPU s per s


def idle_within(pid: int, seconds: float) -> bool:
    """Whether the server settles to under 0.25 CPU seconds per second within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = server_cpu_seconds(pid)
        time.sleep(2)
        if server_cpu_seconds(pid) - before < 0.5:
            return True
    return False
