"""StackedRNN: L single-layer PyTorch cells, so every layer's hidden states can be read out."""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
# The kernels those modules' forward() calls, here called with weights of our choosing: several layers'
# at once, or a recurrent weight with DropConnect applied. Calling the module instead with swapped weights
# makes it re-flatten its parameters into new memory at every call, which a CUDA graph cannot follow.
KERNELS = {"rnn": torch._VF.rnn_tanh, "gru": torch._VF.gru, "lstm": torch._VF.lstm}
# Weights from several modules are not one block of memory, so cuDNN copies them into one per call:
# a few microseconds, against the milliseconds that running the layers together saves.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


class StackedRNN(nn.Module):
    """Input (one-hot or embedding) -> L recurrent layers -> linear head.

    Layer l reads layer l-1's hidden states, with dropout between layers, exactly as PyTorch's
    `num_layers=L` module does; keeping the layers separate is what lets `forward` return each
    layer's hidden states at every time step. On a GPU, when those are not asked for, all layers
    run in one cuDNN call, which overlaps layer l's step t with layer l-1's step t+1.
    Tensors are time-major inside: (T, B, ...).
    `weight_drop` is DropConnect on each layer's hidden-to-hidden weights while training (as in
    AWD-LSTM, Merity et al. 2017): one mask per minibatch, the same at every time step.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", layers: int = 2, hidden: int = 256,
                 embedding: int = 0, dropout: float = 0.0, weight_drop: float = 0.0):
        super().__init__()
        self.vocab_size, self.cell, self.hidden, self.weight_drop = vocab_size, cell, hidden, weight_drop
        self.embedding = nn.Embedding(vocab_size, embedding) if embedding else None
        input_size = embedding or vocab_size
        self.layers = nn.ModuleList(
            CELLS[cell](input_size if i == 0 else hidden, hidden) for i in range(layers))
        self.dropout = dropout
        self.head = nn.Linear(hidden, vocab_size)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def begin_state(self, batch: int, device) -> list:
        """A zero state per layer: a tensor (1, B, H), or an (h, c) pair for LSTM."""
        def zeros():
            return torch.zeros(1, batch, self.hidden, device=device)
        return [(zeros(), zeros()) if self.cell == "lstm" else zeros() for _ in self.layers]

    def encode_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids to the first layer's (T, B, E) input."""
        if self.embedding is not None:
            return self.embedding(inputs.T)
        return F.one_hot(inputs.T, self.vocab_size).float()

    def forward(self, inputs: torch.Tensor, state: list | None = None, return_layers: bool = False):
        """Logits (T, B, V) and the new per-layer state; with return_layers, also a list of
        every layer's hidden states, each (T, B, H), layer 1 first."""
        if state is None:
            state = self.begin_state(inputs.shape[0], inputs.device)
        x = self.encode_inputs(inputs)
        # All layers at once, except with dropout between them while training: that dropout stays
        # torch's own, whose random numbers a CUDA graph replays correctly.
        if x.is_cuda and not return_layers and not (self.training and self.dropout):
            x, new_state = self._recur(x, state, [w for layer in self.layers for w in self._weights(layer)])
            return self.head(x), new_state
        new_state, layer_outputs = [], []
        for i, (layer, layer_state) in enumerate(zip(self.layers, state)):
            if i > 0:
                x = drop(x, self.dropout, self.training)
            x, (s,) = self._recur(x, [layer_state], self._weights(layer))
            new_state.append(s)
            if return_layers:
                layer_outputs.append(x)
        logits = self.head(drop(x, self.dropout, self.training))
        return (logits, new_state, layer_outputs) if return_layers else (logits, new_state)

    def _weights(self, layer: nn.Module) -> list:
        """A layer's weights as its kernel takes them; while training with weight drop, the
        recurrent weight masked once for the whole minibatch, not per time step."""
        w_ih, w_hh, b_ih, b_hh = layer_weights(layer)
        if self.training and self.weight_drop:
            w_hh = drop(w_hh, self.weight_drop, training=True)
        return [w_ih, w_hh, b_ih, b_hh]

    def _recur(self, x: torch.Tensor, states: list, weights: list):
        """Run len(states) layers, 4 weights each, in one kernel call: their top output and states."""
        n = len(states)
        args = (weights, True, n, 0.0, self.training, False, False)  # biases, layers, dropout, train, bidirectional, batch_first
        if self.cell == "lstm":
            x, h, c = KERNELS["lstm"](x, (_stack([s[0] for s in states]), _stack([s[1] for s in states])), *args)
            return x, [(h[i:i + 1], c[i:i + 1]) for i in range(n)]
        x, h = KERNELS[self.cell](x, _stack(states), *args)
        return x, [h[i:i + 1] for i in range(n)]


def drop(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout: each element zeroed with probability p, the rest scaled by 1 / (1 - p).

    On the CPU the mask comes from 16 random bits per element, drawn 64 at a time: torch's own CPU
    dropout draws one number per element on a single core, and its four calls per step took 11% of
    the best preset's training step (2 x 512) while the second core waited. p is then a multiple of
    1 / 65536. Elsewhere torch's own, whose random numbers a CUDA graph replays correctly.
    """
    if not (training and p) or x.device.type != "cpu":
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.randint(-2**63, 2**63 - 1, (math.ceil(n / 4),), dtype=torch.int64).view(torch.int16)[:n]
    keep = bits >= round(p * 65536) - 32768  # true with probability 1 - p
    return x * keep.view(x.shape).to(x.dtype).mul_(1 / (1 - p))


def _stack(per_layer: list) -> torch.Tensor:
    return per_layer[0] if len(per_layer) == 1 else torch.cat(per_layer)


def layer_weights(layer: nn.Module) -> tuple:
    """A single-layer PyTorch cell's input, recurrent and two bias weights."""
    return layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0


def map_state(fn, state: list) -> list:
    """`fn` applied to each tensor of a per-layer state (a tensor per layer, or an LSTM's (h, c) pair)."""
    return [tuple(fn(s) for s in st) if isinstance(st, tuple) else fn(st) for st in state]


def detach_state(state: list) -> list:
    return map_state(torch.Tensor.detach, state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
