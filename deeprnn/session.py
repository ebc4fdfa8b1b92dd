"""TrainingSession: a worker thread per run, steered by commands, watched through Snapshots.

The caller (the page's script thread, the CLI, a test) never trains and never waits for a step:
commands go into the run's queue and are applied between minibatches; the worker publishes an
immutable Snapshot by swapping one reference, so readers need no lock.
"""
from __future__ import annotations

import atexit
import collections
import copy
import itertools
import os
import queue
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from types import SimpleNamespace

import pandas as pd
import torch

from .checkpoint import checkpoint_bytes
from .config import RunConfig
from .device import autocast, describe_out_of_memory
from .generate import continue_texts
from .history import BoundedHistory
from .introspect import GATES, layer_saturation, trace
from .model import count_parameters
from .rundir import RunDirWriter
from .snapshot import IDLE, Probe, Samples, Snapshot, run_name
from .train import Diverged, Trainer

# The book's first words. Short, because the browser's cost of redrawing a heatmap grows with its
# character labels: with 140 characters, Chromium took a core of the two (bench/results/dashboard-overhead.md).
DEFAULT_PROBE = "the time traveller for so it will be convenient to speak of him"
DEFAULT_PREFIX = "time traveller"
# The longest probe text and prefix the views take. Every probe character is a column of every heatmap:
# a 20,000-character probe made each figure 13 MB and 1.6 s of the server's time, and its views took 3 s
# of the training process's at each refresh; 500 columns are already 2 pixels each on a laptop's screen.
MAX_TEXT_CHARS = {"probe_text": 500, "prefix": 200}
STOP_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 2.0  # how long pause and resume wait for the run to acknowledge
VIEWS_TIMEOUT_S = 10.0  # how long a paused run's new views are waited for (an 8 x 512 model's take over a second)
# The views (probe, gates, samples) may take at most this share of a run's time: a model whose
# views take longer than that refreshes them less often than every `view_every_s`.
VIEW_SHARE = 0.03
MAX_WORKERS = int(os.environ.get("DEEPRNN_MAX_WORKERS", "4"))
# Torch's threads for every run of a session (DEEPRNN_TORCH_THREADS); unset or 0: chosen per run by
# `torch_threads_for`.
TORCH_THREADS = int(os.environ.get("DEEPRNN_TORCH_THREADS", "0"))
ALL_THREADS = torch.get_num_threads()  # torch's default, the machine's cores, before any run changes it
# Multiply-adds of one layer's recurrent product per time step (batch x gates x hidden^2) from which a
# run trains on all cores: on 2 cores beside the page, the best preset (2 x 512, batch 32: 33.5
# million) trained 29% faster on two threads than on one, 2 x 384 (18.9 million) 4% faster, and
# 2 x 256 and the fast preset slower (bench/results/time-to-quality.md, sessions 14 and 15).
ALL_THREADS_FROM = 25_000_000


def torch_threads_for(config: RunConfig, runs_training: int = 1) -> int:
    """Torch's threads for a run: one, which leaves the page's browser and server a core of their own
    on a 2-core machine, unless the model's products are large enough to gain from all cores; then
    the cores shared among the runs training at once: on 2 cores two best-preset runs trained at 273
    tokens/s each on two threads each, and at 5,188 on one (bench/results/two-tabs.md)."""
    if TORCH_THREADS:
        return TORCH_THREADS
    product = config.batch * len(GATES[config.cell]) * config.hidden ** 2
    return max(ALL_THREADS // max(runs_training, 1), 1) if product >= ALL_THREADS_FROM else 1


def view_thread() -> ThreadPoolExecutor:
    """The thread that computes a session's views, on one torch thread.

    With more, the views form a second OpenMP team beside the run's; once GNU OpenMP manages more
    threads than there are cores, its threads stop spinning between parallel regions and sleep, so
    every one of the run's products waits for a wake-up. The best preset on 2 threads then kept 1.6
    cores busy, not 2, and trained at 75% of the CLI's speed (bench/results/dashboard-overhead.md)."""
    return ThreadPoolExecutor(1, thread_name_prefix="deeprnn-views", initializer=torch.set_num_threads,
                              initargs=(1,))


class SessionError(RuntimeError):
    pass


@dataclass
class ViewSettings:
    """What the views show; changed by commands, read by the worker."""

    probe_text: str = DEFAULT_PROBE
    prefix: str = DEFAULT_PREFIX
    temperature: float = 0.8
    length: int = 100  # characters of each sample, about: 100 words made a column taller than the page
    use_best: bool = False

    @classmethod
    def check(cls, changes: dict) -> None:
        """SessionError for a name that is not a view setting, or a probe text or prefix too long."""
        known = {field.name for field in fields(cls)}
        for key, value in changes.items():
            if key not in known:
                raise SessionError(f"unknown view setting {key}")
            if key in MAX_TEXT_CHARS and len(value) > MAX_TEXT_CHARS[key]:
                raise SessionError(f"the {key.replace('_', ' ')} is {len(value):,} characters; "
                                   f"the views take at most {MAX_TEXT_CHARS[key]}")


class _Run:
    """A run's mutable parts. Only its worker thread touches `trainer` while the thread lives."""

    def __init__(self, run_id: int, config: RunConfig, views: ViewSettings, run_dir=None):
        self.id, self.config, self.run_dir = run_id, config, run_dir
        self.commands: queue.Queue = queue.Queue()
        self.views = ViewSettings(**vars(views))
        self.snapshot = Snapshot(run_id, run_name(config), config, "starting")
        self.trainer: Trainer | None = None
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()  # guards the trainer once the worker has ended
        self.ended = False  # set when the worker leaves: views still queued for it are skipped
        self.writer: RunDirWriter | None = None  # the run directory's, once the worker has made it
        self.runs_training = 1  # runs training on the machine at once, this one included (share_cores)
        self._tickets = threading.Lock()
        self.sent = self.applied = 0  # the last command's ticket, and that of the last one the worker applied

    def tell(self, command: str, value=None) -> int:
        """Queue a command for the worker; returns its ticket, which `applied` reaches once it is applied."""
        with self._tickets:
            self.sent += 1
            self.commands.put((self.sent, command, value))
            return self.sent

    def wait_applied(self, ticket: int, timeout: float) -> None:
        _wait(lambda: self.applied >= ticket or self.ended, timeout)


_worker_slots = threading.BoundedSemaphore(MAX_WORKERS)
# Every session of this process, in-process or in a training process of its own (remote.py).
live_sessions: weakref.WeakSet = weakref.WeakSet()


def take_worker_slot() -> None:
    """Claim one of this server's training slots, or refuse with a message for the page."""
    if not _worker_slots.acquire(blocking=False):
        raise SessionError(f"too many runs on this server (at most {MAX_WORKERS} train at once); "
                           "stop a run in another tab or try again shortly")


def release_worker_slot() -> None:
    _worker_slots.release()


@atexit.register
def close_all_sessions() -> None:
    """Stop every worker of this process (at exit, and for tests that drive the page)."""
    for session in list(live_sessions):
        session.close()


class TrainingSession:
    """One user's runs: at most one active at a time, the last `max_runs` kept for comparison."""

    def __init__(self, max_runs: int = 12, view_every_s: float = 2.0, report_every_s: float = 0.5,
                 first_run_id: int = 1):
        self.max_runs, self.view_every_s, self.report_every_s = max_runs, view_every_s, report_every_s
        self._runs: collections.OrderedDict[int, _Run] = collections.OrderedDict()
        self._ids = itertools.count(first_run_id)
        self._lock = threading.Lock()  # guards _runs and _active_id, held only briefly
        self._control = threading.RLock()  # serialises start and stop: one active run at most
        self._active_id: int | None = None
        self.runs_training = 1  # see share_cores
        self.views = ViewSettings()
        # One view thread per session, shared by its runs: a restart storm queues views, never threads.
        self._view_thread = view_thread()
        live_sessions.add(self)

    # --- commands ------------------------------------------------------------------------------
    def start(self, config: RunConfig, run_dir=None) -> int:
        """Begin a run; an active one is stopped first and kept in the history.

        With `run_dir`, the run also keeps a run directory there (see rundir.py)."""
        with self._control:
            self._stop_active(STOP_TIMEOUT_S)
            take_worker_slot()
            run = _Run(next(self._ids), config, self.views, run_dir)
            run.thread = threading.Thread(target=self._work, args=(run,), name=f"deeprnn-run-{run.id}",
                                          daemon=True)
            with self._lock:  # with share_cores: the run starts with the latest count, or is told it
                run.runs_training = self.runs_training
                self._runs[run.id] = run
                self._active_id = run.id
                self._forget_old_runs()
            run.thread.start()
            return run.id

    def wait_for_first_point(self, timeout: float) -> None:
        """Return once the active run has a report point or has ended, or after `timeout` seconds.

        The page waits here after starting a run, so the rerun that follows draws the run with its
        first point instead of leaving it to the next refresh of the live views, up to two seconds later."""
        self._wait_until(lambda snapshot: snapshot.metrics or not snapshot.active, timeout)

    def pause(self, timeout: float = COMMAND_TIMEOUT_S) -> None:
        """Ask the active run to pause; returns once it has (its current step done) and its views show the
        weights it stopped at, or after `timeout` seconds for the pause and VIEWS_TIMEOUT_S for the views.

        Waiting lets the page's rerun after the click draw the button as "Resume" and the paused views at
        once: a paused page has no timers."""
        self._send("pause")
        self._wait_until(lambda snapshot: snapshot.status == "paused" or not snapshot.active, timeout)
        self._wait_while_paused(VIEWS_TIMEOUT_S)

    def resume(self, timeout: float = COMMAND_TIMEOUT_S) -> None:
        self._send("resume")
        self._wait_until(lambda snapshot: snapshot.status != "paused" or not snapshot.active, timeout)

    def _wait_until(self, done, timeout: float) -> None:
        _wait(lambda: done(self.snapshot()), timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the active run; returns once its worker has ended and its views show the weights it stopped
        at, or after `timeout` seconds without them. A stopped run had kept the views of its last periodic
        refresh, up to 45 s of training old; a stop on the way to a new run (start) computes none."""
        run = self._end_active(timeout)
        if run is not None and run.ended and run.snapshot.status == "stopped":  # not one that failed or finished
            self._refresh_ended(run, {})

    def _end_active(self, timeout: float = STOP_TIMEOUT_S):
        with self._control:
            return self._stop_active(timeout)

    def _stop_active(self, timeout: float):
        """The active run, told to stop and waited for up to `timeout` seconds; None if there was none."""
        with self._lock:
            run = self._runs.get(self._active_id)
            self._active_id = None
        if run is not None:
            run.tell("stop")
            run.thread.join(timeout)
        return run

    def set_lr(self, lr: float):
        RunConfig(lr=lr)  # validates: the same message as anywhere else
        self._send("lr", lr)
        self._wait_while_paused(COMMAND_TIMEOUT_S)  # the mark on the curve

    def set_clip(self, clip: float):
        RunConfig(clip=clip)
        self._send("clip", clip)
        self._wait_while_paused(COMMAND_TIMEOUT_S)

    def set_views(self, **changes):
        """Probe text, sample prefix, temperature, length or use_best; the views refresh soon (at once for
        a paused run: this returns with them)."""
        ViewSettings.check(changes)
        for key, value in changes.items():
            setattr(self.views, key, value)
        self._send("views", dict(changes))
        self._wait_while_paused(VIEWS_TIMEOUT_S)
        with self._lock:
            finished = [r for r in self._runs.values() if r.thread is not None and not r.thread.is_alive()]
        for run in finished[-1:]:  # the latest ended run has no worker: refresh it here
            self._refresh_ended(run, changes)

    def share_cores(self, runs_training: int) -> None:
        """How many runs train on this machine at once (the page's server counts its tabs' runs): a
        run large enough for all cores takes its share of them instead (torch_threads_for), from its
        next step."""
        with self._lock:
            self.runs_training = runs_training
            run = self._runs.get(self._active_id)
            if run is not None:
                run.runs_training = runs_training
                run.tell("cores", runs_training)

    def delete_run(self, run_id: int) -> None:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            return
        if run_id == self._active_id:
            self._end_active()
        with self._lock:
            self._runs.pop(run_id, None)

    def clear_runs(self) -> None:
        self._end_active()
        with self._lock:
            self._runs.clear()

    def close(self) -> None:
        """Stop every worker (the page calls this when its tab goes away)."""
        self._end_active()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            if run.thread is not None and run.thread.is_alive():
                run.tell("stop")
                run.thread.join(STOP_TIMEOUT_S)
        self._view_thread.shutdown(wait=False, cancel_futures=True)
        self._view_thread = view_thread()  # no thread until used

    # --- reading ---------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The active run's latest snapshot, else the newest run's, else IDLE."""
        with self._lock:
            run = self._runs.get(self._active_id) or (next(reversed(self._runs.values())) if self._runs else None)
        return run.snapshot if run else IDLE

    def runs(self) -> list[Snapshot]:
        with self._lock:
            return [run.snapshot for run in self._runs.values()]

    def run_snapshot(self, run_id: int) -> Snapshot | None:
        with self._lock:
            run = self._runs.get(run_id)
        return run.snapshot if run else None

    def export_csv(self, run_id: int) -> str:
        return metrics_frame(self.run_snapshot(run_id)).to_csv(index=False)

    def export_checkpoint(self, run_id: int, best: bool = False) -> bytes:
        """A checkpoint file's bytes (the CLI can resume and generate from it)."""
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise SessionError(f"no run {run_id}")
        reply: queue.Queue = queue.Queue()
        if run.thread is not None and run.thread.is_alive():
            run.tell("checkpoint", (best, reply))
            try:
                payload = reply.get(timeout=30)
            except queue.Empty:
                raise SessionError("the run did not answer; try again") from None
        else:
            with run.lock:
                payload = _checkpoint_payload(run.trainer, best) if run.trainer else None
        if payload is None:
            raise SessionError("this run has no weights to export yet")
        return checkpoint_bytes(payload)

    # --- internals -------------------------------------------------------------------------------
    def _send(self, command: str, value=None) -> None:
        with self._lock:
            run = self._runs.get(self._active_id)
        if run is not None:
            run.tell(command, value)

    def _wait_while_paused(self, timeout: float) -> None:
        """Wait, if the active run is paused, until it has applied what was sent to it: a paused run
        applies a command at once, and the page, which has no timers while a run is paused, draws what
        the snapshot holds when the call returns."""
        with self._lock:
            run = self._runs.get(self._active_id)
        if run is not None and run.snapshot.status == "paused":
            run.wait_applied(run.sent, timeout)

    def _forget_old_runs(self) -> None:
        while len(self._runs) > self.max_runs:
            oldest = next(iter(self._runs))
            if oldest == self._active_id:
                break
            del self._runs[oldest]

    def _work(self, run: _Run) -> None:
        try:
            _Worker(run, self._view_thread, self.view_every_s, self.report_every_s).loop()
        finally:
            release_worker_slot()

    def _refresh_ended(self, run: _Run, changes: dict) -> None:
        with run.lock:
            if run.trainer is None:
                return
            for key, value in changes.items():
                setattr(run.views, key, value)
            started = time.perf_counter()
            probe, samples = compute_views(run.trainer, run.views)
            if run.writer:
                run.writer.write_views(probe, samples)
            old = run.snapshot
            run.snapshot = _replace(old, probe=probe, samples=samples,
                                    view_seconds=old.view_seconds + time.perf_counter() - started)


def _wait(condition, timeout: float) -> None:
    """Return once condition() holds, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def _replace(snapshot: Snapshot, **changes) -> Snapshot:
    return Snapshot(**{**snapshot.__dict__, **changes})


def _checkpoint_payload(trainer: Trainer, best: bool) -> dict | None:
    payload = trainer.checkpoint()
    if best:
        if trainer.best is None:
            return None
        payload["model"] = trainer.best["weights"]
    return payload


CAST_SAMPLES_PAST_BYTES = 16 * 2**20  # a model's float32 weights: 3 x 512 and up


@torch.no_grad()
def compute_views(trainer: Trainer, views: ViewSettings) -> tuple[Probe, Samples]:
    """The probe (states and gates per layer) and fresh samples, from current or best weights."""
    model = trainer.model
    if views.use_best and trainer.best is not None:
        model = _model_with(trainer, trainer.best["weights"])
    ids = trainer.codec.encode(views.probe_text) or [0]
    traces = trace(model, ids)
    tokens = tuple(trainer.codec.vocab.idx_to_token[i] for i in ids)
    probe = Probe(trainer.step, tokens,
                  tuple(t.hidden.cpu().numpy() for t in traces),
                  tuple(t.cell.cpu().numpy() for t in traces) if traces[0].cell is not None else None,
                  tuple({k: v.cpu().numpy() for k, v in t.gates.items()} for t in traces), trainer.codec.separator)
    # A sample reads every weight for each of its hundred tokens. Weights past a CPU's cache make that bound
    # by memory, and cast once to the precision the run trains in (bf16 where the hardware has it) they
    # are half as much to read: the views of 8 x 512 took 742 ms instead of 1,262 on one thread
    # (bench/results/view-cost.md). A small model's weights stay in cache, and the casts cost more than they
    # save: with every view cast, 2 x 128's took 56 ms instead of 28.
    cast = trainer.precision if count_parameters(model) * 4 > CAST_SAMPLES_PAST_BYTES else None
    with autocast(trainer.device, cast, cache_weights=True):
        greedy, sampled = continue_texts(model, trainer.codec, views.prefix, trainer.codec.tokens_for(views.length),
                                         (0.0, views.temperature), seed=trainer.step)
    samples = Samples(trainer.step, views.prefix, views.temperature, greedy, sampled,
                      views.use_best and trainer.best is not None)
    return probe, samples


def _timed_views(run: _Run, source, views: ViewSettings):
    """Views and their cost, or None for a run that ended while they waited their turn."""
    if run.ended:
        return None
    started = time.perf_counter()
    return compute_views(source, views), time.perf_counter() - started


def saturation_records(probe: Probe, cell: str) -> list[dict]:
    """One row per layer and gate: the mean fraction of (unit, step) pairs left / right saturated."""
    rows = []
    for layer, (gates, hidden) in enumerate(zip(probe.gates, probe.hidden), start=1):
        for gate, (left, right) in layer_saturation(cell, gates, hidden).items():
            rows.append({"step": probe.step, "layer": layer, "gate": gate,
                         "left": float(left.mean()), "right": float(right.mean())})
    return rows


def _model_with(trainer: Trainer, weights: dict):
    model = copy.deepcopy(trainer.model)
    model.load_state_dict(weights)
    return model


class _Worker:
    """The loop of one run's thread: apply commands, train a step, publish, refresh views."""

    def __init__(self, run: _Run, view_thread: ThreadPoolExecutor, view_every_s: float, report_every_s: float):
        self.run, self.view_every_s, self.report_every_s = run, view_every_s, report_every_s
        self.paused = self.stopped = False
        self.message: str | None = None
        self.status = "starting"
        self.trainer: Trainer | None = None
        self.writer: RunDirWriter | None = None
        self.written_probe, self.checkpointed_epoch = None, 0
        self.started = time.perf_counter()
        self.paused_seconds, self.paused_at = 0.0, None
        self.probe = self.samples = None
        self.view_seconds = 0.0
        self.saturation = BoundedHistory(recent=2000, archive=2000)
        self.last_report = self.last_views = 0.0
        self.view_interval, self.last_view_cost = view_every_s, 0.0
        self.view_thread = view_thread
        self.pending = None  # the views being computed

    def loop(self) -> None:
        # In the run's own thread: OpenMP's thread count is each thread's own.
        torch.set_num_threads(torch_threads_for(self.run.config, self.run.runs_training))
        try:
            self.trainer = Trainer(self.run.config)
            self.run.trainer = self.trainer
            if self.run.run_dir:
                self.writer = self.run.writer = RunDirWriter(self.run.run_dir, self.trainer)
            self.status = "running"
            # No views yet: on a large model they would share the cores with the first step and
            # delay the first point; the first report starts them.
            self.publish()
            self.train()
        except Exception as err:  # any failure ends the run visibly, never silently
            self.status, self.message = "failed", _describe(err)
            self.publish()
        finally:
            self.run.commands = _ClosedQueue()
            self.run.ended = True  # a stop does not wait for views

    def train(self) -> None:
        steps = self.trainer.steps()
        while not self.stopped:
            self.apply_commands(block=self.paused)
            if self.paused or self.stopped:
                if self.stopped:
                    break
                continue
            now = time.perf_counter()
            try:
                report = next(steps)
                if report is None and now - self.last_report >= self.report_every_s:
                    report = self.trainer.report()
            except StopIteration:
                self.status = "finished"
                break
            except Diverged as err:
                self.pause_with(str(err))
                steps = self.trainer.steps()  # resuming restarts the epoch from the kept weights
                continue
            if report is not None:
                self.last_report = now
                if now - self.last_views >= self.view_interval:
                    self.refresh_views()
                self.publish()
        if self.stopped:
            self.status = "stopped"
        self.report_pending()
        if not self.stopped:  # a stop returns at once; a finished run shows its final weights
            self.refresh_views(wait=True)
        self.publish()

    def report_pending(self) -> None:
        try:
            self.trainer.report()
        except Diverged as err:
            self.message = str(err)

    def pause_with(self, message: str) -> None:
        self.message = message
        self.paused, self.status, self.paused_at = True, "paused", time.perf_counter()
        self.refresh_views(wait=True)
        self.publish()

    def apply_commands(self, block: bool) -> None:
        while True:
            try:
                ticket, command, value = self.run.commands.get(block=block, timeout=None)
            except queue.Empty:
                return
            block = False
            self.apply(command, value)
            self.run.applied = ticket

    def apply(self, command: str, value) -> None:
        if command == "pause" and not self.paused:
            self.report_pending()
            self.paused, self.status, self.paused_at = True, "paused", time.perf_counter()
            self.publish()  # paused now; the views of the weights it stopped at follow
            self.refresh_views(wait=True)
        elif command == "resume" and self.paused:
            self.paused, self.status, self.message = False, "running", None
            self.paused_seconds += time.perf_counter() - self.paused_at
        elif command == "stop":
            self.stopped = True
            return
        elif command == "lr":
            self.trainer.set_lr(value)
        elif command == "clip":
            self.trainer.set_clip(value)
        elif command == "cores":
            self.trainer.use_threads(torch_threads_for(self.run.config, value))
        elif command == "views":
            # A new temperature is marked on the curve like a rate change; the page sends every setting
            # with each change, and a new prefix had marked the same temperature again.
            if value.get("temperature", self.run.views.temperature) != self.run.views.temperature:
                self.trainer.events.append({"step": self.trainer.step, "kind": "temperature",
                                            "value": value["temperature"]})
            for key, v in value.items():
                setattr(self.run.views, key, v)
            self.refresh_views(wait=True)
        elif command == "checkpoint":
            best, reply = value
            reply.put(_checkpoint_payload(self.trainer, best))
            return
        self.publish()

    def refresh_views(self, wait: bool = False) -> None:
        """Compute the views on a copy of the weights in the view thread, one refresh at a time, so
        training goes on meanwhile; `wait` blocks for fresh views of the current weights (used when
        training is halted anyway: a pause, the end, new view settings).

        The copy takes the worker a few milliseconds; the view thread's cost, GIL included, paces
        the refreshes so that they take at most VIEW_SHARE of the run."""
        if wait and self.pending is not None:
            self.pending.result()
            self.collect()
        if self.pending is None:
            source = SimpleNamespace(model=copy.deepcopy(self.trainer.model), codec=self.trainer.codec,
                                     step=self.trainer.step, best=self.trainer.best, device=self.trainer.device,
                                     precision=self.trainer.precision)
            self.pending = self.view_thread.submit(_timed_views, self.run, source, ViewSettings(**vars(self.run.views)))
        if wait:
            self.pending.result()
        self.collect()

    def collect(self) -> None:
        """Take finished views, if any, and pace the next refresh by what they cost."""
        if self.pending is None or not self.pending.done():
            return
        (self.probe, self.samples), cost = self.pending.result()
        self.pending = None
        for record in saturation_records(self.probe, self.trainer.config.cell):
            self.saturation.append(record)
        self.view_seconds += cost
        self.last_views = time.perf_counter()
        # the smaller of the last two costs: one slow refresh (the first, cold one) sets no pace
        self.view_interval = max(self.view_every_s, min(cost, self.last_view_cost) / VIEW_SHARE)
        self.last_view_cost = cost

    def publish(self) -> None:
        """Build a new Snapshot and swap it in: readers see the old one or the new one, whole."""
        t = self.trainer
        if t is None:
            self.run.snapshot = _replace(self.run.snapshot, status=self.status, message=self.message)
            return
        self.collect()
        paused_now = time.perf_counter() - self.paused_at if self.paused and self.paused_at else 0.0
        elapsed = time.perf_counter() - self.started - self.paused_seconds - paused_now
        speed = t.recent_tokens_per_s()
        if self.writer:  # first, so that a reader who sees the new snapshot finds the directory as new
            self.write_run_dir()
        self.run.snapshot = Snapshot(
            run_id=self.run.id, name=self.run.snapshot.name, config=t.config, status=self.status,
            message=self.message, epoch=t.epoch, step=t.step, tokens=t.tokens, tokens_per_s=speed,
            elapsed=elapsed, eta=_eta(t, speed), device=t.device_label, parameters=t.parameter_count,
            metrics=t.metrics.records(), evals=t.evals.records(), events=tuple(t.events),
            best=None if t.best is None else {k: v for k, v in t.best.items() if k != "weights"},
            probe=self.probe, samples=self.samples, saturation=self.saturation.records(),
            notices=t.notices + ((self.writer.problem,) if self.writer and self.writer.problem else ()),
            view_seconds=self.view_seconds, train_seconds=t.train_seconds)

    def write_run_dir(self) -> None:
        """Mirror the run into its directory: new metric lines always, views when fresh, a checkpoint
        once per epoch and at the end."""
        fresh = self.probe is not self.written_probe
        ended = self.status in ("finished", "stopped", "failed")
        checkpoint = ended or self.trainer.epoch != self.checkpointed_epoch
        self.writer.update(self.trainer, self.status, self.probe if fresh else None, self.samples if fresh else None,
                           checkpoint=checkpoint, message=self.message)
        self.written_probe, self.checkpointed_epoch = self.probe, self.trainer.epoch


def _eta(trainer: Trainer, tokens_per_s: float) -> float | None:
    if not tokens_per_s:
        return None
    remaining = max(trainer.config.epochs * trainer.tokens_per_epoch - trainer.tokens, 0)
    return remaining / tokens_per_s


def _describe(err: Exception) -> str:
    if message := describe_out_of_memory(err):
        return message
    text = str(err) or type(err).__name__
    return text if isinstance(err, ValueError) else f"{type(err).__name__}: {text}"


class _ClosedQueue(queue.Queue):
    """Replaces a finished run's queue: commands sent to an ended run are dropped."""

    def put(self, item, block=True, timeout=None):
        pass


def metrics_frame(snapshot: Snapshot | None) -> pd.DataFrame:
    """One row per report point with the held-out perplexity where it was measured."""
    if snapshot is None or not snapshot.metrics:
        return pd.DataFrame(columns=["step", "epoch", "tokens", "seconds", "loss", "ppl", "lr", "val_ppl"])
    train = pd.DataFrame(snapshot.metrics)
    if not snapshot.evals:
        return train.assign(val_ppl=float("nan"))
    evals = pd.DataFrame(snapshot.evals)[["step", "val_loss", "val_ppl"]]
    return train.merge(evals, on="step", how="outer").sort_values("step").reset_index(drop=True)
