"""Continue a prefix from any model state: greedy, or sampled with temperature and top-k."""
from __future__ import annotations

import torch

from .corpus import UNK, Codec
from .introspect import cell_step
from .model import map_state


@torch.no_grad()
def continue_batch(model, prefix_ids: list[int], length: int, temperatures: list[float], top_k: int = 0,
                   generator: torch.Generator | None = None) -> list[list[int]]:
    """One continuation per temperature (0 is greedy, the book's predict), run side by side as
    rows of one batch, so several cost about as much as one."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        rows = len(temperatures)
        logits, state = model(torch.tensor([prefix_ids or [0]] * rows, device=device))
        logits, state = logits[-1], map_state(lambda s: s[0], state)  # (B, V); (B, H) per layer
        out = [[] for _ in range(rows)]
        for _ in range(length):
            tokens = [_choose(logits[row], t, top_k, generator) for row, t in enumerate(temperatures)]
            for row, token in enumerate(tokens):
                out[row].append(token)
            logits, state = next_logits(model, torch.tensor(tokens, device=device), state)
        return out
    finally:
        model.train(was_training)


def next_logits(model, tokens: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
    """The logits (B, V) after one more token per row (B,), and the new state, by the cells' equations
    (the probe's). For a single time step torch's recurrent kernels took 2 to 3 times as long on one
    thread (0.54 against 0.18 ms a token for the fast preset, 2.4 against 1.1 for the best), and a
    sample is a hundred such steps."""
    x = model.encode_inputs(tokens[:, None])[0]
    new_state = []
    for layer, layer_state in zip(model.layers, state):
        x, layer_state = cell_step(model.cell, layer, x, layer_state)
        new_state.append(layer_state)
    return model.head(x), new_state


def _choose(logits: torch.Tensor, temperature: float, top_k: int, generator) -> int:
    if logits.numel() > 1:  # never write <unk> (index 0): it stands for no character in particular
        logits = logits.clone()
        logits[0] = float("-inf")
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        cutoff = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < cutoff, float("-inf"))
    probs = torch.softmax(logits, dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def continue_texts(model, codec: Codec, prefix: str, length: int = 50, temperatures=(0.0,), top_k: int = 0,
                   seed: int | None = None) -> list[str]:
    """The prefix as the model reads it (cleaned like the corpus) followed by each continuation.

    Tokens outside the vocabulary read as <unk>, so any prefix works.
    """
    prefix_ids = codec.encode(prefix)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return [codec.decode(prefix_ids + ids)
            for ids in continue_batch(model, prefix_ids, length, list(temperatures), top_k, generator)]


def continue_text(model, codec: Codec, prefix: str, length: int = 50, temperature: float = 0.0,
                  top_k: int = 0, seed: int | None = None) -> str:
    return continue_texts(model, codec, prefix, length, (temperature,), top_k, seed)[0]


def unknown_prefix_note(sample: str) -> str | None:
    """Why a sample begins with <unk>: a model writes none (_choose), so they are the prefix's characters
    or words that its text never has, as the book's prefix in a text of another alphabet."""
    if UNK not in sample:
        return None
    return f"The prefix holds characters or words that this text never has: the model reads each as {UNK}."
