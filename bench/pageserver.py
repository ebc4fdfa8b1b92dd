"""A dashboard server on 127.0.0.1 and Debian's chromium, for the benchmarks that use the page."""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def dashboard_server(env: dict | None = None):
    """Yields (url, server process) of `streamlit run dashboard.py`, stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port)],
                              cwd=ROOT, env={**os.environ, **(env or {})},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        yield url, server
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def training_page(url: str, epochs: int):
    """A tall page (every view on screen) on which Start was pressed with this epoch budget."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 3000})
        page.goto(url)
        budget = page.get_by_label("Epoch budget")
        budget.fill(str(epochs))
        budget.press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Start").click()
        try:
            yield page
        finally:
            browser.close()
