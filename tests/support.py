"""Helpers the test modules share: waiting, driving AppTest, and watching the page's server."""
import json
import time

from pageserver import cpu_seconds, process_status


def wait_for(predicate, timeout=20.0, interval=0.02):
    """The first truthy value of `predicate()` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


# --- AppTest -----------------------------------------------------------------------------------
def rerun_until(at, predicate, timeout=40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        if predicate(at):
            return
        time.sleep(0.5)
    raise AssertionError("the page never showed it")


def figures(at):
    """The page's figures as plotly JSON: those of its in-place charts (deeprnn/webchart.py), and of
    st.plotly_chart where the page falls back to it."""
    in_place = [json.loads(json.loads(c.proto.json)) for c in at.get("bidi_component")
                if c.proto.component_name == "deeprnn_chart"]
    return in_place + [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def button(at, label):
    return next(b for b in at.button if b.label == label)


def title(at):
    return next((m.value for m in at.markdown if m.value.startswith("### ")), "")


# --- the server process behind a real browser ------------------------------------------------------
def thread_count(pid: int) -> int:
    return process_status(pid)[1]


def idle_within(pid: int, seconds: float) -> bool:
    """Whether the server settles to under 0.25 CPU seconds per second within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = cpu_seconds([pid])
        time.sleep(2)
        if cpu_seconds([pid]) - before < 0.5:
            return True
    return False


def shown_step(page) -> int:
    """The step the page's progress line shows ("epoch 0 / 5 · step 1,234 · ...")."""
    text = page.locator("[data-testid=stProgress]").first.inner_text()
    return int(text.split("step ")[1].split(" ")[0].replace(",", ""))
