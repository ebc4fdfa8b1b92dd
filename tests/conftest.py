import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

# Tests read the book's corpus from the shared copy (these machines have no internet).
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("DEEPRNN_DATA_DIR", str(SHARED_DATA))
torch.set_num_threads(1)  # several tests train at once under the session tests; keep them polite

from deeprnn.config import RunConfig  # noqa: E402
from deeprnn.session import TrainingSession, close_all_sessions  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from pageserver import CHROMIUM, CHROMIUM_ARGS, dashboard_server  # noqa: E402


@pytest.fixture
def small_config():
    """A slice of The Time Machine and a tiny model: trains in well under a second."""
    return RunConfig(max_tokens=4000, val_fraction=0.1, hidden=32, embedding=16, batch=8, steps=16,
                     epochs=2, device="cpu", lr=3e-3, schedule="constant", eval_every=0)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Never let a test write to the real user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# --- the live session ---------------------------------------------------------------------------
@pytest.fixture
def session():
    s = TrainingSession(report_every_s=0.05, view_every_s=0.2)
    yield s
    s.close()


@pytest.fixture
def config(small_config):
    """The small run with a budget no test waits out."""
    return small_config.replace(epochs=1000)


# --- the page through AppTest ------------------------------------------------------------------
@pytest.fixture
def app():
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    yield at
    close_all_sessions()
    # AppTest pages share one session id, so the next test's page would get this tab's session back
    st.cache_resource.clear()


# --- the page in a real browser (the same server and chromium the benchmarks use) ---------------------
@pytest.fixture(scope="module")
def server():
    """(url, pid) of `streamlit run dashboard.py` on a free local port, holding a closed tab's session 5 s
    (a minute on the page) before its training process ends."""
    with dashboard_server({"DEEPRNN_TAB_HOLD_S": "5"}) as (url, proc):
        yield url, proc.pid


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (Playwright cannot download browsers here)."""
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
