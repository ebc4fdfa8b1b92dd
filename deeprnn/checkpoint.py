"""Checkpoint files: written atomically, read without unpickling arbitrary objects."""
from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import torch

from .atomic import write_atomically

FORMAT = "deeprnn-checkpoint"
VERSION = 1
REQUIRED = ("config", "vocab", "model", "optimizer", "counters", "metrics", "evals", "events")


class CheckpointError(ValueError):
    pass


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write to a temporary file beside the target, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: _write(payload, f))
    return path


def writable_folder(path: str | Path) -> Path:
    """`path`, made if need be, once a file can be written in it; else CheckpointError, said now rather
    than when a long run ends and its checkpoint has nowhere to go."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise CheckpointError(f"cannot write in {path}: {existing} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise CheckpointError(f"cannot write in {path}: {err.strerror or err}") from err
    return path


def checkpoint_bytes(payload: dict) -> bytes:
    """The bytes of a checkpoint file, for a download."""
    buffer = io.BytesIO()
    _write(payload, buffer)
    return buffer.getvalue()


def _write(payload: dict, f) -> None:
    torch.save({"format": FORMAT, "version": VERSION, **payload}, f)


def load_checkpoint(path: str | Path) -> dict:
    """The payload of a deeprnn checkpoint, or CheckpointError saying why the file is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        with warnings.catch_warnings():  # torch warns of a strange pickle protocol before it fails on it
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # Bytes that are not a checkpoint fail wherever the unpickler gets to: besides its own error,
        # an IndexError, KeyError, TypeError… (random bytes: an IndexError on an empty stack). Only the
        # file's and torch's reader's words say something; a refused pickle's own advise loading the
        # file unsafely.
        words = str(err).splitlines() if isinstance(err, (OSError, RuntimeError)) else []
        detail = f": {words[0]}" if words else ""
        raise CheckpointError(f"{path} is not a readable deeprnn checkpoint "
                              f"(truncated, corrupted or not a PyTorch file){detail}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a deeprnn checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {payload.get('version')}; this deeprnn reads {VERSION}")
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return payload
