import io
import shutil
import threading
import time
from dataclasses import replace

import pandas as pd
import pytest
import torch

from deeprnn import controls
from deeprnn import session as session_mod
from deeprnn.cli import main
from deeprnn.config import preset
from deeprnn.model import StackedRNN
from deeprnn.rundir import read_run_dir
from deeprnn.session import TrainingSession
from deeprnn.snapshot import IDLE

from support import wait_for


def test_start_trains_publishes_metrics_probe_and_samples(session, config):
    session.start(config)
    snap = wait_for(lambda: (s := session.snapshot()).metrics and s.probe and s.samples and s)
    assert snap.status == "running" and snap.step > 0 and snap.tokens > 0 and snap.name == "LSTM x2 h32 lr0.003"
    assert len(snap.probe.hidden) == 2 and snap.probe.hidden[0].shape[1] == 32
    assert snap.probe.cell is not None and len(snap.probe.tokens) == snap.probe.hidden[0].shape[0]
    assert snap.samples.greedy.startswith("time traveller")
    assert snap.device.startswith("cpu") and snap.parameters > 0 and snap.eta > 0


def test_a_probe_text_or_prefix_past_its_limit_is_refused_and_one_at_its_limit_is_shown(session, config):
    """Each probe character is a column of every heatmap: 20,000 made each figure 13 MB."""
    session.start(config)
    wait_for(lambda: session.snapshot().probe)
    for key, limit in session_mod.MAX_TEXT_CHARS.items():
        with pytest.raises(session_mod.SessionError, match=f"is {limit + 1:,} characters; the views take at most {limit}"):
            session.set_views(**{key: "a" * (limit + 1)})
        session.set_views(**{key: "a" * limit})
    wait_for(lambda: (s := session.snapshot()).probe and len(s.probe.tokens) == 500 and s.samples.prefix == "a" * 200)


def test_word_samples_are_about_as_many_characters_as_character_samples(session, config):
    """A sample of 100 words made a column taller than the page: both kinds aim at about 100 characters."""
    session.start(config.replace(tokens="word"))
    snap = wait_for(lambda: (s := session.snapshot()).samples and s)
    words = snap.samples.greedy.split()
    assert words[:2] == ["time", "traveller"] and len(words) - 2 == 100 // 6


def test_a_word_runs_probe_keeps_its_separator_live_and_in_its_run_directory(session, config, tmp_path):
    session.start(config.replace(tokens="word", epochs=1), run_dir=tmp_path / "words")
    snap = wait_for(lambda: (s := session.snapshot()).probe and s)
    assert snap.probe.tokens[:2] == ("the", "time") and snap.probe.separator == " "
    wait_for(lambda: session.snapshot().status == "finished")
    assert read_run_dir(tmp_path / "words").probe.separator == " "


def test_waiting_for_the_first_point_returns_once_the_run_has_one(session, config, monkeypatch):
    started = time.monotonic()
    session.wait_for_first_point(timeout=5)  # no run: nothing to wait for
    assert time.monotonic() - started < 0.5

    class SlowToBuild(session_mod.Trainer):
        def __init__(self, *args, **kwargs):
            time.sleep(0.5)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(session_mod, "Trainer", SlowToBuild)
    session.start(config)
    session.wait_for_first_point(timeout=0.1)  # gives up after its timeout
    assert not session.snapshot().metrics
    session.wait_for_first_point(timeout=30)
    assert session.snapshot().metrics and session.snapshot().status == "running"


def test_only_a_large_model_trains_on_all_cores(session, config, monkeypatch):
    monkeypatch.setattr(session_mod, "ALL_THREADS", 2)
    assert session_mod.torch_threads_for(preset("best")) == 2  # 2 x 512: the products gain from two cores
    assert session_mod.torch_threads_for(preset("best", cell="rnn")) == 1  # one gate: a quarter of the work
    assert session_mod.torch_threads_for(preset("fast")) == 1
    for threshold, label in ((1, "cpu, 2 threads"), (10**12, "cpu, 1 thread")):
        monkeypatch.setattr(session_mod, "ALL_THREADS_FROM", threshold)
        session.start(config.replace(precision="fp32"))  # the label then names the threads alone
        assert wait_for(lambda: session.snapshot().metrics and session.snapshot()).device == label
    monkeypatch.setattr(session_mod, "TORCH_THREADS", 2)  # DEEPRNN_TORCH_THREADS decides for every run
    assert session_mod.torch_threads_for(preset("fast")) == 2


def test_a_large_run_trains_on_its_share_of_the_cores_while_other_runs_train(session, config, monkeypatch):
    monkeypatch.setattr(session_mod, "ALL_THREADS", 2)
    monkeypatch.setattr(session_mod, "ALL_THREADS_FROM", 1)  # every model counts as large
    assert [session_mod.torch_threads_for(config, runs) for runs in (1, 2, 3)] == [2, 1, 1]
    session.start(config.replace(precision="fp32"))
    wait_for(lambda: session.snapshot().device == "cpu, 2 threads")
    session.share_cores(2)  # another tab's run begins: this one gives up a core from its next step
    wait_for(lambda: session.snapshot().device == "cpu, 1 thread")
    session.share_cores(1)  # and takes it back once that run has ended
    wait_for(lambda: session.snapshot().device == "cpu, 2 threads")
    session.share_cores(2)
    session.start(config.replace(precision="fp32", lr=1e-3))  # a new run starts with its share
    wait_for(lambda: session.snapshot().metrics and session.snapshot().device == "cpu, 1 thread")


def test_the_page_redraws_on_a_timer_only_while_something_can_change_and_less_often_on_all_cores(monkeypatch):
    monkeypatch.setattr(session_mod, "ALL_THREADS", 2)
    usual, never = {"status": 2.0, "views": 2.0}, {"status": None, "views": None}

    def every_s(status, watching=False, live_views=True, **config):
        return controls.refresh_every_s(replace(IDLE, status=status, config=preset("best", **config)), watching,
                                        live_views)

    assert every_s("running") == every_s("starting") == {"status": 4.0, "views": 4.0}  # 2 x 512: on both cores
    assert every_s("paused") == never  # what the page sends a paused run is applied before the call returns
    assert every_s("running", device="cpu") == {"status": 4.0, "views": 4.0}
    assert every_s("running", hidden=256) == usual  # one thread: the browser has the other core
    assert every_s("running", device="cuda") == usual
    for ended in ("finished", "stopped", "failed"):  # nothing changes but by the user's hand
        assert every_s(ended) == never
    assert controls.refresh_every_s(IDLE) == never
    assert every_s("finished", watching=True) == controls.refresh_every_s(IDLE, watching=True) == usual
    assert every_s("running", live_views=False) == {**never, "status": 2.0}  # the status line counts on alone
    assert every_s("finished", watching=True, live_views=False) == {**never, "status": 2.0}
    assert every_s("paused", live_views=False) == never
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert every_s("running") == usual  # auto picks the GPU


def test_the_page_is_drawn_again_whole_only_when_its_controls_would_change():
    """The live part redraws numbers, texts and charts; the controls are drawn by the page's full runs, which
    it starts when what they are drawn from changes (the sidebar's buttons, the best weights' switch, the
    heatmaps' window slider, the comparison's choices and the export buttons)."""
    from deeprnn.snapshot import Probe
    run = replace(IDLE, run_id=1, name="LSTM x2", config=preset("fast"), status="running", parameters=10)
    structure = controls.page_structure
    short = Probe(step=5, tokens=tuple("time traveller"), hidden=(), cell=None, gates=())
    long = replace(short, tokens=tuple("the time traveller " * 20))  # longer than the heatmaps show at once
    trained = replace(run, step=40, tokens=9000, tokens_per_s=3000.0, elapsed=3.0, metrics=({"step": 1},),
                      probe=short, samples=object())
    later = replace(trained, step=80, tokens=18000, metrics=({"step": 1}, {"step": 2}), probe=replace(short, step=9))
    assert structure(trained, [trained]) == structure(later, [later])  # numbers only
    for changed in (replace(trained, status="paused"), replace(trained, best={"val_ppl": 9.0, "step": 40}),
                    replace(trained, probe=long), replace(trained, run_id=2)):
        assert structure(changed, [run]) != structure(trained, [run])
    assert structure(trained, [run, replace(run, run_id=2)]) != structure(trained, [run])  # a new run
    assert structure(trained, [trained]) != structure(trained, [replace(trained, metrics=())])  # its first point
    assert structure(trained, [replace(trained, status="finished")]) != structure(trained, [trained])


def test_views_keep_to_one_thread_beside_a_run_on_two(session, config, monkeypatch):
    # Views on the run's two threads would form a second OpenMP team beside the run's, and GNU OpenMP's
    # threads would then sleep between the run's products: the best preset trained at 75% of its speed.
    monkeypatch.setattr(session_mod, "ALL_THREADS", 2)
    monkeypatch.setattr(session_mod, "ALL_THREADS_FROM", 1)
    threads = {"views": set(), "run": set()}

    def counting(function, where):
        def counted(*args, **kwargs):
            threads[where].add(torch.get_num_threads())
            return function(*args, **kwargs)
        return counted

    monkeypatch.setattr(session_mod, "compute_views", counting(session_mod.compute_views, "views"))
    monkeypatch.setattr(session_mod.Trainer, "report", counting(session_mod.Trainer.report, "run"))
    session.start(config)
    probed = wait_for(lambda: session.snapshot().probe).step
    wait_for(lambda: session.snapshot().probe.step > probed)  # views refreshed while the run trained
    assert threads == {"views": {1}, "run": {2}}


def test_a_new_runs_views_wait_for_its_first_step(session, config):
    # Views computed beside the first step share the cores with it: on the page the best preset's
    # first point came about 0.7 s later.
    session.start(config)
    assert wait_for(lambda: session.snapshot().probe).step > 0


def test_pause_freezes_the_step_counter_and_stop_is_prompt(session, config):
    session.start(config)
    wait_for(lambda: session.snapshot().step > 3)
    session.pause()
    assert session.snapshot().status == "paused"  # pause returns once the run has paused
    frozen = session.snapshot().step
    time.sleep(0.5)
    assert session.snapshot().step == frozen
    session.resume()
    assert session.snapshot().status == "running"
    wait_for(lambda: session.snapshot().step > frozen)
    started = time.monotonic()
    session.stop()
    assert time.monotonic() - started < 2.0
    assert session.snapshot().status == "stopped"


@pytest.fixture
def viewed_once():
    """A session whose runs refresh their views once, at their first report point: views of any later
    step come from the command under test."""
    session = TrainingSession(report_every_s=0.05, view_every_s=1000)
    yield session
    session.close()


def train_past_the_first_views(session, steps: int = 20) -> int:
    """Wait until the active run is `steps` past its first views; returns their step."""
    first = wait_for(lambda: (s := session.snapshot()).probe and s.samples and s).probe.step
    wait_for(lambda: session.snapshot().step > first + steps)
    return first


def test_a_stopped_runs_views_show_the_weights_it_stopped_at(viewed_once, config, tmp_path):
    """As a finished or paused run's do, on the page and in its run directory; a stopped one had kept the
    views of its last periodic refresh."""
    session = viewed_once
    session.start(config, run_dir=tmp_path / "run")
    first = train_past_the_first_views(session)
    session.stop()
    snap = session.snapshot()
    assert snap.status == "stopped" and snap.probe.step == snap.samples.step == snap.step > first + 20
    watched = read_run_dir(tmp_path / "run")  # its run directory's views too, its status as the stop left it
    assert watched.probe.step == watched.samples.step == snap.step and watched.status == "stopped"
    status = (tmp_path / "run" / "status.json").read_text()
    session.set_views(prefix="the machine")  # an ended run's new views: written, its status untouched
    assert read_run_dir(tmp_path / "run").samples.greedy.startswith("the machine")
    assert (tmp_path / "run" / "status.json").read_text() == status


def test_a_paused_run_applies_what_it_is_sent_before_the_call_returns(viewed_once, config):
    """The page has no timers while a run is paused, so the rerun after a click draws what the snapshot
    holds when the call returns: the views of the weights it stopped at, those of a new prefix or
    temperature, a rate change's mark. They had come a moment later, after the page's redraw."""
    session = viewed_once
    session.start(config)
    first = train_past_the_first_views(session)
    session.pause()
    snap = session.snapshot()
    assert snap.status == "paused" and snap.probe.step == snap.samples.step == snap.step > first + 20
    session.set_views(prefix="the machine", temperature=1.5)
    snap = session.snapshot()
    assert snap.samples.greedy.startswith("the machine") and snap.samples.temperature == 1.5
    session.set_lr(0.01)
    assert session.snapshot().events[-1] == {"step": snap.step, "kind": "lr", "value": 0.01}
    session.set_views(prefix="the time", temperature=1.5)  # as the page sends them: every setting
    assert [e["kind"] for e in session.snapshot().events] == ["temperature", "lr"]  # 1.5 marked once


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
    # The run keeps the name it started with: its curves and the comparison know it by that.
    assert session.snapshot().name == "LSTM x2 h32 lr0.5" and session.snapshot().config.lr == 0.0625
    with pytest.raises(ValueError, match="lr must be"):
        session.set_lr(-1)


def test_clip_and_temperature_changes_are_events_and_reach_the_run_directory(session, config, tmp_path):
    session.start(config, run_dir=tmp_path / "run")
    wait_for(lambda: session.snapshot().step > 2)
    session.set_clip(0.5)
    session.set_views(temperature=1.3)
    snap = wait_for(lambda: (s := session.snapshot()).samples and s.samples.temperature == 1.3 and s)
    assert [(e["kind"], e["value"]) for e in snap.events] == [("clip", 0.5), ("temperature", 1.3)]
    session.stop()
    assert [e["kind"] for e in read_run_dir(tmp_path / "run").events] == ["clip", "temperature"]


def test_a_run_that_runs_out_of_memory_fails_saying_what_to_lower(session, config, monkeypatch):
    def refused(self, *args, **kwargs):  # the CPU allocator's words, as torch raises them
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 22682992640 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(StackedRNN, "forward", refused)
    session.start(config)
    snap = wait_for(lambda: (s := session.snapshot()).status == "failed" and s)
    assert snap.message.startswith("out of memory (it asked for 21.13 GiB at once): ")
    session.stop()  # a stop computes views for a run it stopped, not for one that failed (they would fail too)
    assert session.snapshot().status == "failed"


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


def test_a_page_run_keeps_a_run_directory_when_asked(session, config, tmp_path):
    session.start(config.replace(epochs=2), run_dir=tmp_path / "page-run")
    wait_for(lambda: session.snapshot().status == "finished")
    watched = read_run_dir(tmp_path / "page-run")
    live = session.snapshot()
    assert watched.status == "finished" and watched.step == live.step
    assert [r["step"] for r in watched.metrics] == [r["step"] for r in live.metrics]
    assert len(watched.probe.hidden) == 2 and watched.samples is not None
    assert main(["generate", "--checkpoint", str(tmp_path / "page-run" / "checkpoint.pt"), "--length", "3"]) == 0


def test_a_run_that_does_worse_than_guessing_says_so_on_the_page(session, config):
    session.start(config.replace(lr=1.0))
    snap = wait_for(lambda: (s := session.snapshot()).notices and s)
    assert snap.status == "running" and "the model does worse than knowing nothing" in snap.notices[-1]


def test_a_page_run_whose_run_directory_goes_trains_on_and_says_so(session, config, tmp_path):
    """Its worker had failed at the next write, and the run with it."""
    session.start(config.replace(epochs=1000), run_dir=tmp_path / "page-run")
    wait_for(lambda: session.snapshot().metrics)
    shutil.rmtree(tmp_path / "page-run")
    snap = wait_for(lambda: (s := session.snapshot()).notices and s)
    assert snap.status == "running" and "page-run cannot be written (No such file or directory)" in snap.notices[-1]
    steps = snap.step
    wait_for(lambda: session.snapshot().step > steps)


def test_views_are_computed_on_a_copy_while_training_goes_on(session, config, monkeypatch):
    original, seen = session_mod._timed_views, []

    def slow_views(run, source, views):  # the run it is handed: no race with start() returning
        trainer = run.trainer
        step = trainer.step
        time.sleep(1.0)  # a probe that takes a second: training must not wait for it
        seen.append((source.model is not trainer.model, step, trainer.step, source.step))
        return original(run, source, views)

    monkeypatch.setattr(session_mod, "_timed_views", slow_views)
    session.start(config)
    wait_for(lambda: len(seen) >= 2, timeout=30)
    for is_copy, before, after, probed in seen:
        assert is_copy and after > before  # steps went on during the probe
        assert probed <= before  # the probe shows the weights as they were copied
    assert session.snapshot().probe.step in {probed for *_, probed in seen}


def test_a_large_models_samples_are_written_in_the_precision_it_trains_in(small_config, monkeypatch):
    """Past the CPU's caches a sample is bound by reading the weights, which bf16 halves; a small model's
    stay in float32, which is faster for it. (The samples are not written here: on a CPU without bf16,
    torch's LSTM kernel cannot run under bf16 autocast.)"""
    precisions = []

    def spy(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():  # not an earlier test's view thread
            precisions.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return "time traveller", "time traveller"

    monkeypatch.setattr(session_mod, "continue_texts", spy)
    for hidden in (32, 1024):
        trainer = session_mod.Trainer(small_config.replace(hidden=hidden))
        trainer.precision = torch.bfloat16  # as `auto` chooses where the hardware multiplies bf16
        probe, _ = session_mod.compute_views(trainer, session_mod.ViewSettings())
        assert probe.hidden[0].dtype == "float32"  # the probe's views stay float32 either way
    assert precisions == [None, torch.bfloat16]
