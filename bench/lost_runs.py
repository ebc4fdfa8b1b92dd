#!/usr/bin/env python3
"""The lost-run thresholds (LOST_STEPS, LOST_MARGIN, the hysteresis of `still_lost` in deeprnn/train.py),
measured: each recipe trains with a report point after every step, and the table shows the longest run
of steps above a uniform guess's perplexity, the highest perplexity over the guess, and how many times the
run was told it is lost, with the hysteresis and without it (lost whenever the mean is past the margin).

    python bench/lost_runs.py
"""
import itertools
import math

import repo  # noqa: F401  puts the repository's deeprnn on sys.path
from deeprnn.config import preset
from deeprnn.train import LOST_MARGIN, LOST_STEPS, Diverged, Trainer

STEPS = 300
RECIPES = [(name, {"cell": cell}) for name in ("fast", "best", "d2l") for cell in ("lstm", "gru", "rnn")] + [
    ("fast", {"lr": 0.5}), ("fast", {"lr": 0.2})]


def mean_loss_past_margin(trainer: Trainer) -> bool:
    last = trainer.metrics.last()
    window = [r["loss"] for r in itertools.takewhile(lambda r: r["step"] > last["step"] - LOST_STEPS,
                                                     trainer.metrics.newest_first())]
    return last["step"] >= LOST_STEPS and sum(window) / len(window) > math.log(LOST_MARGIN * len(trainer.corpus.vocab))


def measure(name: str, overrides: dict) -> list:
    trainer = Trainer(preset(name, report_every=1, **overrides))
    vocab, steps = len(trainer.corpus.vocab), trainer.steps()
    streak = longest = 0
    worst = 0.0
    told, told_plain, was, was_plain = 0, 0, False, False
    try:
        while trainer.step < STEPS:
            if next(steps) is None:
                continue
            ppl = trainer.metrics.last()["ppl"]
            streak = streak + 1 if ppl > vocab else 0
            longest, worst = max(longest, streak), max(worst, ppl / vocab)
            plain = mean_loss_past_margin(trainer)
            told, told_plain = told + (trainer.lost and not was), told_plain + (plain and not was_plain)
            was, was_plain = trainer.lost, plain
    except (Diverged, StopIteration):
        pass
    return [name, ", ".join(f"{k}={v}" for k, v in overrides.items()), trainer.step, longest, f"{worst:.2f}",
            told, told_plain]


def main() -> None:
    print(f"each recipe's first {STEPS} steps, a report point per step; LOST_STEPS {LOST_STEPS}, LOST_MARGIN {LOST_MARGIN:g}")
    print("| preset | overrides | steps | longest run above the guess (steps) | highest ppl / guess "
          "| times told | times told without the hysteresis |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, overrides in RECIPES:
        print("| " + " | ".join(str(cell) for cell in measure(name, overrides)) + " |", flush=True)


if __name__ == "__main__":
    main()
