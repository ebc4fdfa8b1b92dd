"""A tab's session outlives a reload: held after its page goes away, taken back by the page's token."""
import threading
import time
from types import SimpleNamespace

import pytest

from deeprnn.config import preset
from deeprnn.controls import config_from_values, initial_values
from deeprnn.tabs import TabSessions

from support import wait_for


class FakeSession:
    """A session whose run trains until paused."""

    def __init__(self):
        self.closed, self.status, self.calls = threading.Event(), "running", []

    def snapshot(self):
        return SimpleNamespace(status=self.status)

    def pause(self):
        self.calls.append("pause")
        if self.status == "starting":
            time.sleep(1)  # as a real run's pause waits for its first step
        self.status = "paused"

    def resume(self):
        self.calls.append("resume")
        self.status = "running"

    def close(self):
        self.closed.set()


@pytest.fixture
def tabs():
    return TabSessions(FakeSession, hold_s=0.5, handover_s=0.5)


def test_a_reloaded_page_takes_back_its_session_and_a_new_one_gets_its_own(tabs):
    first = tabs.claim(None)
    assert not first.returned
    tabs.release(first)  # the old page's websocket closed
    wait_for(lambda: first.session.status == "paused")  # the cores go to other tabs while no page shows it
    back = tabs.claim(first.token)
    assert back.returned and back.session is first.session and back.token == first.token
    assert first.session.status == "running" and first.session.calls == ["pause", "resume"]
    time.sleep(0.8)  # past the hold: taken back, it is not ended
    assert not first.session.closed.is_set()
    other = tabs.claim(None)
    assert other.session is not first.session and other.token != first.token


def test_a_run_the_user_paused_stays_paused_after_a_reload(tabs):
    tab = tabs.claim(None)
    tab.session.status = "paused"
    tabs.release(tab)
    time.sleep(0.1)
    assert tabs.claim(tab.token).session.status == "paused" and tab.session.calls == []


def test_a_run_still_starting_is_paused_once_it_trains_and_a_reload_never_waits_for_it():
    tabs = TabSessions(FakeSession, hold_s=10, handover_s=0.5)
    tab = tabs.claim(None)
    tab.session.status = "starting"  # building its text and model: a pause would wait for it
    tabs.release(tab)
    threading.Timer(0.3, setattr, (tab.session, "status", "running")).start()
    wait_for(lambda: tab.session.status == "paused")
    back = tabs.claim(tab.token)
    assert back.returned and back.session.status == "running"

    again = tabs.claim(None)
    again.session.status = "starting"
    tabs.release(again)
    time.sleep(0.1)  # the hold is watching it start
    asked = time.monotonic()
    back = tabs.claim(again.token)  # the page comes back while it starts
    assert time.monotonic() - asked < 0.5 and back.session.calls == []


def test_a_session_that_no_page_takes_back_ends_after_the_hold(tabs):
    tab = tabs.claim(None)
    tabs.release(tab)
    assert not tab.session.closed.is_set()  # held for a page that comes back
    assert tab.session.closed.wait(2)
    again = tabs.claim(tab.token)  # too late: a new session
    assert not again.returned and again.session is not tab.session


def test_a_duplicated_tabs_address_gets_a_session_of_its_own(tabs):
    tab = tabs.claim(None)
    duplicate = tabs.claim(tab.token)  # the first page is still open: not a reload
    assert not duplicate.returned
    assert duplicate.session is not tab.session and duplicate.token != tab.token


def test_a_reload_that_asks_before_its_old_page_is_let_go_still_gets_its_session(tabs):
    tab = tabs.claim(None)
    threading.Timer(0.2, tabs.release, (tab,)).start()  # the server hears of the old page's close late
    back = tabs.claim(tab.token)
    assert back.returned and back.session is tab.session


@pytest.mark.parametrize("name, changes", [("fast", {}), ("best", {"layers": 3, "lr": 2e-3}),
                                           ("d2l", {"cell": "gru", "hidden": 128}),
                                           ("fast", {"corpus": "text", "text": "a pasted text " * 50})])
def test_a_returning_page_shows_its_latest_runs_controls(name, changes):
    """Start pressed again on the restored controls trains the same config as the run they came from."""
    config = preset(name, **changes)
    views = {"prefix": "the machine", "temperature": 1.3}
    values = initial_values(config, views)
    assert values["preset"] == name and values["prefix"] == "the machine" and values["temperature"] == 1.3
    text = values["pasted"] if values["corpus_source"] == "paste" else None
    assert config_from_values(values, text) == config


def test_a_returning_page_asks_for_a_long_text_again_rather_than_pasting_it():
    values = initial_values(preset("fast", corpus="text", text="word " * 100_000))
    assert values["corpus_source"] == "upload" and values["pasted"] == ""
