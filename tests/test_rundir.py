"""A watched run directory is read as it grows: only new metric lines are parsed, and what a resumed run
rewrites, a replaced file, or a half-written line read as the whole file would be."""
import errno
import json
import os
import shutil

import numpy as np
import pytest

from deeprnn import rundir
from deeprnn.cli import main
from deeprnn.config import RunConfig
from deeprnn.rundir import read_metrics, read_run_dir
from deeprnn.train import Trainer

TINY = ["--max-tokens", "3000", "--hidden", "16", "--embedding", "8", "--batch", "4", "--steps", "8", "--epochs", "1",
        "--device", "cpu", "--report-every", "5", "--eval-every", "20"]


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(path)]) == 0
    return path


class CountingJson:
    """json, counting the lines parsed."""

    def __init__(self):
        self.parsed = 0

    def loads(self, text):
        self.parsed += 1
        return json.loads(text)

    def __getattr__(self, name):
        return getattr(json, name)


def append(run_dir, text: str) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(text)


def train_rows(first_step: int, count: int) -> str:
    return "".join(json.dumps({"kind": "train", "step": step, "tokens": 100 * step, "seconds": 0.1 * step, "loss": 1.0,
                               "ppl": 2.7}) + "\n"
                   for step in range(first_step, first_step + count))


def steps(snapshot) -> list[int]:
    return [row["step"] for row in snapshot.metrics]


def test_watching_a_growing_run_parses_only_the_lines_it_has_not_read(run_dir, monkeypatch):
    first = read_run_dir(run_dir)
    last = steps(first)[-1]
    counting = CountingJson()
    monkeypatch.setattr(rundir, "json", counting)
    append(run_dir, train_rows(last + 1, 3))
    grown = read_run_dir(run_dir)
    assert counting.parsed <= 3 + 3  # the new lines, and config.json, status.json and samples.json
    assert steps(grown) == [*steps(first), last + 1, last + 2, last + 3]
    assert grown.metrics[:-3] == first.metrics and grown.evals == first.evals


def test_a_file_given_for_a_run_directory_is_named_as_a_file(run_dir):
    """It was told "no such directory", though the path was there."""
    with pytest.raises(rundir.RunDirError, match="config.json is a file, not a run directory: name the folder"):
        read_run_dir(run_dir / "config.json")


@pytest.mark.parametrize("status", ['[]', '"running"', '{"step": "x"}', '{"status": 5}', '{"notices": 7}',
                                    '{"notices": [1]}', '{"best": {"step": 3}}', '{"tokens_per_s": "fast"}'])
def test_a_status_file_not_as_deeprnn_writes_it_is_named_not_drawn(run_dir, status):
    """Read as it was, a list raised AttributeError in the page, and a step of "x" failed in the status line."""
    (run_dir / "status.json").write_text(status)
    with pytest.raises(rundir.RunDirError, match="status.json"):
        read_run_dir(run_dir)


@pytest.mark.parametrize("samples", ['null', '{"step": 1, "greedy": 5}', '{"step": "a", "prefix": "", "temperature": 1, '
                                     '"greedy": "", "sampled": ""}'])
def test_samples_not_as_deeprnn_writes_them_are_named_not_drawn(run_dir, samples):
    (run_dir / "samples.json").write_text(samples)
    with pytest.raises(rundir.RunDirError, match="samples.json"):
        read_run_dir(run_dir)


def test_fields_a_later_version_adds_are_read_past(run_dir):
    for name in ("status.json", "samples.json"):
        (run_dir / name).write_text(json.dumps({**json.loads((run_dir / name).read_text()), "added_later": [1]}))
    assert read_run_dir(run_dir).samples.greedy


PROBE_DAMAGE = {
    "a layer's states of one dimension": lambda arrays: arrays.update(hidden_0=arrays["hidden_0"][:, 0]),
    "fewer steps than tokens": lambda arrays: arrays.update(hidden_0=arrays["hidden_0"][:3]),
    "a gate of text": lambda arrays: arrays.update(gate_1_forget=np.full(arrays["hidden_1"].shape, "a")),
    "a gate missing": lambda arrays: arrays.pop("gate_0_output"),
    "a layer missing": lambda arrays: [arrays.pop(k) for k in list(arrays) if k.endswith("_1") or "_1_" in k],
}


@pytest.mark.parametrize("damage", PROBE_DAMAGE)
def test_a_probe_that_does_not_fit_its_run_is_named_not_drawn(run_dir, damage):
    """Drawn as it was, each but the missing layer raised in the page's heatmaps, gates or unit finder; with
    a layer missing, the page showed a 2-layer run as one of 1 layer."""
    with np.load(run_dir / "probe.npz") as data:
        arrays = dict(data)
    PROBE_DAMAGE[damage](arrays)
    np.savez(run_dir / "probe.npz", **arrays)
    with pytest.raises(rundir.RunDirError, match="probe.npz"):
        read_run_dir(run_dir)


@pytest.mark.parametrize("cut", [0, 2, 4, 0.5, -10])
def test_a_damaged_probe_file_is_named_not_raised(run_dir, cut):
    """Cut short, a probe file raised BadZipFile or EOFError past the page's message, into an exception."""
    data = (run_dir / "probe.npz").read_bytes()
    (run_dir / "probe.npz").write_bytes(data[:int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(rundir.RunDirError, match="probe.npz"):
        read_run_dir(run_dir)


@pytest.mark.parametrize("line", ["[1]", '"train"', "7", '{"kind": "train", "step": 9999}', '{"kind": "eval", "step": 9999}',
                                  '{"kind": "event", "event": 5}', '{"kind": "event", "event": {"kind": "lr"}}',
                                  '{"kind": "train", "step": 9999, "tokens": 1, "seconds": 1, "loss": 1, "ppl": 3, '
                                  '"grad_ih": [1]}'])
def test_a_metrics_line_that_is_not_a_record_is_named_not_drawn(run_dir, line):
    """Drawn as they were, the records with fields missing raised in the page's curves or gradient view."""
    append(run_dir, line + "\n")
    with pytest.raises(rundir.RunDirError, match="metrics.jsonl"):
        read_run_dir(run_dir)


def test_a_half_written_line_waits_for_its_end(run_dir):
    last = steps(read_run_dir(run_dir))[-1]
    line = train_rows(last + 1, 1)
    append(run_dir, line[:10])
    assert steps(read_run_dir(run_dir))[-1] == last
    append(run_dir, line[10:])
    assert steps(read_run_dir(run_dir))[-1] == last + 1


def test_a_resumed_run_rewriting_steps_reads_as_the_whole_file_does(run_dir):
    before = steps(read_run_dir(run_dir))
    append(run_dir, train_rows(before[2], 4))  # resumed from an earlier checkpoint: steps again
    rewritten = read_run_dir(run_dir)
    assert steps(rewritten) == [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")["train"]]
    assert steps(rewritten) == sorted(set(before) | set(range(before[2], before[2] + 4)))
    assert rewritten.metrics[2]["loss"] == 1.0  # the last of a step wins


def test_a_replaced_metrics_file_is_read_again(run_dir):
    read_run_dir(run_dir)
    replacement = run_dir / "replacement.jsonl"
    replacement.write_text(train_rows(1, 2))
    os.replace(replacement, run_dir / "metrics.jsonl")
    assert steps(read_run_dir(run_dir)) == [1, 2]


def test_a_metrics_file_written_again_in_place_is_read_again(run_dir):
    """As a run directory deleted and written again may get the old file's inode back."""
    metrics = run_dir / "metrics.jsonl"
    read_run_dir(run_dir)
    size = metrics.stat().st_size
    metrics.write_text(train_rows(1000, 300))  # the same inode, and more bytes than before
    assert metrics.stat().st_size > size
    assert steps(read_run_dir(run_dir)) == list(range(1000, 1300))


def test_a_run_directory_that_cannot_be_written_leaves_the_training_going(tmp_path):
    """Deleted while the run trained (or its disk full), it had ended the CLI's run with a traceback and
    nothing saved. Now each failed update says why (once per problem) and the next one tries again,
    with the metric lines that could not be written."""
    trainer = Trainer(RunConfig(max_tokens=3000, hidden=16, embedding=8, batch=4, steps=8, device="cpu",
                                report_every=5))
    steps = trainer.steps()
    problems = []
    writer = rundir.RunDirWriter(tmp_path / "run", trainer, on_problem=problems.append)
    writer.update(trainer, "running")
    shutil.rmtree(tmp_path / "run")
    for _ in range(2):
        for _ in range(10):
            next(steps)
        writer.update(trainer, "running")
    assert problems == [writer.problem] and "No such file or directory" in writer.problem
    (tmp_path / "run").mkdir()  # room again
    writer.update(trainer, "running")
    assert writer.problem is None
    written = read_metrics(tmp_path / "run" / "metrics.jsonl")["train"]
    assert [row["step"] for row in written] == [row["step"] for row in trainer.metrics.records()][-len(written):]
    assert len(written) == 4  # the 4 report points since it was deleted: 20 steps, one every 5


class DiskFullAfter:
    """A file on a disk with `room` bytes (or characters) left: a write stores what fits and fails with
    ENOSPC, as Python's buffered files do when write(2) stops short."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data):
        written = self.file.write(data[:self.room])
        self.room -= written
        if written < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return written

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_disk_that_fills_mid_line_leaves_the_metrics_readable(tmp_path, monkeypatch):
    """A write that stopped part-way through a line had left half a line; the next update's lines followed
    it, and the file no longer read (a watching page showed "could not be read" from then on). Now what a
    failed write stored is taken back, and its lines go with the next update, once."""
    trainer = Trainer(RunConfig(max_tokens=3000, hidden=16, embedding=8, batch=4, steps=8, device="cpu",
                                report_every=5))
    steps = trainer.steps()
    writer = rundir.RunDirWriter(tmp_path / "run", trainer)
    metrics = tmp_path / "run" / "metrics.jsonl"

    def train_and_update():
        for _ in range(10):
            next(steps)
        writer.update(trainer, "running")

    train_and_update()
    trainer.set_lr(0.5)  # an event line too, which the reader keeps every copy of
    monkeypatch.setattr(rundir, "open", lambda *args, **kwargs: DiskFullAfter(open(*args, **kwargs), room=30),
                        raising=False)
    train_and_update()
    assert "No space left on device" in writer.problem
    monkeypatch.delattr(rundir, "open")
    train_and_update()
    assert writer.problem is None
    assert all(json.loads(line) for line in metrics.read_text().splitlines())
    snapshot = read_run_dir(tmp_path / "run")
    assert [row["step"] for row in snapshot.metrics] == [row["step"] for row in trainer.metrics.records()]
    assert snapshot.events == tuple(trainer.events) and len(snapshot.events) == 1


def test_the_cli_trains_on_and_saves_when_its_run_directory_goes(tmp_path, monkeypatch, capsys):
    def gone(self, *args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")
    monkeypatch.setattr(rundir.RunDirWriter, "_write", gone)
    save = tmp_path / "run.pt"
    assert main(["train", *TINY, "--run-dir", str(tmp_path / "run"), "--save", str(save)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: the run directory {tmp_path / 'run'} cannot be written (No such file or "
                        "directory); training goes on"]
    assert save.is_file()
