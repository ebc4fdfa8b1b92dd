"""The book's two minibatch schemes over a sequence of token ids.

Both yield (inputs, targets) pairs of shape (batch, steps), targets shifted by one token.
"""
from __future__ import annotations

import random

import torch


class TooShortError(ValueError):
    pass


def min_tokens(batch: int, steps: int) -> int:
    """The shortest sequence that gives at least one minibatch under either scheme."""
    return batch * steps + steps + 1


def check_length(n_tokens: int, batch: int, steps: int, what: str = "the training text") -> None:
    need = min_tokens(batch, steps)
    if n_tokens < need:
        raise TooShortError(f"{what} has {n_tokens} tokens; batch {batch} x steps {steps} needs at "
                            f"least {need}: give a longer text or lower batch or steps")


def sequential_batches(ids: torch.Tensor, batch: int, steps: int, rng: random.Random):
    """Sequential partitioning: row b of minibatch i+1 continues row b of minibatch i."""
    offset = rng.randint(0, steps)
    n = ((len(ids) - offset - 1) // batch) * batch
    xs = ids[offset:offset + n].reshape(batch, -1)
    ys = ids[offset + 1:offset + 1 + n].reshape(batch, -1)
    for i in range(0, (xs.shape[1] // steps) * steps, steps):
        yield xs[:, i:i + steps], ys[:, i:i + steps]


def random_batches(ids: torch.Tensor, batch: int, steps: int, rng: random.Random):
    """Random sampling: independent subsequences in shuffled order."""
    offset = rng.randint(0, steps - 1)
    n_subseqs = (len(ids) - offset - 1) // steps
    starts = list(range(offset, offset + n_subseqs * steps, steps))
    rng.shuffle(starts)
    window = torch.arange(steps, device=ids.device)
    for i in range(0, (n_subseqs // batch) * batch, batch):
        index = torch.tensor(starts[i:i + batch], device=ids.device).unsqueeze(1) + window
        yield ids[index], ids[index + 1]


ITERATORS = {"sequential": sequential_batches, "random": random_batches}


def eval_chunks(ids: torch.Tensor, batch: int, steps: int):
    """The whole held-out sequence split into rows read left to right, every token predicted once.

    Uses as many rows as the text allows (up to `batch`) so a short held-out tail still counts.
    """
    rows = max(1, min(batch, (len(ids) - 1) // steps))
    n = ((len(ids) - 1) // rows) * rows
    xs = ids[:n].reshape(rows, -1)
    ys = ids[1:n + 1].reshape(rows, -1)
    for i in range(0, xs.shape[1], steps):
        yield xs[:, i:i + steps], ys[:, i:i + steps]
