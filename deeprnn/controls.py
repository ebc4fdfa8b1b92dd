"""What the page's controls offer and how their values become a RunConfig (no streamlit here).

The page keeps widget values in a plain dict (its session state); these functions translate
between that dict, the presets and the one validated RunConfig.
"""
from __future__ import annotations

import time
from dataclasses import fields

import torch

from .charts import window_end
from .checkpoint import writable_folder
from .config import PRESETS, RunConfig, preset
from .corpus import MAX_TEXT_BYTES, CorpusError, decode_text
from .device import device_kind
from .session import ViewSettings, torch_threads_for
from .snapshot import Snapshot

# The book's recipe comes first in the selector; the page starts on the fast one.
PRESET_LABELS = {"d2l": "The book: 2-layer LSTM, 256 hidden, SGD lr 2",
                 "fast": "Fast: learns in about 20 seconds on a laptop CPU",
                 "best": "Best: lowest held-out perplexity in minutes"}
CORPUS_LABELS = {"timemachine": "The Time Machine", "pydocs": "Python docs (offline)",
                 "upload": "Upload a .txt", "paste": "Paste text"}
TOKEN_LABELS = {"char": "characters", "word": "words"}
CLEANING_LABELS = {"spaced": "line breaks as spaces", "book": "lines joined (1st edition)", "raw": "none"}
CELL_LABELS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# Every value a widget can submit is a valid RunConfig value (tests/test_hostile_settings.py).
LAYER_RANGE = (1, 8)
DROPOUT_RANGE = (0.0, 0.8, 0.05)  # low, high, step
EPOCH_RANGE = (1, 100_000)
HIDDEN_CHOICES = (16, 32, 64, 96, 128, 160, 192, 256, 384, 512, 1024)
EMBEDDING_CHOICES = (0, 8, 16, 32, 64, 128)  # 0: one-hot input, as in the book
LR_CHOICES = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 8e-3, 1e-2, 1.5e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
CLIP_CHOICES = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_CHOICES = (4, 8, 16, 32, 64, 128, 256)
STEPS_CHOICES = (8, 16, 32, 35, 64, 128, 256)
CONFIG_KEYS = ("tokens", "preprocess", "cell", "layers", "hidden", "dropout", "weight_drop", "embedding", "optimizer",
               "lr", "clip", "batch", "steps", "epochs", "device")


def nearest(choices, value):
    return min(choices, key=lambda c: abs(c - value))


def preset_values(name: str) -> dict:
    """Widget values that reproduce a preset (snapped to the nearest offered choice)."""
    return {"preset": name, **_shown_values(preset(name))}


def _shown_values(cfg: RunConfig) -> dict:
    return {"tokens": cfg.tokens, "preprocess": cfg.preprocess, "cell": cfg.cell, "layers": cfg.layers,
            "hidden": nearest(HIDDEN_CHOICES, cfg.hidden), "dropout": cfg.dropout, "weight_drop": cfg.weight_drop,
            "embedding": nearest(EMBEDDING_CHOICES, cfg.embedding), "optimizer": cfg.optimizer,
            "lr": nearest(LR_CHOICES, cfg.lr), "clip": nearest(CLIP_CHOICES, cfg.clip),
            "batch": nearest(BATCH_CHOICES, cfg.batch), "steps": nearest(STEPS_CHOICES, cfg.steps),
            "epochs": cfg.epochs, "device": cfg.device}


# A run's own text longer than this is not put back into the page's text box: the user uploads it again.
MAX_PASTED_CHARS = 200_000


def run_values(cfg: RunConfig) -> dict:
    """Widget values that show a run's config: its own, the preset whose settings the page does not show
    are the run's (else the fast one), and its text (pasted again where it is short enough to show)."""
    hidden = [f.name for f in fields(RunConfig) if f.name not in {*CONFIG_KEYS, "corpus", "text"}]
    presets = {name: preset(name) for name in PRESETS}  # each built once, not once per setting compared
    name = next((name for name, base in presets.items() if all(getattr(base, f) == getattr(cfg, f) for f in hidden)),
                "fast")
    if cfg.corpus != "text":
        source = {"corpus_source": cfg.corpus}
    else:
        source = {"corpus_source": "paste", "pasted": cfg.text} if len(cfg.text) <= MAX_PASTED_CHARS else \
            {"corpus_source": "upload"}
    return {"preset": name, **_shown_values(cfg), **source}


def initial_values(latest: RunConfig | None = None, views: dict | None = None) -> dict:
    """The controls of a new page; of a page that came back (a reload) to its session, its latest run's
    and the view settings it had sent."""
    views = {**vars(ViewSettings()), **(views or {})}
    return {**preset_values("fast"), "corpus_source": "timemachine", "pasted": "",
            **(run_values(latest) if latest else {}), "probe_text": views["probe_text"], "prefix": views["prefix"],
            "temperature": views["temperature"], "heatmap_count": 32, "heatmap_units": "most active",
            "unit_layer": 1, "unit_index": 0, "use_best": views["use_best"], "watch_dir": "", "write_dir": ""}


def config_from_values(values: dict, text: str | None = None) -> RunConfig:
    """The RunConfig the controls describe; the preset supplies what the page does not show."""
    chosen = {key: values[key] for key in CONFIG_KEYS}
    source = values["corpus_source"]
    corpus = {"upload": "text", "paste": "text"}.get(source, source)
    return RunConfig(**{**PRESETS[values["preset"]], **chosen, "corpus": corpus,
                        "text": text if corpus == "text" else None})


def run_dir_for(base: str, config: RunConfig) -> str:
    """A fresh run directory under `base`, named by time and architecture; CheckpointError before the
    run starts when nothing can be written under `base`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(writable_folder(base) / f"{stamp}-{config.cell}x{config.layers}-h{config.hidden}")


def text_from_upload(name: str, data: bytes) -> tuple[str, str | None]:
    """An uploaded file's text and a notice, or CorpusError with a message for the page."""
    if len(data) > MAX_TEXT_BYTES:
        raise CorpusError(f"{name} is {len(data) / 2**20:.0f} MB; the limit is {MAX_TEXT_BYTES // 2**20} MB")
    if not data.strip():
        raise CorpusError(f"{name} is empty: upload a text file with some words in it")
    return decode_text(data, name)


def devices_found() -> dict:
    """Device choices with what each one is here."""
    found = {"auto": "auto", "cpu": "CPU"}
    if torch.cuda.is_available():
        found["cuda"] = f"CUDA: {torch.cuda.get_device_name(0)}"
    if torch.backends.mps.is_available():
        found["mps"] = "Apple MPS"
    return found


# Seconds between the redraws of the page's live part (its status line, and its views: the curves, the
# samples, the probe's views and the comparison of runs), while something can change without the user. Each
# redraw takes the browser a share of the CPU; while a run trains on all of a CPU's cores, that share is the
# training's (bench/results/dashboard-overhead.md), and the live part is redrawn half as often.
REFRESH_EVERY_S = 2.0
REFRESH_EVERY_S_ON_ALL_CORES = 4.0


def refresh_every_s(snap: Snapshot, watching: bool = False, live_views: bool = True) -> dict[str, float | None]:
    """How often the page redraws its status line and its views while this run is the one shown: on a
    timer while it trains or a run directory is watched; else not at all, since only the user can change
    what the page shows then (a paused run applies what the page sends it before the call returns, views
    included: TrainingSession.pause and set_views). A finished run's page, left open, had kept Chromium
    busy with 0.09 of a core and the server with 0.02, and a paused one's status line 0.06 and 0.01
    (bench/results/idle-page.md). The views are redrawn with the status line, in the same rerun, or
    without live views not at all: their redraws are what a page costs a run that trains on every core."""
    training = snap.status in ("starting", "running")
    if not (training or watching):
        return {"status": None, "views": None}
    if not live_views:
        return {"status": REFRESH_EVERY_S, "views": None}
    on_all_cores = training and device_kind(snap.config.device) == "cpu" and torch_threads_for(snap.config) > 1
    every = REFRESH_EVERY_S_ON_ALL_CORES if on_all_cores else REFRESH_EVERY_S
    return {"status": every, "views": every}


def page_structure(snap: Snapshot, runs: list[Snapshot]) -> tuple:
    """What the page's controls are drawn from, as the page's full runs draw them: the run's name and
    status (the sidebar's buttons), whether it has best weights yet (their switch), the probe's length once
    the heatmaps show it a window at a time (the window's slider), and each run's status, first point and
    weights (the comparison's choices, the export buttons). The timed part of the page redraws only
    numbers, texts and charts; when this changes, it draws the page again whole."""
    tokens = snap.probe.tokens if snap.probe else ()
    return (snap.run_id, snap.name, snap.status, snap.best is None, len(tokens) if window_end(tokens) < len(tokens) else 0,
            tuple((r.run_id, r.status, bool(r.metrics), r.best is None, r.has_weights) for r in runs))


def format_lr(value: float) -> str:
    return f"{value:g}"


def format_count(count: int) -> str:
    """A count for a metric on the status line: in full up to six digits, then in millions (a metric
    holds about seven characters on a laptop's screen, and "3,301,764" was cut to "3,301…")."""
    return f"{count:,}" if count < 1_000_000 else f"{count / 1e6:.2f} M"


def unseen_ending(sample: str) -> str | None:
    """What a sample ends in that a text box does not show: a model early in training writes mostly
    spaces, and the book's recipe wrote nothing visible after "time traveller" for its first minute."""
    blank = len(sample) - len(sample.rstrip())
    if blank < 3:
        return None
    return f"…then {blank} spaces" if set(sample[-blank:]) == {" "} else f"…then {blank} blank characters"
