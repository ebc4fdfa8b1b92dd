"""Checkpoints: truncated, corrupted, foreign or malicious files are refused with a clear error and
never unpickled; a failed save leaves the previous checkpoint whole."""
import os
import pickle
import random
import warnings

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deeprnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from deeprnn.train import Trainer


@pytest.fixture
def saved(tmp_path, small_config):
    trainer = Trainer(small_config)
    path = tmp_path / "good.pt"
    trainer.save(path)
    return trainer, path


def test_corrupt_and_foreign_checkpoints_are_refused(saved, tmp_path):
    _, good = saved
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pt")
    for name in ("truncated", "garbage", "foreign", "pickled_module"):
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(tmp_path / f"{name}.pt")
        # torch's own words for a refused pickle advise loading it unsafely ("weights_only set to False")
        assert "weights_only" not in str(refused.value)
    assert load_checkpoint(good)["counters"]["step"] == 0


class Payload:
    """Unpickling this would run code: weights_only loading must refuse it untouched."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_malicious_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Payload(marker)}, f, protocol=2)
    torch.save({"model": Payload(marker)}, tmp_path / "evil-zip.pt")
    for evil in (path, tmp_path / "evil-zip.pt"):
        with pytest.raises(CheckpointError):
            load_checkpoint(evil)
    assert not marker.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1, exclude_max=True), flips=st.lists(st.integers(0, 2**31), max_size=8))
def test_any_damage_to_a_checkpoint_is_a_clean_error_or_a_whole_checkpoint(saved, tmp_path, cut, flips):
    trainer, good = saved
    data = bytearray(good.read_bytes())
    for flip in flips:
        data[flip % len(data)] ^= 0xFF
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data[: max(1, int(len(data) * cut))] if cut else data))
    try:
        payload = load_checkpoint(damaged)
    except CheckpointError as err:
        assert str(damaged) in str(err) or "checkpoint" in str(err)
    else:  # flipped bytes inside a tensor's data still load: the structure must be the whole one
        assert set(payload) == set(load_checkpoint(good))
        assert payload["model"].keys() == trainer.model.state_dict().keys()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=3000))
@example(data=random.Random(0).randbytes(3000))  # the unpickler ran out of stack: an IndexError
@example(data=b"\x80\xdcabc")  # torch warned of "pickle protocol 220" on the CLI's stderr before the error
def test_any_bytes_that_are_not_a_checkpoint_are_a_clean_error_and_nothing_else(tmp_path, data):
    path = tmp_path / "bytes.pt"
    path.write_bytes(data)
    with warnings.catch_warnings(record=True) as warned, \
            pytest.raises(CheckpointError, match="bytes.pt is (not a readable deeprnn checkpoint|a PyTorch file but)"):
        warnings.simplefilter("always")
        load_checkpoint(path)
    assert not warned, warned[0].message


def test_failed_save_keeps_previous_checkpoint(saved, tmp_path, monkeypatch):
    trainer, path = saved
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_checkpoint(trainer.checkpoint(), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["good.pt"]
