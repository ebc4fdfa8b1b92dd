"""Look inside a StackedRNN: every layer's states and gates on a probe text, from its own weights.

The textbook cell equations are applied to the model's weights (PyTorch's gate order and bias
layout), so what is shown is what the network computes: a test checks the recomputed hidden states
against PyTorch's own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import regex
import torch

from .model import layer_weights

# Gate names per cell, in the order PyTorch stacks their weights.
GATES = {"lstm": ("input", "forget", "candidate", "output"),
         "gru": ("reset", "update", "candidate"),
         "rnn": ("preactivation",)}


@dataclass(frozen=True)
class LayerTrace:
    """One layer over the probe: (T, H) arrays of hidden states, cell states (LSTM) and gates."""

    hidden: torch.Tensor
    cell: torch.Tensor | None
    gates: dict


@torch.no_grad()
def trace(model, ids: list[int]) -> list[LayerTrace]:
    """Run the probe token ids through every layer from a zero state, layer 1 first."""
    device = next(model.parameters()).device
    x = model.encode_inputs(torch.tensor([ids], device=device))[:, 0]  # (T, E)
    traces = []
    for layer in model.layers:
        step = {"lstm": _lstm_layer, "gru": _gru_layer, "rnn": _rnn_layer}[model.cell]
        layer_trace = step(layer, x)
        traces.append(layer_trace)
        x = layer_trace.hidden  # layer l reads layer l-1's hidden states (no dropout when probing)
    return traces


def _lstm_layer(layer, x) -> LayerTrace:
    projected, w_hh, _ = _input_projection("lstm", layer, x)  # of all time steps at once
    h = c = torch.zeros(layer.hidden_size, device=x.device)
    out = {name: [] for name in ("hidden", "cell", *GATES["lstm"])}
    for t in range(x.shape[0]):
        h, c, gates = lstm_step(projected[t], h, c, w_hh)
        for name, value in zip(out, (h, c, *gates)):
            out[name].append(value)
    stacked = {name: torch.stack(values) for name, values in out.items()}
    return LayerTrace(stacked.pop("hidden"), stacked.pop("cell"), stacked)


def _gru_layer(layer, x) -> LayerTrace:
    projected, w_hh, b_hh = _input_projection("gru", layer, x)
    h = torch.zeros(layer.hidden_size, device=x.device)
    out = {name: [] for name in ("hidden", *GATES["gru"])}
    for t in range(x.shape[0]):
        h, gates = gru_step(projected[t], h, w_hh, b_hh)
        for name, value in zip(out, (h, *gates)):
            out[name].append(value)
    stacked = {name: torch.stack(values) for name, values in out.items()}
    return LayerTrace(stacked.pop("hidden"), None, stacked)


def _rnn_layer(layer, x) -> LayerTrace:
    projected, w_hh, _ = _input_projection("rnn", layer, x)
    h = torch.zeros(layer.hidden_size, device=x.device)
    hidden, pre = [], []
    for t in range(x.shape[0]):
        h, (a,) = rnn_step(projected[t], h, w_hh)
        hidden.append(h)
        pre.append(a)
    return LayerTrace(torch.stack(hidden), None, {"preactivation": torch.stack(pre)})


# --- one time step of a cell, for one sequence (H,) or a batch (B, H) ---------------------------------
def _input_projection(cell: str, layer, x):
    """The layer's input projection of x (..., E), with the biases that PyTorch adds to it (a GRU adds its
    recurrent bias inside the reset gate instead), and the recurrent weight and bias for the steps."""
    w_ih, w_hh, b_ih, b_hh = layer_weights(layer)
    return x @ w_ih.T + (b_ih if cell == "gru" else b_ih + b_hh), w_hh, b_hh


def lstm_step(projected, h, c, w_hh):
    """The new hidden and cell state, and the gates (input, forget, candidate, output)."""
    i, f, g, o = (projected + h @ w_hh.T).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c, (i, f, g, o)


def gru_step(projected, h, w_hh, b_hh):
    """The new hidden state and the gates (reset, update, candidate)."""
    r_x, z_x, n_x = projected.chunk(3, dim=-1)
    r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
    n = torch.tanh(n_x + r * n_h)
    return (1 - z) * n + z * h, (r, z, n)


def rnn_step(projected, h, w_hh):
    """The new hidden state and its preactivation."""
    a = projected + h @ w_hh.T
    return torch.tanh(a), (a,)


def cell_step(cell: str, layer, x, state):
    """One layer, one time step, for a batch: input (B, E) and state ((B, H), or an LSTM's (h, c)) to the
    layer's output and its new state."""
    projected, w_hh, b_hh = _input_projection(cell, layer, x)
    if cell == "lstm":
        h, c, _ = lstm_step(projected, *state, w_hh)
        return h, (h, c)
    h, _ = gru_step(projected, state, w_hh, b_hh) if cell == "gru" else rnn_step(projected, state, w_hh)
    return h, h


# --- saturation ---------------------------------------------------------------------------------
# Gates squashed by a sigmoid, whose saturation Karpathy, Johnson and Fei-Fei (2015) plotted.
SIGMOID_GATES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update"), "rnn": ()}
LEFT, RIGHT = 0.1, 0.9


def gate_saturation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit of a (T, H) gate in [0, 1]: the fraction of steps below 0.1 and above 0.9."""
    return (values < LEFT).mean(axis=0), (values > RIGHT).mean(axis=0)


def saturation_gates(cell: str) -> tuple[str, ...]:
    """What saturation is measured on: the sigmoid gates, or for a plain RNN its tanh units."""
    return SIGMOID_GATES[cell] or ("hidden",)


def layer_saturation(cell: str, gates: dict, hidden: np.ndarray) -> dict:
    """{gate: (left, right)} for one layer; a plain RNN's tanh units are mapped to [0, 1] first."""
    if not SIGMOID_GATES[cell]:
        return {"hidden": gate_saturation((hidden + 1) / 2)}
    return {name: gate_saturation(gates[name]) for name in SIGMOID_GATES[cell]}


# --- interpretable-cell finder -------------------------------------------------------------------
# Letters of any alphabet (\p{L}), as the cleaning keeps them (corpus.NON_LETTERS); vowels are English's.
CHARACTER_PATTERNS = {
    "first letter of a word": r"\b\p{L}",
    "after a space": r"(?<= )[^ ]",
    "inside a word longer than 6 letters": r"\p{L}{7,}",
    "a vowel": r"[aeiouAEIOU]",
    "a space": r" ",
}
# A word token is marked whole, so the questions asked of word runs are about words: a character
# pattern such as "first letter of a word" marks every word and tells no unit from another.
WORD_PATTERNS = {
    "a short word (3 letters or fewer)": r"\b\p{L}{1,3}\b",
    "a word longer than 6 letters": r"\b\p{L}{7,}\b",
    "a word starting with a vowel": r"\b[aeiouAEIOU]",
}
NAMED_PATTERNS = CHARACTER_PATTERNS | WORD_PATTERNS


def finder_patterns(tokens: str) -> list[str]:
    """The named patterns that suit a run of character or word tokens."""
    return list(WORD_PATTERNS if tokens == "word" else CHARACTER_PATTERNS)


class PatternError(ValueError):
    pass


# The standard `re` cannot be stopped and holds the GIL while it matches: a pattern such as
# "(?:.|.)*(?=z)" backtracked for ever and froze the page's server, every tab's. `regex` releases the
# GIL (concurrent) and gives up after a timeout.
PATTERN_TIMEOUT_S = 0.5


def pattern_mask(tokens: list[str], pattern: str, separator: str = "") -> np.ndarray:
    """Which probe tokens a named pattern or a regular expression marks (any of its characters), in
    the text as written: the tokens joined by their separator, which belongs to none of them."""
    try:
        compiled = regex.compile(NAMED_PATTERNS.get(pattern, pattern))
    except regex.error as err:
        raise PatternError(f"not a valid regular expression: {err}") from err
    owner = []  # the token of each character of the text; None for a separator's
    for index, token in enumerate(tokens):
        if index:
            owner.extend([None] * len(separator))
        owner.extend([index] * len(token))
    try:
        matches = list(compiled.finditer(separator.join(tokens), concurrent=True, timeout=PATTERN_TIMEOUT_S))
    except TimeoutError as err:
        raise PatternError(f"the regular expression took over {PATTERN_TIMEOUT_S:g} s on the probe text; "
                           "try a simpler one") from err
    mask = np.zeros(len(tokens), dtype=bool)
    for match in matches:
        for position in range(match.start(), match.end()):
            if owner[position] is not None:
                mask[owner[position]] = True
    return mask


# A unit whose activation spans less than this over the probe text is left out of the ranking: its
# wobble can correlate well with a pattern, but in the text coloured by it nothing shows.
MIN_SPREAD = 0.1


def rank_units(layers: list[np.ndarray], mask: np.ndarray, top: int = 10) -> list[dict]:
    """Units of every layer that move over the probe, ranked by |correlation| of their activation with
    the mask."""
    if mask.all() or not mask.any():
        raise PatternError("the pattern marks all or none of the probe text; it cannot tell units apart")
    m = mask.astype(np.float64) - mask.mean()
    ranked = []
    for layer, states in enumerate(layers):
        moving = np.flatnonzero(np.ptp(states, axis=0) >= MIN_SPREAD)
        x = states[:, moving].astype(np.float64)
        x -= x.mean(axis=0)
        corr = (x.T @ m) / np.sqrt((x ** 2).sum(axis=0) * (m ** 2).sum())
        ranked.extend({"layer": layer + 1, "unit": int(unit), "correlation": float(c)} for unit, c in zip(moving, corr))
    if not ranked:
        raise PatternError(f"no unit's activation spans {MIN_SPREAD} over the probe text yet")
    ranked.sort(key=lambda row: -abs(row["correlation"]))
    return ranked[:top]
