"""The page's session: the same commands and snapshots as TrainingSession, with the training in a
process of its own, which may die without taking the curves with it."""
import io
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from deeprnn.config import ConfigError
from deeprnn import remote as remote_mod
from deeprnn.remote import ProcessSession
from deeprnn.session import SessionError

from pageserver import child_pids, stat_fields
from repo import ROOT
from support import wait_for


@pytest.fixture
def remote():
    s = ProcessSession(report_every_s=0.05, view_every_s=0.2)
    yield s
    s.close()


def test_runs_train_in_their_own_process_and_commands_answer_from_it(remote, config):
    run_id = remote.start(config)
    snap = wait_for(lambda: (s := remote.snapshot()).step > 5 and s.probe and s.samples and s)
    assert remote.pid not in (None, os.getpid())
    assert os.getsid(remote.pid) == remote.pid  # a session, so a scheduling group, of its own
    assert not [t for t in threading.enumerate() if t.name.startswith("deeprnn-run")]  # no worker here
    assert snap.run_id == run_id and snap.config == config and snap.name == "LSTM x2 h32 lr0.003"

    remote.pause()
    assert remote.snapshot().status == "paused"  # as soon as the command returns
    remote.set_lr(0.01)  # applied by the run between steps, as in-process
    wait_for(lambda: any(e["kind"] == "lr" and e["value"] == 0.01 for e in remote.snapshot().events))
    assert remote.snapshot().config.lr == 0.01  # a changed config comes across too
    remote.resume()
    assert remote.snapshot().status == "running"
    with pytest.raises(ConfigError, match="lr must be > 0") as refused:  # the config's own error and message
        remote.set_lr(-1)
    assert refused.value.field == "lr"

    payload = torch.load(io.BytesIO(remote.export_checkpoint(run_id)), weights_only=False)
    assert payload["config"]["hidden"] == 32 and payload["model"]
    assert "val_ppl" in remote.export_csv(run_id)


def test_a_killed_training_process_keeps_the_curves_and_the_next_start_works(remote, config):
    first = remote.start(config)
    wait_for(lambda: remote.snapshot().step > 5)
    os.kill(remote.pid, signal.SIGKILL)
    lost = wait_for(lambda: (s := remote.run_snapshot(first)).status == "failed" and s)
    assert lost.message.startswith("the training process ended unexpectedly (killed by SIGKILL, which is how the "
                                   "kernel ends a process when the machine runs out of memory") and lost.metrics
    with pytest.raises(SessionError, match="ended with its training process"):
        remote.export_checkpoint(first)

    second = remote.start(config.replace(cell="gru"))
    assert second > first
    wait_for(lambda: remote.snapshot().step > 5)
    assert [r.run_id for r in remote.runs()] == [first, second]
    assert remote.snapshot().name.startswith("GRU")


def test_view_settings_reach_every_training_process_even_those_started_after_them(remote, config):
    """The page's prefix can be typed before the first Start, and stays on screen after a training
    process dies: the process that a later Start begins must write from it too."""
    remote.set_views(prefix="the machine")  # no training process yet
    remote.start(config)
    wait_for(lambda: (s := remote.snapshot()).samples and s.samples.greedy.startswith("the machine "))
    os.kill(remote.pid, signal.SIGKILL)
    wait_for(lambda: remote.snapshot().status == "failed")
    successor = remote.start(config)
    wait_for(lambda: (s := remote.snapshot()).run_id == successor and s.samples
             and s.samples.greedy.startswith("the machine "))
    for name in ("colour", "check"):  # not a setting, nor the settings' own method
        with pytest.raises(SessionError, match=f"unknown view setting {name}"):
            remote.set_views(**{name: "red"})


def test_a_large_run_gives_up_cores_to_another_tabs_run_while_it_trains(config):
    # 1 x 512 at batch 32 is as large as the best preset's layers: alone, it trains on all cores. Two
    # runs on two threads each on 2 cores trained at less than half the speed of one thread each.
    large = config.replace(layers=1, hidden=512, batch=32, steps=4, precision="fp32")
    tabs = [ProcessSession(report_every_s=0.05, view_every_s=0.2) for _ in range(2)]
    try:
        tabs[0].start(large)
        alone = wait_for(lambda: tabs[0].snapshot().metrics and torch_threads(tabs[0]))
        if alone < 2:
            pytest.skip("torch trains on one thread on this machine")
        tabs[1].start(config)
        wait_for(lambda: torch_threads(tabs[0]) == alone // 2)
        tabs[1].pause()  # a paused run computes nothing: the large run takes the cores back
        wait_for(lambda: torch_threads(tabs[0]) == alone)
        tabs[1].resume()
        wait_for(lambda: torch_threads(tabs[0]) == alone // 2)
        tabs[1].stop()
        wait_for(lambda: torch_threads(tabs[0]) == alone)
    finally:
        for tab in tabs:
            tab.close()


def torch_threads(session: ProcessSession) -> int:
    """The threads the run trains on, as its device label says ("cpu, 2 threads")."""
    return int(session.snapshot().device.rsplit(", ", 1)[1].split()[0])


def test_close_stops_the_run_and_ends_the_process(remote, config):
    remote.start(config)
    wait_for(lambda: remote.snapshot().step > 0)
    pid = remote.pid
    remote.close()
    assert remote.pid is None and not os.path.exists(f"/proc/{pid}")  # ended and reaped
    assert remote.snapshot().status == "stopped" and remote.snapshot().metrics  # the curves stay


def test_tabs_that_never_train_share_one_spare_process_which_the_first_start_takes(config, monkeypatch):
    monkeypatch.setattr(remote_mod, "_spare", remote_mod._Spare())
    before = set(child_pids(os.getpid()))
    tabs = [ProcessSession() for _ in range(3)]
    (spare,) = set(child_pids(os.getpid())) - before  # one process for three tabs, torch importing
    assert all(tab.pid is None for tab in tabs)

    tabs[0].start(config)
    assert tabs[0].pid == spare  # the first start took it
    wait_for(lambda: tabs[0].snapshot().step > 0)
    (next_spare,) = set(child_pids(os.getpid())) - before - {spare}  # two tabs still wait: a new spare
    tabs[1].start(config)
    assert tabs[1].pid == next_spare
    (last_spare,) = set(child_pids(os.getpid())) - before - {spare, next_spare}  # for the third tab
    for tab in tabs:
        tab.close()
    assert not any(_running(pid) for pid in (spare, next_spare, last_spare))  # no tab left to wait for it


def test_no_process_to_be_had_is_a_clean_refusal_at_start(config, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(remote_mod, "_spare", remote_mod._Spare())  # none left by an earlier test
    s = ProcessSession()  # the page still loads
    with pytest.raises(SessionError, match="could not start a training process"):
        s.start(config)
    assert s.snapshot().status == "idle" and s.pid is None
    s.close()


def test_a_server_that_dies_leaves_no_training_process_behind(tmp_path):
    """The training process reads its commands from the server; when the server is killed, the pipe
    closes and the run stops there too, instead of training on for nobody."""
    script = tmp_path / "server.py"
    script.write_text(
        "import time\n"
        "from deeprnn.config import RunConfig\n"
        "from deeprnn.remote import ProcessSession\n"
        "s, idle = ProcessSession(), ProcessSession()\n"  # idle: a tab that has not trained, with a spare
        "s.start(RunConfig(max_tokens=4000, hidden=16, epochs=1000, device='cpu'))\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(120)\n")
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    trainer_pid = int(server.stdout.readline())
    children = child_pids(server.pid)
    assert trainer_pid in children and len(children) == 2  # the training process and the spare
    server.kill()
    server.wait()
    wait_for(lambda: not any(_running(pid) for pid in children), timeout=30)


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting for a parent to reap it."""
    try:
        return stat_fields(pid)[0] != "Z"
    except OSError:
        return False
