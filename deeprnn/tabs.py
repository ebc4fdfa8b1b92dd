"""Each tab's training session, found again by a token in the page's address after a reload.

Streamlit releases a tab's session-scoped resources as soon as its websocket closes: on a reload, and on
any dropped connection, which the browser then reopens. The training process and every run in it had
ended with them, so a reload lost a five-minute run. A released session is now held for HOLD_S, its run
paused (the cores go to other tabs' runs meanwhile), for a page that comes back with its token, which
resumes it; only then is it ended.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .session import SessionError

HOLD_S = float(os.environ.get("DEEPRNN_TAB_HOLD_S", "60"))
# A reload's new page may ask for its token before the server has heard that the old page closed.
HANDOVER_S = 3.0
STARTING_POLL_S = 0.1


@dataclass(frozen=True)
class Tab:
    token: str  # in the page's address, as ?tab=
    session: Any  # a ProcessSession on the page
    returned: bool  # a held session taken back: its runs were there before this page


class _Held:
    """A session whose page went away: its training run paused until a page takes it back."""

    def __init__(self, session, expiry: threading.Timer):
        self.session, self.expiry = session, expiry
        self._lock = threading.Lock()  # a pause under way finishes before the page that takes it back resumes
        self._paused = self._taken = False

    def pause(self) -> None:
        # A run still starting (building its text and model) is paused once it trains: asked before, the pause
        # waits for that, and so would a page that comes back meanwhile (seconds, for the best preset).
        while self.session.snapshot().status == "starting" and not self._taken and not self.expiry.finished.is_set():
            time.sleep(STARTING_POLL_S)
        with self._lock:
            if not self._taken and self.session.snapshot().status == "running":
                self._paused = _answered(self.session.pause)

    def take(self):
        self.expiry.cancel()
        with self._lock:
            self._taken = True
            if self._paused:  # not a run the user had paused
                _answered(self.session.resume)
        return self.session


def _answered(command) -> bool:
    """Whether the session carried out the command; one whose run or training process ended meanwhile
    cannot, and the page shows why."""
    try:
        command()
        return True
    except SessionError:
        return False


class TabSessions:
    """The sessions of the server's open tabs, and of those that went away in the last `hold_s`."""

    def __init__(self, new_session: Callable[[], Any], hold_s: float = HOLD_S, handover_s: float = HANDOVER_S):
        self._new_session, self.hold_s, self.handover_s = new_session, hold_s, handover_s
        self._changed = threading.Condition()
        self._open: set[str] = set()
        self._held: dict[str, _Held] = {}

    def claim(self, token: str | None) -> Tab:
        """The session held under `token`, its run resumed, else a new one under a new token. A token that
        another page still has open (a duplicated tab's address) gets a new session too, once the handover
        wait shows that page is not a reload's old one about to go."""
        with self._changed:
            if token in self._open:
                self._changed.wait_for(lambda: token not in self._open, timeout=self.handover_s)
            held = self._held.pop(token, None) if token not in self._open else None
            if held is None:
                token = secrets.token_urlsafe(9)
            self._open.add(token)
        if held is not None:
            return Tab(token, held.take(), returned=True)
        return Tab(token, self._new_session(), returned=False)

    def release(self, tab: Tab) -> None:
        """The tab went away: pause its run and hold its session, ended unless claimed within `hold_s`.
        Returns at once (Streamlit calls it from its event loop); the pause happens in a thread."""
        expiry = threading.Timer(self.hold_s, self._expire, (tab.token, tab.session))
        expiry.daemon = True  # the training processes end with the server anyway (remote.serve)
        held = _Held(tab.session, expiry)
        with self._changed:
            self._open.discard(tab.token)
            self._held[tab.token] = held
            self._changed.notify_all()
        expiry.start()
        threading.Thread(target=held.pause, name="deeprnn-hold", daemon=True).start()

    def _expire(self, token: str, session) -> None:
        with self._changed:
            held = self._held.get(token)
            if held is None or held.session is not session:
                return  # claimed back meanwhile
            del self._held[token]
        session.close()
