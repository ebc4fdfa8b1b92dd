"""Long runs: history is bounded however long a run goes, keeps the curve's shape, and a session's
memory does not grow with the number of report points."""
import math
import pickle

import pytest

from deeprnn.history import BoundedHistory
from deeprnn.train import Trainer


def test_history_stays_bounded_over_a_million_points():
    history = BoundedHistory(recent=1000, archive=1000)
    for step in range(1_000_000):
        history.append(step)
    kept = history.records()
    assert len(kept) <= 2000 and history.total == 1_000_000
    assert list(kept[-1000:]) == list(range(999_000, 1_000_000))  # recent points exact
    assert kept[0] < 10_000 and list(kept) == sorted(kept)  # the start of the curve survives


def test_downsampling_keeps_the_shape_of_a_curve():
    """A falling curve with bumps: the kept points trace it as the full history would."""
    def loss(step):
        return 1.2 + 3.0 * math.exp(-step / 40_000) + 0.2 * math.sin(step / 5_000)

    history = BoundedHistory(recent=500, archive=500)
    for step in range(300_000):
        history.append({"step": step, "loss": loss(step)})
    kept = history.records()
    steps = [r["step"] for r in kept]
    assert steps[0] == 0 and steps[-1] == 299_999
    # No gap between kept points is wider than 1% of the run: the bumps of the sine survive.
    assert max(b - a for a, b in zip(steps, steps[1:])) <= 3_000
    # The curve drawn through the kept points stays within 1% of the true one everywhere.
    for a, b in zip(kept, kept[1:]):
        mid = (a["step"] + b["step"]) // 2
        drawn = a["loss"] + (b["loss"] - a["loss"]) * (mid - a["step"]) / max(b["step"] - a["step"], 1)
        assert drawn == pytest.approx(loss(mid), rel=0.01)


def retained_bytes(trainer) -> int:
    """The size of everything a trainer keeps about its past: history, evaluations, events."""
    return len(pickle.dumps((trainer.metrics.records(), trainer.evals.records(), trainer.events)))


def test_what_a_trainer_keeps_does_not_grow_with_report_points(small_config, monkeypatch):
    monkeypatch.setattr(BoundedHistory.__init__, "__defaults__", (10, 10, ()))
    trainer = Trainer(small_config.replace(report_every=1, epochs=10_000))
    steps = trainer.steps()
    for _ in range(800):  # warm up: fill the metrics' and the evaluations' windows and archives
        next(steps)
    assert trainer.evals.total > 20
    warm = retained_bytes(trainer)
    for _ in range(1_000):
        next(steps)
    assert len(trainer.metrics.records()) <= 20 and len(trainer.evals.records()) <= 20
    assert retained_bytes(trainer) < 1.1 * warm  # keeping every point would be 50 times as much
