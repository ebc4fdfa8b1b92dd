import os
from pathlib import Path

import pytest
import torch

# Tests read the book's corpus from the shared copy (these machines have no internet).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("DEEPRNN_DATA_DIR", str(SHARED_DATA))
torch.set_num_threads(1)  # several tests train at once under the session tests; keep them polite

from deeprnn.config import RunConfig  # noqa: E402


@pytest.fixture
def small_config():
    """A slice of The Time Machine and a tiny model: trains in well under a second."""
    return RunConfig(max_tokens=4000, val_fraction=0.1, hidden=32, embedding=16, batch=8, steps=16,
                     epochs=2, device="cpu", lr=3e-3, schedule="constant", eval_every=0)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Never let a test write to the real user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
