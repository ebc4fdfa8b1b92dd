"""ProcessSession: a TrainingSession in a training process of its own, for the page's server.

Why a process: in the server's process the training thread shares one GIL with Streamlit's event
loop and script runs. Every torch call gives the GIL up and waits to get it back, so the server's
Python slowed training by 10-20% however light the page was made (bench/results/dashboard-overhead.md).
In its own process the run has a GIL to itself.

The child runs an ordinary TrainingSession. Commands go to it one at a time over a pipe and return
its answer; the server also tells every child, without waiting for one, how many of its tabs' runs
train at once, so that large runs share the cores. It sends each run's Snapshot whenever the run publishes a new one, so reading
(`snapshot`, `runs`) never waits on the child: the server keeps the latest of each.

A tab gets its process at its first Start. Importing torch takes seconds, so one spare process is
started ahead while some open tab has none yet: a first Start does not wait for the import, and tabs
that never train share that one spare instead of holding a process (about 400 MB) each.
"""
from __future__ import annotations

import collections
import itertools
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

from .config import RunConfig
from .session import (COMMAND_TIMEOUT_S, STOP_TIMEOUT_S, SessionError, TrainingSession, ViewSettings,
                      live_sessions, metrics_frame, release_worker_slot, take_worker_slot)
from .snapshot import IDLE, Snapshot

PUBLISH_EVERY_S = 0.1  # how often the child looks for new snapshots to send
# A command's answer may wait for the child's start (importing torch takes seconds on a busy
# machine) and for a checkpoint of a large model.
ANSWER_TIMEOUT_S = 120.0
# The commands the child carries out; reading needs none of them.
COMMANDS = frozenset({"start", "wait_for_first_point", "pause", "resume", "stop", "set_lr", "set_clip",
                      "set_views", "share_cores", "delete_run", "clear_runs", "export_checkpoint", "close"})
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class ProcessSession:
    """TrainingSession's interface, with the training in a child process of its own from the first start."""

    def __init__(self, max_runs: int = 12, view_every_s: float = 2.0, report_every_s: float = 0.5):
        self._options = {"max_runs": max_runs, "view_every_s": view_every_s, "report_every_s": report_every_s}
        self.max_runs = max_runs
        self._mirror = threading.Lock()  # guards what the child sent; held only briefly
        self._order: list[int] = []  # the child's runs, oldest first
        self._current = 0  # the run the child's snapshot() shows; 0: none
        self._snapshots: dict[int, Snapshot] = {}
        self._configs: dict[int, RunConfig] = {}  # sent when new, not with every snapshot
        self._lost: collections.OrderedDict[int, Snapshot] = collections.OrderedDict()  # runs of ended children
        self._calls = threading.RLock()  # one command at a time
        self._slot = threading.Lock()
        self._holds_slot, self._starting = False, 0
        self._child: _Child | None = None
        self._sharing = threading.Lock()  # the count below and the child it was told to, changed together
        self._runs_training = 1  # the server's runs training at once, as last told (share_cores)
        self._counted = False  # whether the last count of them counted this session's run
        self._views: dict = {}  # every view setting sent: a training process started later gets them too
        live_sessions.add(self)
        _spare.wait(self)  # now, so that the import is done by the time the user presses Start

    # --- reading: from the mirror, never waiting on the child -------------------------------------
    def snapshot(self) -> Snapshot:
        """The active run's latest snapshot, else the newest run's, else IDLE."""
        with self._mirror:
            current = self._snapshots.get(self._current)
        if current is not None:
            return current
        runs = self.runs()
        return runs[-1] if runs else IDLE

    def runs(self) -> list[Snapshot]:
        with self._mirror:
            return [*self._lost.values(), *(self._snapshots[i] for i in self._order)]

    def run_snapshot(self, run_id: int) -> Snapshot | None:
        with self._mirror:
            return self._snapshots.get(run_id) or self._lost.get(run_id)

    def export_csv(self, run_id: int) -> str:
        return metrics_frame(self.run_snapshot(run_id)).to_csv(index=False)

    @property
    def views(self) -> dict:
        """Every view setting sent so far: a page that comes back to this session (a reload) shows them."""
        return dict(self._views)

    @property
    def pid(self) -> int | None:
        """The training process's id, while it runs."""
        child = self._child
        return child.process.pid if child and child.process.poll() is None else None

    # --- commands ----------------------------------------------------------------------------------
    def start(self, config: RunConfig, run_dir=None) -> int:
        """Begin a run in the training process (taken or started if there is none yet, or it ended); see
        TrainingSession.start."""
        with self._slot:  # the server-wide cap counts sessions with an active run, as in-process
            if not self._holds_slot:
                take_worker_slot()
                self._holds_slot = True
            self._starting += 1
        self._run_changed()
        try:
            return self._call("start", config, run_dir)
        finally:
            with self._slot:
                self._starting -= 1
            self._run_changed()

    def wait_for_first_point(self, timeout: float) -> None:
        self._call("wait_for_first_point", timeout)

    def pause(self, timeout: float = COMMAND_TIMEOUT_S) -> None:
        self._call("pause", timeout)

    def resume(self, timeout: float = COMMAND_TIMEOUT_S) -> None:
        self._call("resume", timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._call("stop", timeout)

    def set_lr(self, lr: float) -> None:
        self._call("set_lr", lr)

    def set_clip(self, clip: float) -> None:
        self._call("set_clip", clip)

    def set_views(self, **changes) -> None:
        """See TrainingSession.set_views; kept for the first training process and any later one, so that
        a prefix typed before the first Start, or before a crashed process's successor, still applies."""
        ViewSettings.check(changes)
        self._views.update(changes)
        self._call("set_views", **changes)

    def share_cores(self, runs_training: int) -> None:
        """Tell the training process how many of the server's runs train at once (see
        TrainingSession.share_cores); a process started later is told before its first run."""
        with self._sharing:
            self._runs_training = runs_training
            if self._child is not None and self._child.alive:
                self._child.tell("share_cores", runs_training)

    def delete_run(self, run_id: int) -> None:
        with self._mirror:
            lost = self._lost.pop(run_id, None)
        if lost is None:
            self._call("delete_run", run_id)

    def clear_runs(self) -> None:
        with self._mirror:
            self._lost.clear()
        self._call("clear_runs")

    def export_checkpoint(self, run_id: int, best: bool = False) -> bytes:
        with self._mirror:
            lost = run_id in self._lost
        if lost:
            raise SessionError(f"run {run_id}'s weights ended with its training process; only its curves are left")
        return self._call("export_checkpoint", run_id, best)

    def close(self) -> None:
        """Stop every run and end the training process (the page calls this when its tab goes away)."""
        with self._calls:
            _spare.leave(self)
            child, self._child = self._child, None
            if child is None:
                return
            child.closing = True
            try:
                child.ask("close", (), {}, STOP_TIMEOUT_S * 3)
            except SessionError:
                pass  # it is ended below either way
            child.end()

    # --- the child --------------------------------------------------------------------------------
    def _call(self, command: str, *args, **kwargs):
        """Carry out a command in the training process, which is started if there is none (a start
        only: other commands have nothing to act on in a new process)."""
        with self._calls:
            if self._child is None or not self._child.alive:
                if command != "start":
                    return None
                self._spawn()
            return self._child.ask(command, args, kwargs, ANSWER_TIMEOUT_S)

    def _spawn(self) -> None:
        if self._child is not None:  # an ended child: its runs must move to the lost ones first
            self._child.reader.join()
        with self._mirror:
            known = [*self._lost, *self._order]
        options = {**self._options, "first_run_id": max(known, default=0) + 1}  # ids stay unique
        try:
            child = _spare.take(self)
        except OSError as err:  # no process to be had (limits, memory)
            raise SessionError(f"could not start a training process: {err}") from None
        child.bind(options, self._receive, self._lose)  # its options first: they are its first message
        with self._sharing:
            self._child = child
            child.tell("share_cores", self._runs_training)
        if self._views:
            self._child.ask("set_views", (), self._views, ANSWER_TIMEOUT_S)

    def _receive(self, state) -> None:
        """Take the child's news: the order of its runs, its current run, and changed snapshots."""
        order, current, changed = state
        with self._mirror:
            for run_id, snapshot in changed.items():
                if snapshot.config is None:
                    snapshot = replace(snapshot, config=self._configs.get(run_id))
                else:
                    self._configs[run_id] = snapshot.config
                self._snapshots[run_id] = snapshot
            self._order, self._current = list(order), current
            for run_id in set(self._snapshots) - set(order):  # deleted, or forgotten as too old
                del self._snapshots[run_id]
                self._configs.pop(run_id, None)  # an uploaded text in it can be megabytes
        self._run_changed()

    def _lose(self, child: _Child) -> None:
        """The child ended: keep its runs' curves, and say so where a run was still active."""
        why = None if child.closing else f"the training process ended unexpectedly ({child.exit_description()})"
        with self._mirror:
            for run_id in self._order:
                snapshot = self._snapshots[run_id]
                if snapshot.active:
                    snapshot = replace(snapshot, status="failed" if why else "stopped", message=why)
                self._lost[run_id] = snapshot
            while len(self._lost) > self.max_runs:
                self._lost.popitem(last=False)
            self._order, self._current, self._snapshots, self._configs = [], 0, {}, {}
        self._run_changed()

    def _run_changed(self) -> None:
        """After a start, news from the child, or its end: free the server's slot once no run is active,
        and count the runs training again once this one started or stopped computing."""
        with self._slot:
            if self._holds_slot and not self._starting and not self.snapshot().active:
                release_worker_slot()
                self._holds_slot = False
        if self._training != self._counted:
            _share_cores()

    @property
    def _training(self) -> bool:
        """Whether this session's run is computing: starting or running (a paused run leaves the cores)."""
        return bool(self._starting) or self.snapshot().status in ("starting", "running")


_counting = threading.Lock()  # one count at a time, so that the last one told is the latest


def _share_cores() -> None:
    """Tell every tab's training process how many of the server's runs train at once: each large run
    then trains on its share of the cores (session.torch_threads_for)."""
    with _counting:
        sessions = [s for s in list(live_sessions) if isinstance(s, ProcessSession)]
        for session in sessions:
            session._counted = session._training
        runs = sum(session._counted for session in sessions)
        for session in sessions:
            session.share_cores(max(runs, 1))


class _Spare:
    """At most one training process started ahead of need, kept while some open session has not
    had a process yet, for the next one that starts a run."""

    def __init__(self):
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._waiting: weakref.WeakSet = weakref.WeakSet()  # open sessions without a process yet

    def wait(self, session: ProcessSession) -> None:
        with self._lock:
            self._waiting.add(session)
            self._start()

    def leave(self, session: ProcessSession) -> None:
        """A session closed; with none left waiting, the spare goes too, so that a server whose tabs
        are all closed holds no training process."""
        with self._lock:
            self._waiting.discard(session)
            if not self._waiting and self._child is not None:
                self._child.dismiss()
                self._child = None

    def take(self, session: ProcessSession) -> _Child:
        """The spare, or a new process if it is gone (OSError when none can be started); a new spare
        follows if other sessions still wait."""
        with self._lock:
            self._waiting.discard(session)
            if not self._ready():
                self._child = _Child()
            child, self._child = self._child, None
            if self._waiting:
                self._start()
            return child

    def _start(self) -> None:
        """Start the spare if there is none; without a process to be had, a take says why."""
        if not self._ready():
            try:
                self._child = _Child()
            except OSError:
                self._child = None

    def _ready(self) -> bool:
        return self._child is not None and self._child.alive


_spare = _Spare()


class _Child:
    """One training process and the thread that reads what it sends, once a session binds it."""

    def __init__(self):
        ours, theirs = socket.socketpair()
        code = f"from deeprnn.remote import serve; serve({theirs.fileno()})"
        path = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        # A session of its own: Linux's autogroups share the CPU between sessions before threads, so
        # the server's threads no longer take turns with the training thread as its equals
        # (bench/results/dashboard-overhead.md, session 11). The run still ends with the server: the
        # pipe closes.
        self.process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()], env=env,
                                        start_new_session=True)
        theirs.close()
        self.connection = Connection(ours.detach())
        self.answers: queue.Queue = queue.Queue()
        self.call_ids = itertools.count(1)
        self.closing = False
        self.sending = threading.Lock()  # commands and tells come from different threads
        self.reader = threading.Thread(target=self._read, name="deeprnn-child-reader", daemon=True)

    def bind(self, options: dict, on_state, on_end) -> None:
        """Give the process its session's options and start reading what it sends."""
        self.on_state, self.on_end = on_state, on_end
        try:
            self.connection.send(options)
        except OSError:
            pass  # it has ended: the reader finds out and says so
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and not self.connection.closed

    def ask(self, command: str, args: tuple, kwargs: dict, timeout: float):
        """Send a command and wait for its answer; an answer to an earlier command that timed out is
        dropped."""
        call_id = next(self.call_ids)
        deadline = time.monotonic() + timeout
        try:
            with self.sending:
                self.connection.send((call_id, command, args, kwargs))
            while True:
                answered, value, error = self.answers.get(timeout=max(deadline - time.monotonic(), 0))
                if answered in (call_id, None):
                    break
        except (OSError, ValueError):
            raise SessionError(f"the training process has ended ({self.exit_description()})") from None
        except queue.Empty:
            raise SessionError("the training process did not answer; try again") from None
        if error is not None:
            raise error
        return value

    def tell(self, command: str, *args) -> None:
        """Send a command that gets no answer (call id 0), and so never waits on the process."""
        try:
            with self.sending:
                self.connection.send((0, command, args, {}))
        except (OSError, ValueError):
            pass  # it has ended: the reader finds out and says so

    def _read(self) -> None:
        try:
            while True:
                kind, *body = self.connection.recv()
                if kind == "state":
                    self.on_state(body[0])
                else:
                    call_id, value, error, state = body
                    self.on_state(state)
                    self.answers.put((call_id, value, error))
        except (EOFError, OSError):
            pass
        self.process.wait()
        self.connection.close()
        self.on_end(self)
        self.answers.put((None, None, SessionError(f"the training process has ended ({self.exit_description()})")))

    def dismiss(self) -> None:
        """End a process no session has taken: it holds nothing, so it is killed, not asked."""
        self.process.kill()
        self.process.wait()
        self.connection.close()

    def end(self) -> None:
        """Wait for the process to leave (killing it if it will not) and for its runs to be kept."""
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.reader.join()

    def exit_description(self) -> str:
        code = self.process.poll()
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}" + (
                ", which is how the kernel ends a process when the machine runs out of memory: a smaller model or "
                "minibatch may fit" if code == -signal.SIGKILL else "")
        return f"exit code {code}"


# --- in the child ----------------------------------------------------------------------------------
def serve(fd: int) -> None:
    """The training process: wait, torch imported, for a session's options; then carry out its
    commands until it closes or the server goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in the server's terminal is the server's to handle
    connection = Connection(fd)
    try:
        options = connection.recv()
    except (EOFError, OSError):
        return  # a spare whose server went away
    session = TrainingSession(**options)
    outbox = _Outbox(connection, session)
    threading.Thread(target=outbox.publish_forever, name="deeprnn-publisher", daemon=True).start()
    while True:
        try:
            call_id, command, args, kwargs = connection.recv()
        except (EOFError, OSError):
            session.close()  # the server went away
            return
        value, error = None, None
        try:
            if command not in COMMANDS:
                raise SessionError(f"unknown command {command}")
            value = getattr(session, command)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - every failure goes back to the caller
            error = _portable(err)
        if call_id:  # 0: a tell, which nobody waits for
            outbox.answer(call_id, value, error)
        if command == "close":  # runs stopped and answered: skip the interpreter's slow teardown of torch
            os._exit(0)


class _Outbox:
    """What the child sends: answers, and snapshots that changed since they were last sent."""

    def __init__(self, connection: Connection, session: TrainingSession):
        self.connection, self.session = connection, session
        self.lock = threading.Lock()
        self.sent: dict[int, Snapshot] = {}  # what the server has of each run, config included
        self.last: tuple = ((), 0)

    def answer(self, call_id: int, value, error) -> None:
        with self.lock:
            try:
                self.connection.send(("answer", call_id, value, error, self._news(force=True)))
            except OSError:
                pass  # the server went away; the next read says so

    def publish_forever(self) -> None:
        while True:
            time.sleep(PUBLISH_EVERY_S)
            with self.lock:
                news = self._news(force=False)
                if news is None:
                    continue
                try:
                    self.connection.send(("state", news))
                except OSError:
                    return

    def _news(self, force: bool):
        """(run ids, current run id, changed snapshots), or None when nothing changed. A run's
        config travels only when it is new (a rate change makes a new one): an uploaded text in it
        can be megabytes."""
        runs = self.session.runs()
        order, current = tuple(s.run_id for s in runs), self.session.snapshot().run_id
        changed = {}
        for s in runs:
            previous = self.sent.get(s.run_id)
            if previous is not s:
                config_sent = previous is not None and s.config is previous.config
                changed[s.run_id] = replace(s, config=None) if config_sent else s
        if not changed and (order, current) == self.last and not force:
            return None
        self.sent = {s.run_id: s for s in runs}
        self.last = (order, current)
        return order, current, changed


def _portable(err: Exception) -> Exception:
    """The error itself if it survives the pipe, else a SessionError with its message."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any exception class that cannot be rebuilt
        return SessionError(str(err) or type(err).__name__)
