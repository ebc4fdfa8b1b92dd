import pytest
import torch
from torch import nn

from deeprnn.generate import next_logits
from deeprnn.model import CELLS, StackedRNN, drop, map_state


def copy_into_stack(reference: nn.Module, model: StackedRNN) -> None:
    """Layer k of PyTorch's multi-layer module becomes the stack's k-th single-layer module."""
    for k, layer in enumerate(model.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").data.copy_(getattr(reference, f"{name}_l{k}"))


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("layers", [1, 3])
def test_stack_equals_pytorch_multilayer(cell, layers):
    torch.manual_seed(0)
    vocab, hidden = 11, 16
    model = StackedRNN(vocab, cell, layers, hidden).eval()
    reference = CELLS[cell](vocab, hidden, num_layers=layers).eval()
    copy_into_stack(reference, model)
    ids = torch.randint(0, vocab, (3, 7))
    logits, state, per_layer = model(ids, return_layers=True)
    expected, expected_state = reference(nn.functional.one_hot(ids.T, vocab).float())
    assert len(per_layer) == layers and per_layer[0].shape == (7, 3, hidden)
    assert torch.allclose(per_layer[-1], expected, atol=1e-5)
    assert torch.allclose(logits, model.head(expected), atol=1e-5)
    final_h = torch.cat([s[0] if cell == "lstm" else s for s in state])
    assert torch.allclose(final_h, expected_state[0] if cell == "lstm" else expected_state, atol=1e-5)


def test_layer_reads_the_layer_below():
    torch.manual_seed(0)
    model = StackedRNN(5, "gru", 2, 8).eval()
    ids = torch.randint(0, 5, (2, 4))
    _, _, (h1, h2) = model(ids, return_layers=True)
    alone, _ = model.layers[1](h1)
    assert torch.allclose(alone, h2, atol=1e-6)


def test_embedding_input_shapes():
    model = StackedRNN(9, "lstm", 2, 8, embedding=4)
    logits, state = model(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (5, 2, 9) and len(state) == 2 and state[0][1].shape == (1, 2, 8)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_weight_drop_masks_the_recurrent_weights_only_while_training(cell):
    torch.manual_seed(0)
    model = StackedRNN(7, cell, 2, 16, weight_drop=0.5)
    plain = StackedRNN(7, cell, 2, 16)
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 7, (3, 9))
    first, _ = model(ids)
    second, _ = model(ids)
    assert not torch.allclose(first, second)  # a fresh mask per minibatch
    first.sum().backward()
    assert all(layer.weight_hh_l0.grad.abs().sum() > 0 for layer in model.layers)
    model.eval(), plain.eval()
    assert torch.equal(model(ids)[0], plain(ids)[0])  # no mask when evaluating or probing
    assert torch.equal(model.layers[0].weight_hh_l0, plain.layers[0].weight_hh_l0)  # the weights themselves untouched


@pytest.mark.parametrize("p", [0.1, 0.3, 0.6])
def test_drop_zeroes_a_fraction_p_and_scales_the_rest(p):
    x = (torch.rand(400_000) + 1).requires_grad_()  # no zeros of its own
    torch.manual_seed(0)
    y = drop(x, p, training=True)
    dropped = y == 0
    for lane in range(4):  # each of the four 16-bit parts of a 64-bit random number is a fair draw
        assert abs(dropped[lane::4].float().mean().item() - p) < 0.01
    assert torch.allclose(y[~dropped], x[~dropped] / (1 - p))
    y.sum().backward()
    assert torch.allclose(x.grad, (~dropped).float() / (1 - p))
    assert torch.equal(drop(x, p, training=False), x)
    torch.manual_seed(0)
    assert torch.equal(drop(x, p, training=True), y)  # the seed decides the mask


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("embedding", [0, 6])
def test_writing_token_by_token_gives_the_models_own_logits(cell, layers, embedding):
    """Samples are written one token at a time by the cells' equations, not torch's kernels: they must
    compute the same function, state carried over included."""
    torch.manual_seed(layers)
    model = StackedRNN(13, cell, layers, 10, embedding=embedding, dropout=0.3).eval()
    ids = torch.randint(0, 13, (2, 9))
    expected, _ = model(ids)
    state = map_state(lambda s: s[0], model.begin_state(2, "cpu"))
    for t in range(ids.shape[1]):
        logits, state = next_logits(model, ids[:, t], state)
        assert torch.allclose(logits, expected[t], atol=1e-5), f"step {t}"
