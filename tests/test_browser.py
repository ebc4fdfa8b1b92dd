"""The dashboard in a real browser (Debian's chromium driven by Playwright), as a person sees it."""
import time
from pathlib import Path

from pageserver import start_training
from support import idle_within, server_threads

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def heatmap_count(page) -> int:
    return page.locator(".st-key-heatmaps g.heatmaplayer g.hm").count()


def test_start_curves_then_three_layers_then_close_stops_worker(server, browser):
    url, pid = server
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    start_training(page, url, epochs=1000)
    # the curve has points once plotly drew a line path in the first chart
    page.locator("[data-testid=stPlotlyChart] .scatterlayer path.js-line").first.wait_for(timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.st-key-heatmaps g.heatmaplayer g.hm').length == 2",
                           timeout=30_000)
    page.screenshot(path=ARTIFACTS / "dashboard-running.png", full_page=True)

    slider = page.get_by_role("slider", name="Layers")
    slider.focus()
    slider.press("ArrowRight")
    assert slider.input_value() == "3"
    try:
        page.wait_for_function("document.querySelectorAll('.st-key-heatmaps g.heatmaplayer g.hm').length == 3",
                               timeout=60_000)
    finally:
        page.screenshot(path=ARTIFACTS / "dashboard-three-layers.png", full_page=True)
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
