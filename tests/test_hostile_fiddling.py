"""Fast fiddling: slider storms and commands from many threads leave exactly one active run per
tab, no orphan threads and no exception, whether the session trains in-process or in its own process."""
import random
import threading
import time

import pytest

from deeprnn import session as session_mod
from deeprnn.remote import ProcessSession
from deeprnn.session import TrainingSession

from support import button, rerun_until, thread_count, title, wait_for


def test_fast_fiddling_leaves_one_active_run_and_no_orphan_threads(app):
    button(app, "Start").click().run()
    session = the_page_session()
    wait_for(lambda: session.snapshot().step > 0, timeout=60)
    settled = thread_count(session.pid)  # its training process: a worker, a view thread and the rest
    started = time.monotonic()
    for i in range(50):  # 50 slider changes in about 10 seconds, each restarting the run
        app.slider(key="layers").set_value(1 + i % 4).run()
        time.sleep(max(0.0, started + (i + 1) * 0.2 - time.monotonic()))
    assert not app.exception
    rerun_until(app, lambda at: "LSTM x2" in title(at))
    assert sum(1 for r in session.runs() if r.active) == 1
    deadline = time.monotonic() + 10  # a stopped run's worker may take a moment to end
    while thread_count(session.pid) > settled and time.monotonic() < deadline:
        time.sleep(0.1)
    assert thread_count(session.pid) <= settled


def the_page_session():
    """The page's ProcessSession: the one live session with a training process (earlier tests' sessions
    are closed, though AppTest may still hold them)."""
    (session,) = [s for s in session_mod.live_sessions if getattr(s, "pid", None)]
    return session


@pytest.mark.parametrize("kind", [TrainingSession, ProcessSession])
def test_concurrent_commands_never_deadlock_or_leak_threads(config, kind):
    before = set(threading.enumerate())  # not a count: earlier tests' threads may end meanwhile
    s = kind(report_every_s=0.05, view_every_s=0.2)
    errors = []
    deadline = time.monotonic() + 10

    def fiddle(seed):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            try:
                action = rng.choice(["start", "pause", "resume", "stop", "lr", "snap"])
                if action == "start":
                    s.start(config.replace(layers=rng.randint(1, 2), hidden=rng.choice([8, 16])))
                elif action == "lr":
                    s.set_lr(rng.choice([0.001, 0.01, 0.1]))
                elif action == "snap":
                    s.snapshot(), s.runs()
                else:
                    getattr(s, action)()
            except session_mod.SessionError:
                pass  # the worker cap may answer; that is a clean refusal
            except Exception as err:  # noqa: BLE001 - the test collects anything unexpected
                errors.append(err)
            time.sleep(rng.random() * 0.05)

    threads = [threading.Thread(target=fiddle, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a command thread deadlocked"
    assert sum(1 for r in s.runs() if r.active) <= 1
    s.close()
    assert errors == []
    wait_for(lambda: not set(threading.enumerate()) - before, timeout=10)  # the session's threads ended
    assert sum(1 for r in s.runs() if r.active) == 0
