"""Divergence: a loss that turns NaN, infinite or explodes stops or pauses the run with a clear
message, keeps the last good weights, and lets training go on from them with a new rate."""
import subprocess
import sys

import pytest
import torch

from deeprnn.train import Diverged, Trainer

from support import wait_for


def test_divergence_raises_and_keeps_last_good_weights(small_config):
    trainer = Trainer(small_config.replace(optimizer="sgd", lr=1.0, report_every=2, clip=0))
    steps = trainer.steps()
    next(steps), next(steps)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.head.bias.fill_(float("nan"))  # poison the weights: the next loss is NaN
    with pytest.raises(Diverged, match="diverged at step 3: .* went back to those of step 2, the last good") as err:
        next(steps), next(steps)
    assert err.value.step == 3
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, good[k]), k
    trainer.set_lr(0.1)
    assert any(r for r in trainer.steps())  # training resumes from the kept weights


def test_divergence_exits_3_and_saves_good_weights(tmp_path):
    ckpt = tmp_path / "d.pt"
    proc = subprocess.run([sys.executable, "-m", "deeprnn", "train", "--max-tokens", "3000", "--hidden", "16", "--embedding", "8",
                           "--batch", "4", "--steps", "8", "--device", "cpu", "--optimizer", "sgd", "--lr", "100",
                           "--clip", "0", "--cell", "rnn", "--epochs", "30", "--save", str(ckpt)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: diverged at step")
    assert "Traceback" not in proc.stderr and ckpt.exists()


def test_divergence_pauses_with_message_and_resumes_with_new_lr(session, config):
    session.start(config.replace(optimizer="sgd", lr=100.0, clip=0, cell="rnn"))
    snap = wait_for(lambda: (s := session.snapshot()).status == "paused" and s)
    assert snap.message.startswith("diverged at step") and "lowered learning rate" in snap.message
    session.set_lr(0.01)
    session.resume()
    wait_for(lambda: session.snapshot().status == "running" and session.snapshot().step > snap.step)
