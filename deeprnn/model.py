"""StackedRNN: L single-layer PyTorch cells, so every layer's hidden states can be read out."""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class StackedRNN(nn.Module):
    """Input (one-hot or embedding) -> L recurrent layers -> linear head.

    Layer l reads layer l-1's hidden states, with dropout between layers, exactly as PyTorch's
    `num_layers=L` module does; keeping the layers separate is what lets `forward` return each
    layer's hidden states at every time step. Tensors are time-major inside: (T, B, ...).
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
        self.dropout = nn.Dropout(dropout)
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
        new_state, layer_outputs = [], []
        for i, (layer, layer_state) in enumerate(zip(self.layers, state)):
            if i > 0:
                x = self.dropout(x)
            x, s = self._run_layer(layer, x, layer_state)
            new_state.append(s)
            if return_layers:
                layer_outputs.append(x)
        logits = self.head(self.dropout(x))
        return (logits, new_state, layer_outputs) if return_layers else (logits, new_state)

    def _run_layer(self, layer: nn.Module, x: torch.Tensor, state):
        if not (self.training and self.weight_drop):
            return layer(x, state)
        dropped = F.dropout(layer.weight_hh_l0, self.weight_drop)  # computed once, not per time step
        return functional_call(layer, {"weight_hh_l0": dropped}, (x, state))


def detach_state(state: list) -> list:
    return [tuple(s.detach() for s in st) if isinstance(st, tuple) else st.detach() for st in state]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
