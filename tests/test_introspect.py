import subprocess
import sys

import numpy as np
import pytest
import torch

from deeprnn.introspect import (PatternError, gate_saturation, layer_saturation, pattern_mask, rank_units,
                                trace)
from deeprnn.model import StackedRNN
from deeprnn.train import Trainer

from repo import ROOT  # bench/repo.py, on the path from conftest


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
@pytest.mark.parametrize("embedding", [0, 6])
def test_recomputed_gates_reproduce_pytorch_states(cell, layers, embedding):
    torch.manual_seed(layers)
    model = StackedRNN(13, cell, layers, 10, embedding=embedding).eval()
    ids = torch.randint(0, 13, (1, 17))
    _, state, per_layer = model(ids, return_layers=True)
    traces = trace(model, ids[0].tolist())
    assert len(traces) == layers
    for layer, (t, expected) in enumerate(zip(traces, per_layer)):
        assert torch.allclose(t.hidden, expected[:, 0], atol=1e-5), f"layer {layer + 1}"
        for name, gate in t.gates.items():
            assert gate.shape == (17, 10), name
        if cell == "lstm":
            assert torch.allclose(t.cell[-1], state[layer][1][0, 0], atol=1e-5)  # final cell state too
            assert (t.gates["forget"] >= 0).all() and (t.gates["forget"] <= 1).all()


def test_saturation_fractions_on_constructed_gates():
    gates = np.array([[0.05, 0.5, 0.95],
                      [0.05, 0.5, 0.5],
                      [0.5, 0.95, 0.95],
                      [0.05, 0.01, 0.99]])
    left, right = gate_saturation(gates)
    assert left.tolist() == [0.75, 0.25, 0.0] and right.tolist() == [0.0, 0.25, 0.75]


def test_saturation_of_a_model_with_known_saturated_gates():
    model = StackedRNN(5, "lstm", 1, 4).eval()
    layer = model.layers[0]
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        # PyTorch's order is input, forget, candidate, output: 4 units each
        layer.bias_ih_l0[0:4] = 20.0   # input gate always open: right-saturated
        layer.bias_ih_l0[4:8] = -20.0  # forget gate always shut: left-saturated
    (t,) = trace(model, [1, 2, 3, 4, 0, 1])
    sat = layer_saturation("lstm", {k: v.numpy() for k, v in t.gates.items()}, t.hidden.numpy())
    assert sat["input"][1].tolist() == [1.0] * 4 and sat["input"][0].tolist() == [0.0] * 4
    assert sat["forget"][0].tolist() == [1.0] * 4
    assert sat["output"][0].tolist() == [0.0] * 4 and sat["output"][1].tolist() == [0.0] * 4  # sigmoid(0)=0.5


def test_gradient_norms_equal_get_total_norm(small_config):
    trainer = Trainer(small_config.replace(clip=0, report_every=1, layers=3))
    steps = trainer.steps()
    next(steps)  # one step; report_every=1 reports it
    record = trainer.metrics.last()
    grads = [p.grad for p in trainer.model.parameters()]
    assert record["grad_norm"] == pytest.approx(float(torch.nn.utils.get_total_norm(grads)), rel=1e-5)
    for i, layer in enumerate(trainer.model.layers):
        assert record["grad_ih"][i] == pytest.approx(float(torch.nn.utils.get_total_norm([layer.weight_ih_l0.grad])), rel=1e-5)
        assert record["grad_hh"][i] == pytest.approx(float(torch.nn.utils.get_total_norm([layer.weight_hh_l0.grad])), rel=1e-5)
    assert record["clipped"] == 0.0


def test_clipping_is_counted_and_applied(small_config):
    trainer = Trainer(small_config.replace(clip=1e-4, report_every=1))
    next(trainer.steps())
    grads = [p.grad for p in trainer.model.parameters()]
    assert float(torch.nn.utils.get_total_norm(grads)) == pytest.approx(1e-4, rel=1e-3)
    assert trainer.metrics.last()["clipped"] == 1.0 and trainer.metrics.last()["grad_norm"] > 1e-4


def test_pattern_masks():
    tokens = list("the time traveller")
    assert "".join("^" if m else "." for m in pattern_mask(tokens, "first letter of a word")) == "^...^....^........"
    assert "".join("^" if m else "." for m in pattern_mask(tokens, "after a space")) == "....^....^........"
    assert pattern_mask(tokens, "inside a word longer than 6 letters").sum() == len("traveller")
    assert pattern_mask(["the", "time"], "t").tolist() == [True, True]  # word tokens
    accented = list("été éblouissant")  # letters of any alphabet, as the cleaning keeps them
    assert "".join("^" if m else "." for m in pattern_mask(accented, "first letter of a word")) == "^...^.........."
    assert pattern_mask(accented, "inside a word longer than 6 letters").sum() == len("éblouissant")
    short = pattern_mask(["été", "à", "éblouissant"], "a short word (3 letters or fewer)", separator=" ")
    assert short.tolist() == [True, True, False]
    with pytest.raises(PatternError, match="regular expression"):
        pattern_mask(tokens, "([")


SERVER_STAYS_UP = """
import threading, time
from deeprnn.introspect import PatternError, pattern_mask
from deeprnn.session import DEFAULT_PROBE
ticks, done = [], threading.Event()


def tick():
    while not done.is_set():
        ticks.append(1)
        time.sleep(0.01)


threading.Thread(target=tick).start()
try:
    pattern_mask(list(DEFAULT_PROBE), "(?:.|.)*(?=z)")  # backtracks for ever
except PatternError as err:
    print(err)
done.set()
print("ticks", len(ticks))
"""


def test_a_pattern_that_backtracks_for_ever_gives_up_and_never_stops_the_other_threads():
    """With the standard re this ran for ever and held the GIL: the page's server stood still, every tab.
    In a subprocess, so that the old behaviour fails the test rather than hanging it."""
    result = subprocess.run([sys.executable, "-c", SERVER_STAYS_UP], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    said, ticks = result.stdout.strip().splitlines()
    assert said == "the regular expression took over 0.5 s on the probe text; try a simpler one"
    assert int(ticks.split()[1]) >= 10  # another thread ran all along (10 ms a tick)


def test_word_tokens_are_matched_in_the_text_as_written_with_their_spaces():
    """Joined without their spaces, every word after the first lost its word boundary."""
    words = ["the", "time", "traveller", "for", "so"]
    marks = lambda pattern: pattern_mask(words, pattern, separator=" ").tolist()
    assert marks("first letter of a word") == [True] * 5
    assert marks("after a space") == [False, True, True, True, True]
    assert marks("inside a word longer than 6 letters") == [False, False, True, False, False]
    assert marks("a space") == [False] * 5  # the spaces belong to no word
    assert marks("r f") == [False, False, True, True, False]  # a match across a space marks both words


def test_pattern_search_finds_a_planted_unit():
    """Unit 1 fires on a space; unit 0 copies unit 1 one step later, so it tracks 'after a space'."""
    text = "the time traveller for so it will be convenient to speak of him was expounding a recondite matter"
    vocab = sorted(set(text))
    ids = [vocab.index(ch) for ch in text]
    torch.manual_seed(0)
    model = StackedRNN(len(vocab), "rnn", 2, 8).eval()
    layer = model.layers[0]
    with torch.no_grad():
        layer.weight_ih_l0.mul_(0.1)
        layer.weight_hh_l0.mul_(0.1)
        layer.weight_ih_l0[0:2] = 0.0
        layer.weight_hh_l0[0:2] = 0.0
        layer.bias_ih_l0[0:2] = -3.0
        layer.bias_hh_l0[0:2] = 0.0
        layer.weight_ih_l0[1, vocab.index(" ")] = 6.0
        layer.weight_hh_l0[0, 1] = 6.0
    layers = [t.hidden.numpy() for t in trace(model, ids)]
    ranked = rank_units(layers, pattern_mask(list(text), "after a space"), top=3)
    assert (ranked[0]["layer"], ranked[0]["unit"]) == (1, 0) and ranked[0]["correlation"] > 0.95
    spaces = rank_units(layers, pattern_mask(list(text), "a space"), top=1)
    assert (spaces[0]["layer"], spaces[0]["unit"]) == (1, 1)
    with pytest.raises(PatternError, match="all or none"):
        rank_units(layers, pattern_mask(list(text), "z{5}"))


def test_units_that_hardly_move_are_not_ranked_however_well_they_correlate():
    mask = np.array([True, False] * 10)
    rng = np.random.default_rng(0)
    states = rng.uniform(-0.5, 0.5, (20, 3))
    states[:, 0] = 0.01 * mask  # a perfect match, too small to be seen in the coloured text
    states[:, 1] = 0.3 * mask + rng.uniform(-0.1, 0.1, 20)  # a good match that moves
    ranked = rank_units([states], mask)
    assert [row["unit"] for row in ranked][:1] == [1] and 0 not in [row["unit"] for row in ranked]
    with pytest.raises(PatternError, match="spans"):
        rank_units([states[:, :1]], mask)
