"""What a reader sees of a run: immutable snapshots, built by the worker or read from a run directory."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RunConfig


@dataclass(frozen=True)
class Probe:
    """Every layer's states over the probe text, as taken at `step`."""

    step: int
    tokens: tuple[str, ...]
    hidden: tuple[np.ndarray, ...]  # per layer (T, H), layer 1 first
    cell: tuple[np.ndarray, ...] | None  # LSTM cell states, same shapes
    gates: tuple[dict, ...]  # per layer {gate name: (T, H)}
    separator: str = ""  # what the text has between tokens: nothing between characters, a space between words


@dataclass(frozen=True)
class Samples:
    step: int
    prefix: str
    temperature: float
    greedy: str
    sampled: str
    from_best: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Everything the page draws for one run, as of one moment. Never mutated."""

    run_id: int
    name: str
    config: RunConfig | None
    status: str  # idle | starting | running | paused | finished | stopped | failed
    message: str | None = None
    epoch: int = 0
    step: int = 0
    tokens: int = 0
    tokens_per_s: float = 0.0
    elapsed: float = 0.0
    eta: float | None = None
    device: str = ""
    parameters: int = 0
    metrics: tuple = ()
    evals: tuple = ()
    events: tuple = ()
    best: dict | None = None  # {"val_ppl", "step", "tokens"} of the kept best weights
    probe: Probe | None = None
    samples: Samples | None = None
    notices: tuple = ()
    saturation: tuple = ()  # per probe, layer and gate: mean fraction left / right saturated
    view_seconds: float = 0.0  # time spent on probes and samples, for the cost of the views
    train_seconds: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running", "paused")

    @property
    def has_weights(self) -> bool:
        """False for a run that failed before its model was built (a text too short): nothing to export."""
        return self.parameters > 0

    @property
    def best_val_ppl(self) -> float | None:
        return self.best["val_ppl"] if self.best else None


IDLE = Snapshot(run_id=0, name="no run yet", config=None, status="idle")


def run_name(config: RunConfig) -> str:
    """A run's name, from the config it starts with: a later change of learning rate keeps it."""
    return f"{config.cell.upper()} x{config.layers} h{config.hidden} lr{config.lr:g}"
