import io
import random
import threading
import time

import pandas as pd
import pytest

from deeprnn import session as session_mod
from deeprnn.cli import main
from deeprnn.history import BoundedHistory
from deeprnn.session import TrainingSession


def wait_for(predicate, timeout=20.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def session():
    s = TrainingSession(report_every_s=0.05, view_every_s=0.2)
    yield s
    s.close()


@pytest.fixture
def config(small_config):
    return small_config.replace(epochs=1000)


def test_start_trains_publishes_metrics_probe_and_samples(session, config):
    session.start(config)
    snap = wait_for(lambda: (s := session.snapshot()).metrics and s.probe and s.samples and s)
    assert snap.status == "running" and snap.step > 0 and snap.tokens > 0 and snap.name == "LSTM x2 h32 lr0.003"
    assert len(snap.probe.hidden) == 2 and snap.probe.hidden[0].shape[1] == 32
    assert snap.probe.cell is not None and len(snap.probe.tokens) == snap.probe.hidden[0].shape[0]
    assert snap.samples.greedy.startswith("time traveller")
    assert snap.device == "cpu" and snap.parameters > 0 and snap.eta > 0


def test_pause_freezes_the_step_counter_and_stop_is_prompt(session, config):
    session.start(config)
    wait_for(lambda: session.snapshot().step > 3)
    session.pause()
    wait_for(lambda: session.snapshot().status == "paused")
    frozen = session.snapshot().step
    time.sleep(0.5)
    assert session.snapshot().step == frozen
    session.resume()
    wait_for(lambda: session.snapshot().step > frozen)
    started = time.monotonic()
    session.stop()
    assert time.monotonic() - started < 2.0
    assert session.snapshot().status == "stopped"


def test_lr_change_lands_at_the_next_step(session, config):
    session.start(config.replace(optimizer="sgd", lr=0.5))
    wait_for(lambda: session.snapshot().step > 2)
    session.set_lr(0.0625)
    snap = wait_for(lambda: (s := session.snapshot()).events and s)
    event = snap.events[-1]
    assert event["kind"] == "lr" and event["value"] == 0.0625
    later = wait_for(lambda: [m for m in session.snapshot().metrics if m["step"] > event["step"]])
    assert all(m["lr"] == 0.0625 for m in later)
    before = [m for m in session.snapshot().metrics if m["step"] <= event["step"]]
    assert before and before[0]["lr"] == 0.5
    run = session._runs[session.snapshot().run_id]
    assert run.trainer.optimizer.param_groups[0]["lr"] == 0.0625
    with pytest.raises(ValueError, match="lr must be"):
        session.set_lr(-1)


def test_worker_exception_surfaces_as_failed_and_session_recovers(session, config, monkeypatch):
    original = session_mod.Trainer.steps

    def broken(self):
        yield None
        raise RuntimeError("boom in the worker")

    monkeypatch.setattr(session_mod.Trainer, "steps", broken)
    session.start(config)
    snap = wait_for(lambda: (s := session.snapshot()).status == "failed" and s)
    assert "boom in the worker" in snap.message
    monkeypatch.setattr(session_mod.Trainer, "steps", original)
    session.start(config)
    wait_for(lambda: session.snapshot().status == "running" and session.snapshot().step > 0)
    assert [s.status for s in session.runs()] == ["failed", "running"]


def test_bad_corpus_fails_with_message(session, config):
    session.start(config.replace(corpus="text", text="   "))
    snap = wait_for(lambda: (s := session.snapshot()).status == "failed" and s)
    assert "empty" in snap.message


def test_divergence_pauses_with_message_and_resumes_with_new_lr(session, config):
    session.start(config.replace(optimizer="sgd", lr=100.0, clip=0, cell="rnn"))
    snap = wait_for(lambda: (s := session.snapshot()).status == "paused" and s)
    assert snap.message.startswith("diverged at step") and "lowered learning rate" in snap.message
    session.set_lr(0.01)
    session.resume()
    wait_for(lambda: session.snapshot().status == "running" and session.snapshot().step > snap.step)


def test_starting_again_keeps_the_old_run_and_history_is_capped(config):
    s = TrainingSession(max_runs=3, report_every_s=0.05)
    try:
        ids = [s.start(config.replace(layers=n)) for n in (1, 2, 3, 4)]
        runs = s.runs()
        assert [r.run_id for r in runs] == ids[1:]
        assert [r.status for r in runs][:2] == ["stopped", "stopped"] or all(
            r.status in ("stopped", "failed", "starting") for r in runs[:2])
        s.delete_run(ids[1])
        assert [r.run_id for r in s.runs()] == ids[2:]
        s.clear_runs()
        assert s.runs() == [] and s.snapshot().status == "idle"
    finally:
        s.close()


def test_export_csv_and_checkpoint_for_the_cli(session, config, tmp_path, capsys):
    run_id = session.start(config.replace(epochs=2))
    wait_for(lambda: session.snapshot().status == "finished")
    frame = pd.read_csv(io.StringIO(session.export_csv(run_id)))
    assert {"step", "ppl", "val_ppl", "lr"} <= set(frame.columns) and frame["val_ppl"].notna().sum() == 2
    path = tmp_path / "exported.pt"
    path.write_bytes(session.export_checkpoint(run_id))
    assert main(["generate", "--checkpoint", str(path), "--length", "7"]) == 0
    assert capsys.readouterr().out.startswith("time traveller")
    best = tmp_path / "best.pt"
    best.write_bytes(session.export_checkpoint(run_id, best=True))
    assert main(["train", "--resume", str(best), "--epochs", "3"]) == 0


def test_history_stays_bounded_over_a_million_points():
    history = BoundedHistory(recent=1000, archive=1000)
    for step in range(1_000_000):
        history.append(step)
    kept = history.records()
    assert len(kept) <= 2000 and history.total == 1_000_000
    assert list(kept[-1000:]) == list(range(999_000, 1_000_000))  # recent points exact
    assert kept[0] < 10_000 and list(kept) == sorted(kept)  # the start of the curve survives


def test_concurrent_commands_never_deadlock_or_leak_threads(config):
    baseline = threading.active_count()
    s = TrainingSession(report_every_s=0.05, view_every_s=0.2)
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
    s.close()
    assert errors == []
    wait_for(lambda: threading.active_count() == baseline, timeout=10)
    assert sum(1 for r in s.runs() if r.active) == 0


def test_worker_cap_answers_too_many_runs(config, monkeypatch):
    monkeypatch.setattr(session_mod, "_worker_slots", threading.BoundedSemaphore(1))
    first, second = TrainingSession(), TrainingSession()
    try:
        first.start(config)
        with pytest.raises(session_mod.SessionError, match="too many runs on this server"):
            second.start(config)
        first.stop()
        second.start(config)  # the slot is free again
        wait_for(lambda: second.snapshot().step > 0)
    finally:
        first.close()
        second.close()


def test_two_sessions_train_at_once(config):
    a, b = TrainingSession(report_every_s=0.05), TrainingSession(report_every_s=0.05)
    try:
        a.start(config)
        b.start(config.replace(cell="gru"))
        wait_for(lambda: a.snapshot().step > 5 and b.snapshot().step > 5)
        assert a.snapshot().status == b.snapshot().status == "running"
    finally:
        a.close()
        b.close()


def test_a_page_run_keeps_a_run_directory_when_asked(session, config, tmp_path):
    from deeprnn.rundir import read_run_dir
    session.start(config.replace(epochs=2), run_dir=tmp_path / "page-run")
    wait_for(lambda: session.snapshot().status == "finished")
    watched = read_run_dir(tmp_path / "page-run")
    live = session.snapshot()
    assert watched.status == "finished" and watched.step == live.step
    assert [r["step"] for r in watched.metrics] == [r["step"] for r in live.metrics]
    assert len(watched.probe.hidden) == 2 and watched.samples is not None
    assert main(["generate", "--checkpoint", str(tmp_path / "page-run" / "checkpoint.pt"), "--length", "3"]) == 0
