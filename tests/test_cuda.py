"""On a CUDA GPU: the training step recorded as a CUDA graph trains like the eager step
(losses within 0.01%).

Skipped where there is no GPU (CI); run on one with `python -m pytest -q tests/test_cuda.py`.
"""
import math

import pytest
import torch

from deeprnn.graph import CapturedStep
from deeprnn.model import CELLS, StackedRNN
from deeprnn.train import Diverged, Trainer

from support import button, rerun_until, wait_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def gpu_config(small_config):
    return small_config.replace(device="cuda", report_every=1, epochs=3, precision="fp32")


def losses(trainer, changes=None):
    """Every step's loss; `changes` maps a step number to a function applied to the trainer there."""
    for report in trainer.steps():
        if changes and report and trainer.step in changes:
            changes[trainer.step](trainer)
    return [r["loss"] for r in trainer.metrics.records()]


def recorded(trainer) -> bool:
    return isinstance(trainer._step, CapturedStep) and trainer._step.graph is not None


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_all_layers_in_one_call_compute_what_the_layers_do_one_by_one(cell):
    torch.manual_seed(0)
    model = StackedRNN(11, cell, 3, 32, embedding=8, weight_drop=0.0).cuda()
    ids = torch.randint(0, 11, (4, 9), device="cuda")
    together, together_state = model(ids)
    one_by_one, one_by_one_state, _ = model(ids, return_layers=True)
    assert torch.allclose(together, one_by_one, atol=1e-5)
    for a, b in zip(together_state, one_by_one_state):
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b)) if cell == "lstm" else torch.allclose(a, b, atol=1e-5)
    grads = [torch.autograd.grad(out.square().sum(), list(model.parameters())) for out in (together, one_by_one)]
    assert all(torch.allclose(g1, g2, atol=1e-4) for g1, g2 in zip(*grads))


def test_dropout_and_weight_drop_learn_on_the_gpu_as_on_the_cpu(gpu_config):
    config = gpu_config.replace(dropout=0.2, weight_drop=0.3, hidden=64, epochs=6, report_every=0, precision="fp32")
    held_out = {device: Trainer(config.replace(device=device)) for device in ("cuda", "cpu")}
    for trainer in held_out.values():
        losses(trainer)
    assert recorded(held_out["cuda"])
    assert held_out["cuda"].evals.last()["val_ppl"] == pytest.approx(held_out["cpu"].evals.last()["val_ppl"], rel=0.1)


@pytest.mark.parametrize("recipe", [dict(), dict(optimizer="sgd", lr=1.0, embedding=0),
                                    dict(schedule="cosine", iterator="random", cell="gru", layers=3)])
def test_recorded_step_trains_like_the_eager_step(gpu_config, recipe):
    config = gpu_config.replace(**recipe)
    graphed, eager = Trainer(config), Trainer(config.replace(cuda_graph="off"))
    graphed_losses, eager_losses = losses(graphed), losses(eager)
    assert recorded(graphed) and not isinstance(eager._step, CapturedStep)
    assert len(graphed_losses) > 20 and graphed_losses == pytest.approx(eager_losses, rel=1e-4)


def test_rate_and_clip_changes_mid_run_reach_the_recorded_step(gpu_config):
    changes = {8: lambda t: t.set_lr(0.02), 14: lambda t: t.set_clip(0.05)}
    graphed, eager = Trainer(gpu_config), Trainer(gpu_config.replace(cuda_graph="off"))
    graphed_losses, eager_losses = losses(graphed, changes), losses(eager, changes)
    assert recorded(graphed) and graphed_losses == pytest.approx(eager_losses, rel=1e-4)
    assert losses(Trainer(gpu_config)) != pytest.approx(eager_losses, rel=1e-4)  # the changes mattered


def test_dropout_masks_change_from_replay_to_replay(gpu_config):
    trainer = Trainer(gpu_config.replace(dropout=0.5, weight_drop=0.5, lr=1e-9))
    x, y = trainer.train_ids[:128].view(8, 16), trainer.train_ids[1:129].view(8, 16)
    state = trainer.model.begin_state(8, trainer.device)
    step_losses = [float(trainer._step(x, y, state)[0]) for _ in range(CapturedStep.EAGER_STEPS + 3)]
    assert recorded(trainer)
    assert len(set(step_losses[-3:])) == 3  # the same batch and weights: only fresh masks tell them apart


def test_divergence_restores_and_training_goes_on_with_a_new_recording(gpu_config):
    trainer = Trainer(gpu_config.replace(report_every=2))
    steps = trainer.steps()
    while trainer.step < 6:  # past the eager warm-up: the step is recorded
        next(steps)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.head.bias.fill_(float("nan"))  # in place: the recorded step reads it at the next replay
    with pytest.raises(Diverged, match="diverged at step 7"):
        next(steps), next(steps)
    assert all(torch.equal(v, good[k]) for k, v in trainer.model.state_dict().items())
    assert all(math.isfinite(loss) for loss in losses(trainer)[-5:]) and recorded(trainer)


def test_a_gpu_checkpoint_resumes_on_the_cpu(gpu_config, tmp_path):
    trainer = Trainer(gpu_config.replace(schedule="cosine"))
    losses(trainer)
    trainer.save(tmp_path / "run.pt")
    resumed = Trainer.resume(tmp_path / "run.pt", device="cpu", epochs=4)
    assert resumed.device.type == "cpu" and math.isfinite(losses(resumed)[-1])
    on_gpu = Trainer.resume(tmp_path / "run.pt", epochs=4)
    assert math.isfinite(losses(on_gpu)[-1]) and recorded(on_gpu)


def test_auto_precision_is_bf16_on_recent_gpus_and_learns_like_fp32(gpu_config):
    runs = {p: Trainer(gpu_config.replace(precision=p, report_every=0)) for p in ("fp32", "auto")}
    for trainer in runs.values():
        losses(trainer)
    recent = torch.cuda.get_device_capability(0) >= (8, 0)
    assert runs["auto"].precision is (torch.bfloat16 if recent else None) and recorded(runs["auto"])
    assert runs["auto"].evals.last()["val_ppl"] == pytest.approx(runs["fp32"].evals.last()["val_ppl"], rel=0.03)
    assert all(p.dtype == torch.float32 for p in runs["auto"].model.parameters())


def test_the_session_trains_and_probes_on_the_gpu(session, config):
    session.start(config.replace(device="auto"))
    snap = wait_for(lambda: (s := session.snapshot()).step > 50 and s.probe and s.samples and s, timeout=60)
    assert snap.device.startswith(f"cuda ({torch.cuda.get_device_name(0)})") and snap.status == "running"
    assert snap.probe.hidden[0].shape[1] == 32 and snap.samples.greedy.startswith("time traveller")


def test_the_page_names_the_gpu(app):
    """The device metric, read after Start on the page's default device (auto)."""
    button(app, "Start").click()
    name = torch.cuda.get_device_name(0)
    rerun_until(app, lambda at: any(m.label == "device" and name in str(m.value) for m in at.metric))
