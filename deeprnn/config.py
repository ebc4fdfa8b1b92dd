"""The one validated description of a run, shared by the CLI, the session and the page."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value outside its allowed range; the message names the field."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name} {message}")
        self.field, self.reason = name, message

    def __reduce__(self):  # rebuilt from both parts, so it crosses to and from a training process
        return ConfigError, (self.field, self.reason)


# Allowed values, kept as data so the CLI and the page can offer exactly these choices.
CHOICES = {
    "tokens": ("char", "word"),
    "preprocess": ("spaced", "book", "raw"),
    "cell": ("rnn", "gru", "lstm"),
    "optimizer": ("sgd", "adam"),
    "schedule": ("constant", "cosine"),
    "iterator": ("sequential", "random"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "precision": ("auto", "fp32", "bf16"),
    "cuda_graph": ("auto", "off"),
}

# Numeric ranges, inclusive unless the bound is marked open: (low, high, low_open, high_open).
RANGES = {
    "min_freq": (1, 1_000_000, False, False),
    "max_vocab": (0, 10_000_000, False, False),
    "val_fraction": (0.0, 0.5, False, False),
    "layers": (1, 8, False, False),
    "hidden": (1, 4096, False, False),
    "dropout": (0.0, 1.0, False, True),
    "weight_drop": (0.0, 1.0, False, True),
    "embedding": (0, 4096, False, False),
    "lr": (0.0, 100.0, True, False),
    "weight_decay": (0.0, 1.0, False, False),
    "clip": (0.0, 1e6, False, False),
    "batch": (1, 4096, False, False),
    "steps": (1, 4096, False, False),
    "epochs": (1, 10_000_000, False, False),
    "seed": (0, 2**31 - 1, False, False),
    "report_every": (0, 1_000_000, False, False),
    "eval_every": (0, 1_000_000, False, False),
}
INTEGER_FIELDS = {"min_freq", "max_vocab", "max_tokens", "layers", "hidden", "embedding", "batch",
                  "steps", "epochs", "seed", "report_every", "eval_every"}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run. Defaults are the dashboard's fast recipe."""

    corpus: str = "timemachine"  # "timemachine", "pydocs", "text" (uses `text`), or a file path
    text: str | None = field(default=None, repr=False)  # the user's own text when corpus == "text"
    tokens: str = "char"
    # The book's letters-only lower case. "spaced" (its current edition) turns line breaks into spaces;
    # "book" (its first edition, the reference) joins the cleaned lines without one, which glues the
    # words at every line break together: the presets' held-out perplexity on that text is 10-13% higher
    # (bench/results/time-to-quality.md).
    preprocess: str = "spaced"
    min_freq: int = 1
    max_vocab: int = 10_000  # the most frequent tokens are kept (0 keeps all); the rest read as <unk>
    max_tokens: int = -1  # -1 keeps the whole text; the book keeps 10,000
    val_fraction: float = 0.1
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 96  # fast: the soonest to held-out 4.5 on one float32 torch thread (bench/results/sweep-fast.md)
    dropout: float = 0.0
    weight_drop: float = 0.0  # DropConnect on the recurrent (hidden-to-hidden) weights while training
    embedding: int = 32  # 0 means one-hot input, as in the book
    optimizer: str = "adam"
    lr: float = 1.5e-2
    schedule: str = "cosine"  # cosine decays the rate to 5% of `lr` over the epoch budget
    weight_decay: float = 0.0
    clip: float = 1.0  # 0 disables clipping
    batch: int = 32
    steps: int = 32
    epochs: int = 5
    iterator: str = "sequential"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 products where the hardware multiplies bf16 (some CPUs, recent GPUs), else fp32
    cuda_graph: str = "auto"  # auto: on one GPU, record the training step once and replay it; off: eager
    report_every: int = 0  # minibatches between report points; 0 reports once per epoch
    eval_every: int = 40  # minibatches between held-out evaluations; 0 evaluates once per epoch

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain values, safe for JSON and for `torch.load(weights_only=True)`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], "is not a configuration field")
        return cls(**values)


def validate(config: RunConfig) -> None:
    """Raise ConfigError naming the first field whose value is outside its allowed range."""
    if not isinstance(config.corpus, str) or not config.corpus.strip():
        raise ConfigError("corpus", "must name timemachine, pydocs, text or a file path")
    if config.corpus == "text" and not isinstance(config.text, str):
        raise ConfigError("text", "must hold the text when corpus is 'text'")
    for name, allowed in CHOICES.items():
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)} (got {value!r})")
    for name in INTEGER_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"must be a whole number (got {value!r})")
    if config.max_tokens != -1 and not 1 <= config.max_tokens <= 10**10:
        raise ConfigError("max_tokens", f"must be -1 (all) or between 1 and 10000000000 (got {config.max_tokens})")
    for name, bounds in RANGES.items():
        check_range(name, getattr(config, name), bounds)


def check_range(name: str, value, bounds: tuple) -> None:
    """ConfigError unless `value` is a finite number within `bounds` (low, high, low_open, high_open)."""
    low, high, low_open, high_open = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number (got {value!r})")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise ConfigError(name, f"must be {describe_bounds(bounds)} (got {value})")


def describe_range(name: str) -> str:
    return describe_bounds(RANGES[name])


def describe_bounds(bounds: tuple) -> str:
    low, high, low_open, high_open = bounds
    return f"{'>' if low_open else '>='} {low} and {'<' if high_open else '<='} {high}"


PRESETS = {
    # The book's recipe: Dive into Deep Learning, "Deep Recurrent Neural Networks", with the first
    # edition's cleaning, as ../shared/bench/d2l_reference.py.
    "d2l": dict(preprocess="book", max_tokens=10_000, val_fraction=0.0, embedding=0, cell="lstm", layers=2,
                hidden=256, dropout=0.0, batch=32, steps=35, optimizer="sgd", lr=2.0, schedule="constant", clip=1.0,
                iterator="sequential", epochs=500, eval_every=0),
    # Learns within seconds on a laptop CPU: the dataclass defaults.
    "fast": {},
    # The best held-out perplexity found within a few minutes on 2 CPU cores. Its cosine schedule spans
    # 10 epochs, not 15: where 2 cores train at half the speed, 15 left it mid-schedule at 5 minutes.
    "best": dict(layers=2, hidden=512, dropout=0.3, weight_drop=0.4, embedding=64, lr=5e-3, steps=64, epochs=10,
                 eval_every=100),
}


def preset(name: str, **overrides) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError("preset", f"must be one of {', '.join(PRESETS)} (got {name!r})")
    return RunConfig(**{**PRESETS[name], **overrides})
