#!/usr/bin/env python3
"""Throughput at the book's recipe: deeprnn beside the book's reference, same machine, same run.

Loads ../shared/bench/d2l_reference.py and deeprnn's `--preset d2l` into one process and trains
them in alternating rounds of a few epochs each, so that both see the same machine at the same
moments (a shared 2-core machine drifts by tens of percent between runs). Prints tokens/s per
round, the median ratio, and both perplexities after the same number of epochs with the same
seed. On a machine with CUDA it does the same on the GPU. On the CPU it also prints how fast the
float32 matrix products alone would let the recipe train, timed at their shapes on this CPU with
torch's threads: a float32 trainer that does these products one after another cannot beat that,
whatever else it saves.

    python bench/throughput.py --rounds 6 --epochs-per-round 10
    python bench/throughput.py --rounds 50 --epochs-per-round 10   # the book's 500 epochs: fidelity
    python bench/throughput.py --precision fp32                      # float32 products only
    python bench/throughput.py --devices cuda --cuda-graph off       # the GPU, each step launched eagerly
"""
import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from repo import ROOT
from deeprnn.config import CHOICES, preset
from deeprnn.generate import continue_text
from deeprnn.train import Trainer
from timing import median_ms

REFERENCE = ROOT.parent / "shared" / "bench" / "d2l_reference.py"


def load_reference(path: Path):
    spec = importlib.util.spec_from_file_location("d2l_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus_path() -> str:
    data_dir = os.environ.get("DEEPRNN_DATA_DIR")
    if data_dir:
        return str(Path(data_dir) / "timemachine.txt")
    from deeprnn.corpus import timemachine_path
    return str(timemachine_path())


class Book:
    """The reference's own functions, epoch by epoch, as its main() runs them."""

    def __init__(self, ref, device: str):
        torch.manual_seed(0)
        self.ref, self.device = ref, torch.device(device)
        self.args = SimpleNamespace(batch=32, steps=35, seed=0)
        self.corpus, self.vocab = ref.load_corpus(corpus_path(), 10_000)
        vocab = self.vocab
        lstm = torch.nn.LSTM(len(vocab), 256, num_layers=2)
        self.model = ref.RNNModel(lstm, len(vocab)).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), 2.0)
        self.loss = torch.nn.CrossEntropyLoss()
        self.epoch, self.ppl = 0, float("nan")

    def train_epochs(self, n: int) -> int:
        tokens = 0
        for _ in range(n):
            self.ppl, count = self.ref.train_epoch(self.model, self.corpus, self.args, self.device, self.optimizer,
                                                   self.loss, self.epoch)
            self.epoch += 1
            tokens += count
        return tokens


class Ours:
    def __init__(self, device: str, precision: str, cuda_graph: str):
        self.trainer = Trainer(preset("d2l", device=device, precision=precision, cuda_graph=cuda_graph,
                                      epochs=100_000))
        self.steps = self.trainer.steps()

    def train_epochs(self, n: int) -> int:
        start, goal = self.trainer.tokens, self.trainer.epoch + n
        while self.trainer.epoch < goal:
            next(self.steps)
        return self.trainer.tokens - start

    @property
    def ppl(self) -> float:
        return self.trainer.perplexity()


def timed(runner, epochs: int, device: str) -> float:
    """tokens/s of `epochs` epochs, the wall clock read after the device has finished."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    tokens = runner.train_epochs(epochs)
    sync()
    return tokens / (time.perf_counter() - started)


def compare(device: str, precision: str, cuda_graph: str, rounds: int, epochs: int, reference: Path) -> None:
    book, ours = Book(load_reference(reference), device), Ours(device, precision, cuda_graph)
    label = ours.trainer.device_label  # the device and, where used, bf16
    if device == "cuda":
        label += ", CUDA graph" if cuda_graph == "auto" else ", eager"
    ratios, book_speeds = [], []
    for i in range(rounds):
        book_speed, our_speed = timed(book, epochs, device), timed(ours, epochs, device)
        ratios.append(our_speed / book_speed)
        book_speeds.append(book_speed)
        print(f"| {label} | {i + 1} | {book_speed:,.0f} | {our_speed:,.0f} | {ratios[-1]:.2f}x |", flush=True)
    print(f"| {label} | median of {rounds} | | | {statistics.median(ratios):.2f}x |")
    print(f"\nafter {book.epoch} epochs, same seed: perplexity reference {book.ppl:.3f}, deeprnn {ours.ppl:.3f}")
    print(f"reference: {book.ref.predict('time traveller', 50, book.model, book.vocab, book.device)}")
    print(f"deeprnn:   {continue_text(ours.trainer.model, ours.trainer.codec, 'time traveller', 50)}\n")
    if device == "cpu":  # how far float32 could go here: the products alone, at this CPU's speed
        # Not a bound everywhere: on a Zen 4 EPYC the reference trained faster than this, since oneDNN's
        # LSTM kernel multiplies faster than torch's products one by one (bench/results/throughput-cpu.md)
        bound = float32_product_bound(ours.trainer.model, ours.trainer.config)
        print(f"float32 matrix products alone, each timed at its shape on this CPU: {bound:,.0f} tokens/s "
              f"if a step did nothing else, {bound / statistics.median(book_speeds):.2f}x the reference's median\n")


def product_ms(m: int, k: int, n: int) -> float:
    """Median milliseconds of an (m x k) by (k x n) float32 matrix product on this CPU."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    return median_ms(lambda: a @ b, repeat=40)[0]


def float32_product_bound(model, config) -> float:
    """tokens/s of this recurrent model if a float32 training step did nothing but its matrix
    products, each at the speed this CPU does it at its shape: per layer and time step, the
    recurrent product and its backward's product for the state, one after the other; over all time
    steps at once, the input product of every layer but the first, the weight gradients, the
    gradient for every layer's output but the last's, and the output layer's three. The first
    layer's one-hot input product is left out (a lookup can replace it). No activations, no
    optimizer, no overhead."""
    gates, hidden = model.layers[0].weight_hh_l0.shape  # 4 x hidden for an LSTM
    layers, vocab, tokens = model.num_layers, model.vocab_size, config.steps * config.batch
    per_time_step = product_ms(config.batch, hidden, gates) + product_ms(config.batch, gates, hidden)
    over_all_steps = ((layers - 1) * (product_ms(tokens, hidden, gates) + product_ms(tokens, gates, hidden))
                      + (2 * layers - 1) * product_ms(gates, tokens, hidden)
                      + product_ms(tokens, hidden, vocab) + product_ms(vocab, tokens, hidden)
                      + product_ms(tokens, vocab, hidden))
    return tokens / ((layers * config.steps * per_time_step + over_all_steps) / 1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs-per-round", type=int, default=10)
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--precision", default="auto", choices=CHOICES["precision"],
                        help="deeprnn's precision (the reference always computes in float32)")
    parser.add_argument("--cuda-graph", default="auto", choices=CHOICES["cuda_graph"],
                        help="on CUDA, deeprnn's step recorded as a graph (auto) or launched eagerly (off)")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"],
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args = parser.parse_args()
    print(f"book's recipe (2-layer LSTM 256, one-hot, batch 32, 35 steps, SGD lr 2), {torch.get_num_threads()} "
          f"CPU threads, torch {torch.__version__}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print("\n| deeprnn on | round | reference tokens/s | deeprnn tokens/s | ratio |\n| --- | --- | --- | --- | --- |")
    for device in args.devices:
        compare(device, args.precision, args.cuda_graph, args.rounds, args.epochs_per_round, args.reference)


if __name__ == "__main__":
    main()
