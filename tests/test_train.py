import math
import subprocess
import sys

import pytest
import torch

from deeprnn import device
from deeprnn.checkpoint import CheckpointError
from deeprnn.config import ConfigError
from deeprnn.generate import continue_text
from deeprnn.graph import make_capturable
from deeprnn.train import LOST_MARGIN, LOST_STEPS, RATE_WINDOW_S, Trainer, model_from_checkpoint, still_lost

from repo import ROOT  # bench/repo.py, on the path from conftest


def run(trainer):
    return [r for r in trainer.steps() if r]


def test_loss_falls_far_below_uniform(small_config):
    trainer = Trainer(small_config.replace(epochs=6, hidden=64, lr=1e-2))
    reports = run(trainer)
    uniform = math.log(len(trainer.corpus.vocab))
    assert reports[-1]["loss"] < 0.75 * uniform
    assert trainer.evals.last()["val_ppl"] < math.exp(0.8 * uniform)
    assert trainer.best["val_ppl"] == min(r["val_ppl"] for r in trainer.evals.records())


def test_a_run_that_does_worse_than_guessing_is_told_so(small_config):
    """Its loss stays finite, far under the divergence line, so nothing else told the user."""
    lost = Trainer(small_config.replace(lr=1.0, report_every=1))
    notes = [(lost.step, lost.lost_note(), lost.notices) for report in lost.steps() if report]
    assert all(note is None for step, note, _ in notes if step < LOST_STEPS)  # too few steps to tell
    told = [(note, notices) for _, note, notices in notes if note]
    vocab = len(lost.corpus.vocab)
    assert told and f"past {LOST_MARGIN:g} times the {vocab} of guessing" in told[0][0]
    assert "lost at a learning rate of 1," in told[0][0]
    assert told[0][1][-1] == told[0][0]  # among the run's notices, which the page shows


def test_a_lost_run_is_no_longer_told_so_once_a_lower_rate_brings_it_back(small_config):
    trainer = Trainer(small_config.replace(lr=1.0, report_every=1, epochs=1000))
    steps = trainer.steps()
    while not trainer.lost and trainer.step < 100:
        next(steps)
    trainer.set_lr(3e-2)
    lost_at = trainer.step
    next(steps)
    assert "lost at a learning rate of 1," in trainer.lost_note()  # not the rate that is to bring it back
    while trainer.lost and trainer.step < 500:
        next(steps)
    assert lost_at < 100 and trainer.step < 500 and trainer.lost_note() is None


def test_a_lost_run_is_found_again_under_the_guess_not_under_the_line_that_lost_it():
    vocab = 28
    between = math.log(1.2 * vocab)  # worse than the guess, under LOST_MARGIN of them
    assert LOST_MARGIN > 1.2
    assert not still_lost(between, vocab, was_lost=False) and still_lost(between, vocab, was_lost=True)
    assert still_lost(math.log(2 * vocab), vocab, was_lost=False)
    assert not still_lost(math.log(0.9 * vocab), vocab, was_lost=True)


@pytest.mark.parametrize("lr", [3e-3, 1e-5])
def test_a_run_that_learns_or_sits_at_the_guess_is_not_told_it_is_lost(small_config, lr):
    """A run that learns slowly stays near the guess's perplexity, above it as often as not."""
    trainer = Trainer(small_config.replace(lr=lr, report_every=1))
    notes = [trainer.lost_note() for report in trainer.steps() if report]
    assert len(notes) > 2 * LOST_STEPS and not any(notes)


def test_report_points_and_counters(small_config):
    trainer = Trainer(small_config.replace(report_every=3))
    reports = run(trainer)
    steps_per_epoch = trainer.step // 2
    assert [r["step"] for r in reports if not r.get("end_of_epoch")] == list(range(3, trainer.step + 1, 3))
    assert sum(1 for r in reports if r.get("end_of_epoch")) == 2
    assert trainer.tokens == trainer.step * 8 * 16 and steps_per_epoch > 3
    assert all(r["tokens_per_s"] > 0 for r in trainer.metrics.records())


def test_shown_speed_spans_points_not_the_last_one(small_config):
    """A last point over one slow step (10 tokens in 0.1 s) must not set the speed a run shows."""
    assert RATE_WINDOW_S == 2.0
    trainer = Trainer(small_config)
    assert trainer.recent_tokens_per_s() == 0.0
    trainer.metrics.append({"tokens": 1000, "seconds": 1.0})
    assert trainer.recent_tokens_per_s() == 1000.0  # shorter than the window: the whole run
    for tokens, seconds in ((3000, 2.0), (5000, 3.0), (5010, 3.1)):
        trainer.metrics.append({"tokens": tokens, "seconds": seconds})
    assert trainer.recent_tokens_per_s() == pytest.approx((5010 - 1000) / (3.1 - 1.0))


def test_same_seed_same_result(small_config):
    first, second = Trainer(small_config), Trainer(small_config)
    run(first), run(second)
    assert first.perplexity() == second.perplexity()


def test_lr_change_applies_at_next_step(small_config):
    trainer = Trainer(small_config.replace(optimizer="sgd", lr=0.5, report_every=1))
    steps = trainer.steps()
    next(steps), next(steps)
    trainer.set_lr(0.125)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.125
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    report = next(steps)
    assert report["lr"] == 0.125 and trainer.events[-1] == {"step": 2, "kind": "lr", "value": 0.125}
    # plain SGD without clipping moved each weight by exactly lr * grad
    trainer.config = trainer.config.replace(clip=0)
    snapshot = {k: v.clone() for k, v in trainer.model.named_parameters()}
    next(steps)
    for name, p in trainer.model.named_parameters():
        assert torch.allclose(snapshot[name] - 0.125 * p.grad, p.data, atol=1e-6), name
    assert before


def test_cosine_schedule_decays_to_five_percent_over_the_budget(small_config):
    trainer = Trainer(small_config.replace(schedule="cosine", lr=0.1, epochs=3, report_every=1))
    lrs = [r["lr"] for r in trainer.steps() if r and not r.get("end_of_epoch")]
    assert lrs[0] == pytest.approx(0.1, rel=1e-3) and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(0.005, rel=0.05)
    assert trainer.optimizer.param_groups[0]["lr"] == lrs[-1]
    trainer.set_lr(0.2)  # a new peak: the schedule's factor still applies
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * lrs[-1] / 0.1, rel=0.05)


def test_rates_held_as_tensors_train_alike_and_save_as_plain_numbers(small_config, tmp_path):
    """What a CUDA-graph step needs (make_capturable), tried on the CPU: the schedule writes the
    rate tensor in place, training matches float rates, and a checkpoint holds plain numbers."""
    config = small_config.replace(schedule="cosine", lr=0.01, epochs=2, report_every=1)
    plain, tensors = Trainer(config), Trainer(config)
    make_capturable(tensors.optimizer)
    rate = tensors.optimizer.param_groups[0]["lr"]
    run(tensors), run(plain)
    losses = [[r["loss"] for r in t.metrics.records()] for t in (tensors, plain)]
    assert len(losses[0]) > 10 and losses[0] == pytest.approx(losses[1], rel=1e-3)  # float32 rates: 1e-4 apart
    tensors.save(tmp_path / "run.pt")
    assert tensors.optimizer.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(plain.lr)
    saved = torch.load(tmp_path / "run.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert type(saved["lr"]) is float and saved["capturable"] is False
    resumed = Trainer.resume(tmp_path / "run.pt")  # at the end of the budget: 5% of the peak rate
    assert type(resumed.optimizer.param_groups[0]["lr"]) is float and resumed.lr == pytest.approx(0.05 * config.lr)


def test_held_out_evaluated_every_n_minibatches(small_config):
    trainer = Trainer(small_config.replace(eval_every=5, epochs=1))
    reports = [r for r in trainer.steps() if r]
    assert [e["step"] for e in trainer.evals.records()] == [*range(5, trainer.step + 1, 5), trainer.step]
    assert all(r["val_ppl"] for r in reports)


def test_checkpoint_round_trip_and_resume(small_config, tmp_path):
    trainer = Trainer(small_config.replace(epochs=2))
    run(trainer)
    path = tmp_path / "run.pt"
    trainer.save(path)
    model, codec, config = model_from_checkpoint(path)
    assert config == trainer.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, trainer.model.state_dict()[k])
    assert continue_text(model, codec, "time traveller", 20) == continue_text(trainer.model, trainer.codec, "time traveller", 20)
    resumed = Trainer.resume(path, epochs=4)
    assert resumed.step == trainer.step and len(resumed.metrics) == len(trainer.metrics)
    run(resumed)
    assert resumed.epoch == 4 and resumed.step == 2 * trainer.step
    assert [e["epoch"] for e in resumed.evals.records()] == [1, 2, 3, 4]
    with pytest.raises(CheckpointError, match="cannot resume with hidden 64: the checkpoint's run has 32,"):
        Trainer.resume(path, hidden=64)


def test_generation_handles_unknown_characters_and_sampling(small_config):
    trainer = Trainer(small_config)
    text = continue_text(trainer.model, trainer.codec, "Zürich 42 ☃", 10, temperature=1.0, top_k=3, seed=1)
    # cleaned like the corpus: each run of other characters is one space; a letter the text never has is <unk>
    assert text.startswith("z<unk>rich ") and len(text) == len("z<unk>rich ") + 10
    again = continue_text(trainer.model, trainer.codec, "Zürich 42 ☃", 10, temperature=1.0, top_k=3, seed=1)
    assert text == again


@pytest.mark.parametrize("err, asked", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 22682992640 bytes. Error code 12 (Cannot allocate memory)"), "21.13 GiB"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.8 GiB "
                            "of which 1.2 GiB is free."), "2.00 GiB"),
])
def test_an_allocation_the_device_refused_is_told_as_what_to_lower(err, asked):
    message = device.describe_out_of_memory(err)
    assert message.startswith(f"out of memory (it asked for {asked} at once): ") and "batch x steps" in message
    assert device.describe_out_of_memory(RuntimeError("shapes do not match")) is None


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert device.resolve_precision("fp32", cpu) is None
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: False)
    assert device.resolve_precision("auto", cpu) is None  # emulated bf16 would be slower
    with pytest.raises(ConfigError, match="precision bf16 needs a CPU with bf16 instructions"):
        device.resolve_precision("bf16", cpu)  # oneDNN's LSTM cannot run it there
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: True)
    assert device.resolve_precision("auto", cpu) is torch.bfloat16
    assert device.resolve_precision("bf16", cpu) is torch.bfloat16


@pytest.mark.skipif(not device.cpu_multiplies_bf16(), reason="this CPU has no bf16 instructions (AMX or AVX512-BF16)")
def test_bf16_products_learn_like_fp32_and_keep_fp32_weights(small_config):
    runs = {p: Trainer(small_config.replace(precision=p, epochs=3)) for p in ("fp32", "bf16")}
    for trainer in runs.values():
        run(trainer)
    fp32, bf16 = (runs[p].evals.last()["val_ppl"] for p in ("fp32", "bf16"))
    assert bf16 == pytest.approx(fp32, rel=0.03)  # the same model learns the same amount
    assert runs["bf16"].precision is torch.bfloat16 and runs["bf16"].device_label == "cpu, bf16, 1 thread"
    assert all(p.dtype == torch.float32 for p in runs["bf16"].model.parameters())
    assert runs["fp32"].evals.last()["val_ppl"] != bf16  # the products really were rounded


# Counted in a process of its own on one torch thread. In the test run's process, what earlier tests
# left (its heap, the torch threads they set) can decide where a step's memory comes from and which
# thread first touches it: once, last in a full run, neither setting faulted at all (cause not found).
FAULTS_SCRIPT = """
import ctypes, resource, sys, torch
from deeprnn import device
from deeprnn.config import RunConfig
from deeprnn.train import Trainer

def minor_faults_over(steps, count):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(count):
        next(steps)
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

torch.set_num_threads(1)
trainer = Trainer(RunConfig.from_dict(eval(sys.argv[1])))
if not device.keep_freed_memory():
    print("no mallopt")
    sys.exit()
steps = trainer.steps()
minor_faults_over(steps, 5)
kept = minor_faults_over(steps, 20)
mallopt = ctypes.CDLL(None).mallopt
mallopt(device.M_MMAP_THRESHOLD, 128 << 10)  # glibc's starting thresholds
mallopt(device.M_TRIM_THRESHOLD, 128 << 10)
print(kept, minor_faults_over(steps, 20))
"""


def test_training_reuses_freed_memory_instead_of_faulting_it_in_every_step(small_config):
    """glibc's defaults hand a step's freed activations back to the system and fault them in again
    on the next step (most of all in the main thread, where the CLI trains)."""
    config = small_config.replace(hidden=256, batch=32, steps=32, epochs=100)
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, repr(config.to_dict())], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout.split()
    if out == ["no", "mallopt"]:
        pytest.skip("the C library here has no mallopt")
    kept, handed_back = map(int, out)
    assert kept * 5 < handed_back
