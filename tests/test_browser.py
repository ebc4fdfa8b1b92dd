"""The dashboard in a real browser (Debian's chromium driven by Playwright), as a person sees it."""
import re
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from deeprnn import charts
from deeprnn import controls as ctl
from pageserver import WIDENED_MARGINS, child_pids, start_training, switch_live_views
from support import idle_within, shown_step, wait_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def heatmap_layers(page) -> set[str]:
    """The layers the hidden-state heatmaps are titled with. A set: while Plotly redraws a figure, its
    old and new heatmap groups can both be in the page for a moment, so counting them is not reliable."""
    titles = page.locator(".st-key-heatmaps text.annotation-text").all_text_contents()
    return {title.split(" ·")[0] for title in titles}


def wait_for_heatmap_layers(page, layers: int, timeout: float = 60) -> None:
    expected = {f"layer {i}" for i in range(1, layers + 1)}
    deadline = time.monotonic() + timeout
    while heatmap_layers(page) != expected:
        assert time.monotonic() < deadline, f"the heatmaps show {sorted(heatmap_layers(page))}, not {layers} layers"
        time.sleep(0.2)


def assert_samples_span_their_column(page) -> None:
    """The greedy and the sampled text each take the whole width of "The model writes": side by side,
    a line held about 13 characters on a laptop's screen and words broke across lines."""
    column = page.get_by_test_id("stColumn").filter(has=page.get_by_role("heading", name="The model writes"))
    blocks = column.get_by_test_id("stCode")
    expect(blocks).to_have_count(2)
    column_width = column.bounding_box()["width"]
    widths = [blocks.nth(i).bounding_box()["width"] for i in range(2)]
    assert min(widths) > 0.9 * column_width, f"samples {widths} px wide in a {column_width} px column"


CHARTS_LAID_OUT_AGAIN = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(chart => {
    const key = chart.closest('[class*="st-key-"]').className.match(/st-key-\\S+/)[0];
    return (""" + WIDENED_MARGINS + """)(chart).map(margin => `${key} ${margin}`);
})"""


def assert_charts_fit_their_margins(page) -> None:
    """Each chart's labels, legend and colour bar fit in the margins its figure sets: where they did not,
    Plotly widened the margins and laid the figure out a second time, at each of the page's redraws."""
    widened = page.evaluate(CHARTS_LAID_OUT_AGAIN)
    assert not widened, f"charts whose margins Plotly widened: {widened}"


def test_start_curves_then_three_layers_then_close_ends_the_training_process(server, browser):
    url, pid = server
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    start_training(page, url, epochs=1000)
    # the curve has points once plotly drew a line path in the first chart
    page.locator(".st-key-curves .scatterlayer path.js-line").first.wait_for(timeout=60_000)
    wait_for_heatmap_layers(page, 2)
    page.screenshot(path=ARTIFACTS / "dashboard-running.png", full_page=True)
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)  # a viewer's toolbar (.streamlit/config.toml)

    assert_charts_fit_their_margins(page)
    page.get_by_text("Saturation", exact=True).click()
    page.locator(".st-key-saturation_chart .scatterlayer .point").first.wait_for()
    assert_charts_fit_their_margins(page)
    page.get_by_text("Gradient flow", exact=True).click()
    expect(page.get_by_role("radio", name="Gradient flow")).to_be_checked()
    page.locator(".st-key-gradient_chart .scatterlayer path.js-line").first.wait_for()
    page.locator(".st-key-clipped_chart .scatterlayer .trace").first.wait_for(state="attached")
    assert_charts_fit_their_margins(page)
    slider = page.get_by_role("slider", name="Layers")
    slider.focus()
    slider.press("ArrowRight")
    assert slider.input_value() == "3"
    try:
        wait_for_heatmap_layers(page, 3)
    finally:
        page.screenshot(path=ARTIFACTS / "dashboard-three-layers.png", full_page=True)
    assert page.locator("h3", has_text="LSTM x3").is_visible()
    for _ in range(25):  # while the new run's curve and samples appear, no box of the old run's stays
        assert page.get_by_test_id("stCode").count() <= 2, "a sample box left over from an earlier rerun"
        page.wait_for_timeout(100)
    page.screenshot(path=ARTIFACTS / "dashboard-three-layers.png", full_page=True)
    assert heatmap_layers(page) == {"layer 1", "layer 2", "layer 3"}
    assert_samples_span_their_column(page)
    expect(page.get_by_role("radio", name="Gradient flow")).to_be_checked()  # the new run shows the same view

    # The runs' panel redraws itself: it names the newest run as it is now, with its kept best weights
    page.get_by_text("Export and manage runs").click()
    manage = page.get_by_test_id("stExpander").filter(has_text="Export and manage runs")
    expect(manage.get_by_role("combobox", name="Run")).to_have_value("#2 LSTM x3 h96 lr0.015 (running)")
    expect(manage.get_by_role("button", name="Best weights")).to_be_enabled(timeout=15_000)
    manage.get_by_role("button", name="Delete run").click()
    # The sidebar follows: no run is active. (Its own Stop: while a script runs slowly, Streamlit's toolbar
    # shows a Stop button of its own.)
    expect(page.get_by_test_id("stSidebar").get_by_role("button", name="Stop")).to_be_disabled()
    expect(manage.get_by_role("combobox", name="Run")).to_have_value("#1 LSTM x2 h96 lr0.015 (stopped)")

    training = len(child_pids(pid))
    page.close()
    # the tab's session is released shortly after its websocket closes; its training process must end
    wait_for(lambda: len(child_pids(pid)) < training, timeout=30, interval=0.5)
    assert idle_within(pid, seconds=20)  # the server is idle again


def test_a_reload_comes_back_to_the_tabs_runs_still_training(server, browser):
    url, pid = server
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    start_training(page, url, epochs=1000)
    page.locator("[data-testid=stProgress]").first.wait_for(timeout=60_000)
    slider = page.get_by_role("slider", name="Layers")
    slider.focus()
    slider.press("ArrowRight")  # a second run, of 3 layers
    expect(page.locator("h3", has_text="LSTM x3")).to_be_visible(timeout=30_000)
    page.get_by_label("Prefix").fill("the machine")
    page.get_by_label("Prefix").press("Enter")
    expect(page.get_by_text("greedy (step")).to_be_visible(timeout=30_000)
    wait_for(lambda: "tab=" in page.url, timeout=10)
    processes = child_pids(pid)
    before = shown_step(page)

    page.reload()
    expect(page.locator("h3", has_text="LSTM x3")).to_be_visible(timeout=30_000)
    assert shown_step(page) >= before  # the same run, not a new one from step 0
    wait_for(lambda: shown_step(page) > before, timeout=30, interval=0.5)  # and it trains on
    assert set(child_pids(pid)) <= set(processes)  # in the same training process, no new one (an earlier
    # test's held tab may end meanwhile)
    # The controls show the run they came back to, so a Start or an architecture change starts from it
    assert page.get_by_role("slider", name="Layers").input_value() == "3"
    expect(page.get_by_label("Prefix")).to_have_value("the machine")
    expect(page.get_by_test_id("stMultiSelect").get_by_text("#1 LSTM x2 h96 lr0.015")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "dashboard-after-reload.png", full_page=True)
    page.close()


def test_a_dropped_connection_comes_back_to_the_same_run(server, browser):
    """Streamlit lets a session's resources go the moment its websocket closes, even one the browser then
    reopens: the run had ended and the page came back empty."""
    url, pid = server
    page = browser.new_page()
    start_training(page, url, epochs=1000)
    page.locator("[data-testid=stProgress]").first.wait_for(timeout=60_000)
    processes = child_pids(pid)
    before = shown_step(page)
    port = url.rsplit(":", 1)[1]
    dropped = subprocess.run(["ss", "-K", "-t", "-n", f"sport = :{port}"], capture_output=True, text=True)
    if "ESTAB" not in dropped.stdout:
        pytest.skip(f"cannot close the page's connections here (ss -K: {dropped.stderr.strip() or 'none closed'})")
    wait_for(lambda: page.locator("[data-testid=stProgress]").count() and shown_step(page) > before,
             timeout=30, interval=0.5)
    assert set(child_pids(pid)) <= set(processes)  # the same training process, no new one
    page.close()


def test_the_status_lines_numbers_are_whole_on_a_small_laptops_screen(server, browser):
    """Six fixed columns cut them short there ("45,…", "12…")."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1024, "height": 768})
    start_training(page, url, epochs=1000)
    values = page.get_by_test_id("stMetricValue")
    expect(values).to_have_count(6, timeout=30_000)
    cut = values.evaluate_all("els => els.filter(e => [e, ...e.querySelectorAll('*')]"
                              "  .some(n => n.scrollWidth > n.clientWidth + 1)).map(e => e.innerText)")
    assert not cut, f"cut short: {cut}"
    # The samples' column is the narrowest: its labels ("Temperatur / e", "Write with the kept …") had broken
    # over two lines or been cut short there.
    column = page.get_by_test_id("stColumn").filter(has=page.get_by_role("heading", name="The model writes"))
    labels = column.get_by_test_id("stWidgetLabel")
    expect(labels).to_have_count(3)
    broken = labels.evaluate_all(
        "els => els.filter(e => [e, ...e.querySelectorAll('*')].some(n => n.scrollWidth > n.clientWidth + 1)"
        "  || [...e.querySelectorAll('p')].some(p => p.getClientRects().length && p.getBoundingClientRect().height"
        "       > 1.5 * parseFloat(getComputedStyle(p).lineHeight))).map(e => e.innerText)")
    assert not broken, f"cut short or broken over lines: {broken}"
    page.get_by_role("button", name="Pause").click()
    resume = page.get_by_role("button", name="Resume")
    expect(resume).to_be_visible()
    assert resume.evaluate("b => [b, ...b.querySelectorAll('*')].every(n => n.scrollWidth <= n.clientWidth + 1)"), \
        "the Resume button's label is cut short"
    page.close()


def test_the_unit_text_wraps_between_words_not_inside_them(browser):
    """Spaces written as no-break spaces left the browser nowhere to wrap but inside words."""
    text = "the time traveller for so it will be convenient to speak of him"
    page = browser.new_page(viewport={"width": 400, "height": 400})
    page.set_content(f'<div style="width:220px">{charts.unit_text_html(list(text), [0.5] * len(text))}</div>')
    tops = page.locator("span").evaluate_all("spans => spans.map(s => s.getBoundingClientRect().top)")
    lines, words, start = sorted(set(tops)), [], 0
    for word in text.split(" "):
        words.append(set(tops[start:start + len(word)]))
        start += len(word) + 1
    assert len(lines) >= 3, "the text should wrap in a 220 px box"
    assert all(len(word_lines) == 1 for word_lines in words), "a word broke across lines"
    page.close()


def test_a_finished_runs_page_left_alone_asks_the_server_for_nothing(server, browser):
    """Its views redrew on timers forever, keeping Chromium busy with a tenth of a core: now the
    page's timers run only while something can change without the user."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    sent = record_messages_sent(page)
    start_training(page, url, epochs=1)
    page.locator("h3", has_text="finished").wait_for(timeout=60_000)
    expect(page.locator(".st-key-curves .scatterlayer path.js-line").first).to_be_visible()  # drawn at the end
    assert_asks_for_nothing(page, sent)
    page.close()


def test_a_paused_runs_views_follow_the_weights_it_stopped_at_and_a_new_prefix_without_timers(server, browser):
    """A paused page has no timers (its status line's had cost Chromium 0.06 of a core): the views of the
    weights the run stopped at (a quarter of a second for the best preset's model) and those of a new
    prefix are in the snapshot when the click's rerun draws the page."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    sent = record_messages_sent(page)
    start_training(page, url, epochs=1000, preset_label=ctl.PRESET_LABELS["best"])
    caption = page.get_by_text("probed at step")
    expect(caption).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Pause").click()
    page.locator("h3", has_text="paused").wait_for()
    step = re.search(r"step ([\d,]+) ·", page.get_by_test_id("stProgress").inner_text()).group(1).replace(",", "")
    expect(caption).to_contain_text(f"probed at step {step}.", timeout=15_000)
    expect(page.get_by_text(f"greedy (step {step})")).to_be_visible()
    prefix = page.get_by_label("Prefix")
    prefix.fill("the machine")
    prefix.press("Enter")
    expect(page.get_by_test_id("stCode").first).to_contain_text("the machine", timeout=15_000)
    assert_asks_for_nothing(page, sent)
    page.close()


def test_live_views_off_leaves_the_views_as_drawn_while_the_status_line_counts_on(server, browser):
    """The views' redraws are what the page costs a run on every core; with Live views off only the status
    line keeps its timer, and switched on again the views follow the run."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    start_training(page, url, epochs=1000)
    caption = page.get_by_text("probed at step")
    expect(caption).to_be_visible(timeout=60_000)
    switch_live_views(page, on=False)
    page.wait_for_timeout(3000)  # the click's rerun drawn
    probed, tokens = caption.inner_text(), page.get_by_test_id("stProgress").inner_text()
    page.wait_for_timeout(6000)  # three of the status line's redraws, and the views' own cadence three times over
    expect(page.get_by_test_id("stProgress")).not_to_have_text(tokens)
    assert caption.inner_text() == probed, "the views redrew with Live views off"
    switch_live_views(page, on=True)
    expect(caption).not_to_have_text(probed, timeout=15_000)
    page.close()


def test_the_controls_follow_the_run_without_a_click(server, browser):
    """The controls are drawn by the page's full runs, not by its timed redraws, which start a full run when
    what the controls show changes: the best weights' switch comes on with the run's first kept weights, and
    the comparison takes the run in with its first point."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    start_training(page, url, epochs=1000)
    expect(page.get_by_role("switch", name=re.compile("Best weights"))).to_be_enabled(timeout=60_000)
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
    expect(page.get_by_test_id("stMultiSelect")).to_contain_text("#1 LSTM x2")
    page.close()


def record_messages_sent(page) -> list[float]:
    """The times of the messages the page will send the server (a rerun asked for, a click...)."""
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(time.monotonic())))
    return sent


def assert_asks_for_nothing(page, sent: list[float]) -> None:
    page.wait_for_timeout(2000)  # the page redrawn as the run ended or settled
    settled = time.monotonic()
    page.wait_for_timeout(7000)  # longer than the page's timer (2 s; 4 s for a run on every core)
    assert not [t for t in sent if t > settled], "the page still reruns its views on a timer"


CURVES_X_AXIS = """() => {
    const axis = document.querySelector('.st-key-curves .js-plotly-plot')._fullLayout.xaxis;
    return {range: axis.range, autorange: axis.autorange};
}"""


def test_a_zoom_into_the_curves_stays_while_the_run_adds_points(server, browser):
    """A drag across the curves zooms into them, as in TensorBoard, and the run's new points then redraw
    the chart in place (st.plotly_chart had mounted a new chart for each new figure: the zoom lasted until
    the next points)."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    start_training(page, url, epochs=1000)
    line = page.locator(".st-key-curves .scatterlayer path.js-line").first
    line.wait_for(timeout=60_000)
    plot = page.locator(".st-key-curves .nsewdrag").first.bounding_box()
    page.mouse.move(plot["x"] + 0.3 * plot["width"], plot["y"] + 0.5 * plot["height"])
    page.mouse.down()
    page.mouse.move(plot["x"] + 0.6 * plot["width"], plot["y"] + 0.5 * plot["height"], steps=5)
    page.mouse.up()
    zoomed = page.evaluate(CURVES_X_AXIS)
    assert zoomed["autorange"] is False
    drawn = line.get_attribute("d")
    expect(line).not_to_have_attribute("d", drawn, timeout=15_000)  # the run's next points drawn
    assert page.evaluate(CURVES_X_AXIS) == zoomed
    page.close()


ANIMATED_ELEMENTS = """() => [...document.querySelectorAll('*')]
    .filter(el => getComputedStyle(el).transitionDuration.split(',').some(d => parseFloat(d) > 0))
    .map(el => el.closest('[data-testid]')?.dataset.testid ?? el.tagName)"""


def test_the_page_changes_its_look_in_steps_not_frame_by_frame(server, browser):
    """No element of the page animates a change (Streamlit gives its widgets, its sidebar and the greying of
    a page that reruns transitions of 0.1 to 1 s): a Layers move's rerun faded 60-odd elements frame by frame,
    which took Chromium about a CPU-second beside the new run's first step. Checked after the timed part of
    the page has redrawn it, which must keep the page's style."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 2600})
    start_training(page, url, epochs=1000)
    wait_for(lambda: shown_step(page) > 0, timeout=60)
    redrawn_at = shown_step(page)
    wait_for(lambda: shown_step(page) > redrawn_at, timeout=30)  # a timed redraw
    assert page.evaluate(ANIMATED_ELEMENTS) == []
    page.close()
