"""A run directory: the shared record of a run, written while it trains and readable at any time.

    config.json       the RunConfig
    metrics.jsonl     append-only, one JSON object a line: {"kind": "train"|"eval", ...} or
                      {"kind": "event", "event": {"kind": "lr"|"clip"|"temperature"|"diverged", ...}}
    status.json       counters and state, replaced atomically
    probe.npz         the latest probe (states and gates per layer), replaced atomically
    samples.json      the latest samples, replaced atomically
    checkpoint.pt     the latest checkpoint, replaced atomically (resume with --resume DIR)

Whole files are written beside their target and renamed; metric lines are appended with one write
each, and a reader ignores a last line that has no newline yet, so it never sees half a record.
"""
from __future__ import annotations

import functools
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from .atomic import write_atomically
from .checkpoint import writable_folder
from .config import RunConfig
from .history import BoundedHistory
from .introspect import GATES
from .snapshot import Probe, Samples, Snapshot, run_name
from .train import Trainer

CHECKPOINT = "checkpoint.pt"


class RunDirError(ValueError):
    pass


def _write_json(path: Path, value) -> None:
    write_atomically(path, lambda f: f.write(json.dumps(value).encode()))


class RunDirWriter:
    """Mirrors a Trainer into a run directory; call `update` at report points."""

    def __init__(self, path, trainer: Trainer, on_problem=None):
        self.path = writable_folder(path)
        self.started = time.time()
        _write_json(self.path / "config.json", {k: v for k, v in trainer.config.to_dict().items() if k != "text"})
        self.written = _counts(trainer)  # resuming appends after what the directory already holds
        self.problem: str | None = None  # why the last update could not be written, if it could not
        self.on_problem = on_problem  # called with each new problem

    def update(self, trainer: Trainer, status: str, probe: Probe | None = None, samples: Samples | None = None,
               checkpoint: bool = False, message: str | None = None) -> None:
        """Write what is new. A directory that cannot be written (deleted, or its disk full) does not stop
        the training, which had ended with a traceback and nothing saved: `problem` says why, and the next
        update tries again."""
        try:
            self._write(trainer, status, probe, samples, checkpoint, message)
        except OSError as err:
            problem = f"the run directory {self.path} cannot be written ({err.strerror or err}); training goes on"
            if problem != self.problem and self.on_problem:
                self.on_problem(problem)
            self.problem = problem
        else:
            self.problem = None

    def write_views(self, probe: Probe, samples: Samples) -> None:
        """Only the views: those of an ended run, computed for a stop or new view settings after its worker
        wrote the rest (its status and elapsed time stay as the run left them)."""
        try:
            self._write_views(probe, samples)
        except OSError:
            pass  # the next views try again; the run has ended, and nothing waits on this

    def _write_views(self, probe: Probe | None, samples: Samples | None) -> None:
        if probe is not None:
            write_atomically(self.path / "probe.npz", lambda f: np.savez(f, **_probe_arrays(probe)))
        if samples is not None:
            _write_json(self.path / "samples.json", samples.__dict__)

    def _write(self, trainer: Trainer, status: str, probe: Probe | None, samples: Samples | None,
               checkpoint: bool, message: str | None) -> None:
        self._append_new(trainer)
        self._write_views(probe, samples)
        if checkpoint:
            trainer.save(self.path / CHECKPOINT)
        _write_json(self.path / "status.json", {
            "status": status, "message": message, "epoch": trainer.epoch, "step": trainer.step,
            "tokens": trainer.tokens, "tokens_per_s": trainer.recent_tokens_per_s(),
            "elapsed": time.time() - self.started, "device": trainer.device_label,
            "processes": trainer.world, "parameters": trainer.parameter_count, "notices": list(trainer.notices),
            "best": None if trainer.best is None else {k: trainer.best[k] for k in ("val_ppl", "step", "tokens")}})

    def _append_new(self, trainer: Trainer) -> None:
        lines = []
        for kind, history in (("train", trainer.metrics), ("eval", trainer.evals)):
            new = history.total - self.written[kind]
            if new > 0:
                lines += [{"kind": kind, **row} for row in history.records()[-new:]]
        for event in trainer.events[self.written["event"]:]:
            lines.append({"kind": "event", "event": event})  # an event has a kind of its own
        if lines:
            _append(self.path / "metrics.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode())
        self.written = _counts(trainer)  # counted once written: lines that could not be go with the next ones


def _append(path: Path, data: bytes) -> None:
    """Append all of `data` or none of it: a disk that fills part-way would leave half a line, and the
    next lines after it, which no reader can parse."""
    with open(path, "ab", buffering=0) as f:
        end = f.seek(0, os.SEEK_END)
        try:
            rest = memoryview(data)
            while rest:
                rest = rest[f.write(rest):]
        except OSError:
            f.truncate(end)
            raise


def _counts(trainer: Trainer) -> dict:
    return {"train": trainer.metrics.total, "eval": trainer.evals.total, "event": len(trainer.events)}


def _probe_arrays(probe: Probe) -> dict:
    arrays = {"step": np.array(probe.step), "tokens": np.array(probe.tokens, dtype=str),
              "separator": np.array(probe.separator)}
    for layer, hidden in enumerate(probe.hidden):
        arrays[f"hidden_{layer}"] = hidden
        if probe.cell is not None:
            arrays[f"cell_{layer}"] = probe.cell[layer]
        for gate, values in probe.gates[layer].items():
            arrays[f"gate_{layer}_{gate}"] = values
    return arrays


def _read_probe(path: Path) -> Probe | None:
    if not path.is_file():
        return None
    try:
        return _probe_from(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a file cut short or another's
        raise ValueError(f"probe.npz is not one deeprnn writes ({err})") from None


def _probe_from(path: Path) -> Probe:
    with np.load(path) as data:
        layers = sum(1 for key in data.files if key.startswith("hidden_"))
        gates = tuple({key.split("_", 2)[2]: data[key] for key in data.files if key.startswith(f"gate_{layer}_")}
                      for layer in range(layers))
        cell = tuple(data[f"cell_{i}"] for i in range(layers)) if "cell_0" in data.files else None
        separator = str(data["separator"]) if "separator" in data.files else ""  # older run directories
        return Probe(int(data["step"]), tuple(str(t) for t in data["tokens"]),
                     tuple(data[f"hidden_{i}"] for i in range(layers)), cell, gates, separator)


# What deeprnn writes, field by field: a watched directory is checked against it before the page draws it.
NUMBER = (int, float)
STATUS_TYPES = {"status": str, "message": (str, type(None)), "epoch": int, "step": int, "tokens": int,
                "tokens_per_s": NUMBER, "elapsed": NUMBER, "device": str, "processes": int, "parameters": int,
                "notices": list, "best": (dict, type(None))}
BEST_TYPES = {"val_ppl": NUMBER, "step": int, "tokens": int}
ROW_TYPES = {"train": {"step": int, "tokens": int, "seconds": NUMBER, "loss": NUMBER, "ppl": NUMBER},
             "eval": {"step": int, "tokens": int, "seconds": NUMBER, "val_loss": NUMBER, "val_ppl": NUMBER},
             "event": {"event": dict}}
GRADIENT_TYPES = {"grad_norm": NUMBER, "grad_ih": list, "grad_hh": list}  # in a train row, all or none
EVENT_TYPES = {"step": int, "kind": str, "value": NUMBER}
SAMPLES_TYPES = {"step": int, "prefix": str, "temperature": NUMBER, "greedy": str, "sampled": str, "from_best": bool}


def read_metrics(path: Path) -> dict[str, list]:
    """Complete lines of metrics.jsonl by kind; a half-written last line is left for later."""
    return _by_kind(_complete_lines(path.read_bytes())[0] if path.is_file() else [])


def _complete_lines(data: bytes) -> tuple[list[dict], int]:
    """The rows of the complete lines in `data` and the bytes they take; a half-written last line is
    left for later."""
    complete = data[: data.rfind(b"\n") + 1]
    return [_metrics_row(line) for line in complete.splitlines()], len(complete)


def _metrics_row(line: bytes) -> dict:
    try:
        row = json.loads(line)
    except ValueError:
        row = None
    if not _is_metrics_row(row):
        raise ValueError(f"a line of metrics.jsonl is not one deeprnn writes: {line[:60].decode(errors='replace')}")
    return row


def _is_metrics_row(row) -> bool:
    """Whether a row has every field the page's charts read, of the type the writer gives it."""
    if not isinstance(row, dict) or row.get("kind") not in ROW_TYPES:
        return False
    types = {**ROW_TYPES[row["kind"]], **(GRADIENT_TYPES if "grad_ih" in row else {})}
    if _wrongly_typed(row, types, required=types):
        return False
    return row["kind"] != "event" or not _wrongly_typed(row["event"], EVENT_TYPES, required=EVENT_TYPES)


def _by_kind(rows: list[dict]) -> dict[str, list]:
    """Rows by kind, in step order; a resumed run rewrites the steps after its checkpoint: the last wins."""
    by_step, events = {"train": {}, "eval": {}}, []
    for row in rows:
        kind = row.pop("kind")
        if kind == "event":
            events.append(row["event"])
        else:
            by_step[kind][row["step"]] = row
    return {**{kind: [steps[s] for s in sorted(steps)] for kind, steps in by_step.items()}, "event": events}


class MetricsTail:
    """metrics.jsonl read as it grows: each read parses only the lines appended since the last one,
    into bounded histories. Read whole at every refresh, a watched run's 100,000 lines (about 7 hours
    of the fast preset) took 1.4 s each time (`python bench/watch_cost.py`). A row that goes back in
    steps (a resumed run rewriting those after its checkpoint), or a file that shrank or was replaced,
    is read again from the start."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()  # the page's fragments read from threads of their own
        self._start_over(None)

    def _start_over(self, identity) -> None:
        self._identity, self._offset = identity, 0
        self._kept = {"train": BoundedHistory(), "eval": BoundedHistory()}
        self._events = []

    def read(self) -> dict[str, tuple]:
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    self._read_on(f)
            except FileNotFoundError:
                self._start_over(None)
            return {"train": self._kept["train"].records(), "eval": self._kept["eval"].records(),
                    "event": tuple(self._events)}

    def _read_on(self, f) -> None:
        # The file's first bytes belong to its identity: a run directory deleted and written again can get
        # the old file's inode back, and its first row holds the time it took.
        stat = os.fstat(f.fileno())
        identity = (stat.st_dev, stat.st_ino, f.read(256))
        if identity != self._identity or stat.st_size < self._offset:
            self._start_over(identity)
        rows = self._rows_after_offset(f)
        if self._goes_back(rows):
            self._start_over(identity)
            rows = self._rows_after_offset(f)
        self._keep(_by_kind(rows))

    def _rows_after_offset(self, f) -> list[dict]:
        f.seek(self._offset)
        rows, used = _complete_lines(f.read())
        self._offset += used
        return rows

    def _goes_back(self, rows: list[dict]) -> bool:
        last = {kind: (kept.last() or {"step": -1})["step"] for kind, kept in self._kept.items()}
        for row in rows:
            if row["kind"] in last:
                if row["step"] <= last[row["kind"]]:
                    return True
                last[row["kind"]] = row["step"]
        return False

    def _keep(self, rows: dict[str, list]) -> None:
        for kind, kept in self._kept.items():
            for row in rows[kind]:
                kept.append(row)
        self._events.extend(rows["event"])


@functools.lru_cache(maxsize=8)  # the latest few watched
def _metrics_tail(path: Path) -> MetricsTail:
    """The tail of a resolved metrics.jsonl path, kept from one read of its run directory to the next."""
    return MetricsTail(path)


def _read_json(path: Path) -> dict:
    """A JSON object from a file; anything else is a ValueError that names the file."""
    try:
        value = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path.name} is not JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} holds {json.dumps(value)[:40]}, not the object deeprnn writes")
    return value


def _read_status(path: Path) -> dict:
    """status.json's fields, each of the type the writer gives it (the page formats them as such);
    none before the run's first write."""
    if not path.is_file():
        return {}
    status = _read_json(path)
    wrong = _wrongly_typed(status, STATUS_TYPES)
    if not wrong and status.get("best"):
        wrong = _wrongly_typed(status["best"], BEST_TYPES, required=BEST_TYPES) and "best"
    if not wrong and not all(isinstance(notice, str) for notice in status.get("notices", ())):
        wrong = "notices"
    if wrong:
        raise ValueError(f"status.json's {wrong} is not what deeprnn writes")
    return status


def _read_samples(path: Path) -> Samples | None:
    if not path.is_file():
        return None
    samples = _read_json(path)
    if wrong := _wrongly_typed(samples, SAMPLES_TYPES, required=SAMPLES_TYPES.keys() - {"from_best"}):
        raise ValueError(f"samples.json's {wrong} is not what deeprnn writes")
    return Samples(**{name: samples[name] for name in SAMPLES_TYPES if name in samples})


def _wrongly_typed(values: dict, types: dict, required=()) -> str | None:
    """The first field missing or of another type than the writer gives it; fields of later versions pass."""
    return next((name for name in required if name not in values), None) or \
        next((name for name, kind in types.items() if name in values and not isinstance(values[name], kind)), None)


def _misfit(probe: Probe, config: RunConfig) -> str | None:
    """What in a probe differs from what the run's views take: a (tokens x units) array of floats for
    every layer's states and each of its cell's gates."""
    if len(probe.hidden) != config.layers:
        return f"{len(probe.hidden)} layers of states for a {config.layers}-layer model"
    if any(set(gates) != set(GATES[config.cell]) for gates in probe.gates):
        return f"its gates are not the {config.cell.upper()}'s {', '.join(GATES[config.cell])}"
    arrays = [*probe.hidden, *(probe.cell or ()), *(a for gates in probe.gates for a in gates.values())]
    shape = (len(probe.tokens), config.hidden)
    if any(a.shape != shape or not np.issubdtype(a.dtype, np.floating) for a in arrays):
        return f"its arrays are not all {shape[0]} tokens x {shape[1]} units of numbers"
    return None


def read_run_dir(path) -> Snapshot:
    """The run directory as a Snapshot, for the same views as a run in this process."""
    path = Path(path)
    if path.is_file():  # such as the run's own config.json, or a checkpoint
        raise RunDirError(f"{path} is a file, not a run directory: name the folder that holds its config.json")
    if not path.is_dir():
        raise RunDirError(f"no such directory: {path}")
    if not (path / "config.json").is_file():
        raise RunDirError(f"{path} is not a deeprnn run directory (no config.json)")
    try:
        config = RunConfig.from_dict(_read_json(path / "config.json"))
        status = _read_status(path / "status.json")
        rows = _metrics_tail((path / "metrics.jsonl").resolve()).read()
        samples = _read_samples(path / "samples.json")
        probe = _read_probe(path / "probe.npz")
        if probe and (problem := _misfit(probe, config)):
            raise ValueError(f"probe.npz does not fit the run: {problem}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(f"{path} could not be read: {err}") from err
    return Snapshot(
        run_id=0, name=f"{run_name(config)} · {path.name}", config=config, status=status.get("status", "starting"),
        message=status.get("message"), epoch=status.get("epoch", 0), step=status.get("step", 0),
        tokens=status.get("tokens", 0), tokens_per_s=status.get("tokens_per_s", 0.0),
        elapsed=status.get("elapsed", 0.0), device=status.get("device", ""), parameters=status.get("parameters", 0),
        metrics=rows["train"], evals=rows["eval"], events=rows["event"],
        best=status.get("best"), probe=probe, samples=samples, notices=tuple(status.get("notices", ())))
