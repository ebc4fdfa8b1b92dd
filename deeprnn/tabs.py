"""Each tab's training session, found again by a token in the page's address after a reload.

Streamlit releases a tab's session-scoped resources as soon as its websocket closes: on a reload, and on
any dropped connection, which the browser then reopens. The training process and every run in it had
ended with them, so a reload lost a five-minute run. A released session is now held for HOLD_S, still
training, for a page that comes back with its token; only then is it ended.
"""
from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable

HOLD_S = float(os.environ.get("DEEPRNN_TAB_HOLD_S", "60"))
# A reload's new page may ask for its token before the server has heard that the old page closed.
HANDOVER_S = 3.0


@dataclass(frozen=True)
class Tab:
    token: str  # in the page's address, as ?tab=
    session: Any  # a ProcessSession on the page
    returned: bool  # a held session taken back: its runs were there before this page


class TabSessions:
    """The sessions of the server's open tabs, and of those that went away in the last `hold_s`."""

    def __init__(self, new_session: Callable[[], Any], hold_s: float = HOLD_S, handover_s: float = HANDOVER_S):
        self._new_session, self.hold_s, self.handover_s = new_session, hold_s, handover_s
        self._changed = threading.Condition()
        self._open: set[str] = set()
        self._held: dict[str, tuple[Any, threading.Timer]] = {}

    def claim(self, token: str | None) -> Tab:
        """The session held under `token`, else a new one under a new token. A token that another page
        still has open (a duplicated tab's address) gets a new session too, once the handover wait shows
        that page is not a reload's old one about to go."""
        with self._changed:
            if token in self._open:
                self._changed.wait_for(lambda: token not in self._open, timeout=self.handover_s)
            held = self._held.pop(token, None) if token not in self._open else None
            if held is not None:
                session, expiry = held
                expiry.cancel()
                self._open.add(token)
                return Tab(token, session, returned=True)
            token = secrets.token_urlsafe(9)
            self._open.add(token)
        return Tab(token, self._new_session(), returned=False)

    def release(self, tab: Tab) -> None:
        """The tab went away: hold its session, training on, and end it unless claimed within `hold_s`.
        Returns at once (Streamlit calls it from its event loop)."""
        expiry = threading.Timer(self.hold_s, self._expire, (tab.token, tab.session))
        expiry.daemon = True  # the training processes end with the server anyway (remote.serve)
        with self._changed:
            self._open.discard(tab.token)
            self._held[tab.token] = (tab.session, expiry)
            self._changed.notify_all()
        expiry.start()

    def _expire(self, token: str, session) -> None:
        with self._changed:
            held = self._held.get(token)
            if held is None or held[0] is not session:
                return  # claimed back meanwhile
            del self._held[token]
        session.close()
