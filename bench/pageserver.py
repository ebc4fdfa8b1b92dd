"""A dashboard server on 127.0.0.1, Debian's chromium, and what their processes use, for the
benchmarks and the browser tests."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from repo import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def dashboard_server(env: dict | None = None, folder: Path = ROOT):
    """Yields (url, server process) of `streamlit run dashboard.py` in `folder` (the repository, or another
    page's), stopped afterwards; raises RuntimeError with the server's output if it does not answer within
    a minute."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile()  # a file, not a pipe: a long soak must never fill a pipe and block
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port)],
                              cwd=folder, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, log)
        yield url, server
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def _wait_until_healthy(url: str, log, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    log.seek(0)
    raise RuntimeError("streamlit did not come up: " + log.read().decode(errors="replace"))


def start_training(page, url: str, epochs: int, preset_label: str | None = None) -> None:
    """Open the page and press Start with this epoch budget, after choosing the preset of this label
    in the sidebar if one is given (the page starts on the fast one)."""
    page.goto(url)
    # The page drawn first: a click on the Preset dropdown while it was still loading once opened nothing.
    page.get_by_role("button", name="Start").wait_for()
    if preset_label:
        choose_preset(page, preset_label)
    budget = page.get_by_label("Epoch budget")
    budget.fill(str(epochs))
    budget.press("Enter")
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Start").click()


def choose_preset(page, label: str, tries: int = 3) -> None:
    """Pick the preset of this label from the sidebar's first dropdown. A click that opened no list (once
    even after the page was drawn, which cost a benchmark its run) is tried again."""
    from playwright.sync_api import TimeoutError
    for attempt in range(tries):
        page.locator("[data-testid=stSelectbox]").first.click()
        try:
            page.get_by_role("option", name=label).click(timeout=10_000)
            break
        except TimeoutError:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
    page.wait_for_timeout(1000)


def switch_live_views(page, on: bool) -> None:
    """Click the sidebar's Live views switch and wait until it shows `on`."""
    page.get_by_text("Live views", exact=True).click()
    page.get_by_role("switch", name="Live views", checked=on).wait_for()


@contextlib.contextmanager
def training_page(url: str, epochs: int, preset_label: str | None = None):
    """A tall page (every view on screen) on which Start was pressed with this epoch budget (and
    preset; see start_training)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 3000})
        start_training(page, url, epochs, preset_label)
        try:
            yield page
        finally:
            browser.close()


# A JavaScript function of a drawn Plotly chart: each margin that Plotly widened for the figure's labels,
# legend or colour bar ("l 10 -> 65"), which it does by laying the figure out a second time.
WIDENED_MARGINS = """chart => ['l', 'r', 't', 'b']
    .filter(side => chart._fullLayout._size[side] > chart._fullLayout.margin[side])
    .map(side => `${side} ${chart._fullLayout.margin[side]} -> ${chart._fullLayout._size[side]}`)"""


# --- watching the page from inside it ---------------------------------------------------------------
# Asking the page from here ten or twenty times a second (page.inner_text, page.evaluate) cost Chromium,
# playwright's driver and this process up to 0.2 of a core, taken from the training being measured. A
# MutationObserver in the page records each change with the browser's clock instead, and the benchmark
# reads the record when it wants it.
WATCH_TEXT = """([selector, containing]) => {
    const changes = window.deeprnnTextChanges = [];
    const record = () => {
        const found = [...document.querySelectorAll(selector)].find(el => el.textContent.includes(containing));
        const text = found?.textContent;
        if (text !== undefined && (!changes.length || changes.at(-1)[1] !== text)) {
            changes.push([Date.now() / 1000, text]);
        }
    };
    window.deeprnnWatch?.disconnect();  // one watch at a time
    window.deeprnnWatch = new MutationObserver(record);
    window.deeprnnWatch.observe(document.body, {subtree: true, childList: true, characterData: true});
    record();
    return Date.now() / 1000;
}"""


def watch_text(page, selector: str, containing: str = "") -> float:
    """Starts recording each change of the text of the first element that matches `selector` and
    contains `containing`; returns the browser's clock (seconds) at the start."""
    return page.evaluate(WATCH_TEXT, [selector, containing])


def text_changes(page) -> list[tuple[float, str]]:
    """(browser clock, text) at each change since watch_text, the first being the text it found."""
    return [tuple(change) for change in page.evaluate("window.deeprnnTextChanges")]


# --- watching the processes, from /proc ------------------------------------------------------------
def process_status(pid: int) -> tuple[float, int]:
    """(resident MB, threads) of a process."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, parent, ..., utime, stime, ...);
    OSError once the process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def chromium_pids() -> list[int]:
    """Every chromium process on the machine (the benchmark's browser is the only one running)."""
    return _pids_where(_is_chromium)


def renderer_pids() -> list[int]:
    """Chromium's renderers, the processes that run the pages' scripts and draw them."""
    return _pids_where(lambda pid: _is_chromium(pid) and "--type=renderer" in Path(f"/proc/{pid}/cmdline").read_text())


def _is_chromium(pid: int) -> bool:
    return Path(f"/proc/{pid}/comm").read_text().startswith("chromium")


@contextlib.contextmanager
def renderers_stopped():
    """Chromium's renderers stopped (SIGSTOP) until the block ends. A paused page has redrawn nothing on a
    timer since session 25, and Chromium then uses about 0.02 of a core (its status line had taken 0.06,
    and its views 0.13 to 0.2 until session 24; bench/results/idle-page.md), but a benchmark's headless
    window should not share the cores with anything of the page's. The browser process and its network
    service keep running and keep the page's websocket, and so its session and training process, alive."""
    pids = renderer_pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the page server's training processes)."""
    return _pids_where(lambda child: int(stat_fields(child)[1]) == pid)


def _pids_where(matches) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and matches(int(entry.name)):
                pids.append(int(entry.name))
        except OSError:  # the process ended meanwhile
            continue
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of these processes (all their threads); gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            fields = stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cores_used(groups: dict):
    """Yields a dict that, once the block ends, holds the cores (CPU seconds per second) that each group
    of processes used while it ran; `groups` maps a name to a function giving the group's pids, asked
    at the start and at the end (a training process may start meanwhile)."""
    used = {}
    started = time.perf_counter()
    before = {name: cpu_seconds(pids()) for name, pids in groups.items()}
    yield used
    elapsed = time.perf_counter() - started
    used.update({name: (cpu_seconds(pids()) - before[name]) / elapsed for name, pids in groups.items()})
