"""`python -m deeprnn train|generate`: the same RunConfig and Trainer the page uses."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from .batches import TooShortError
from .checkpoint import CheckpointError, writable_folder
from .config import CHOICES, INTEGER_FIELDS, PRESETS, RANGES, ConfigError, RunConfig, check_range, describe_range, preset
from .corpus import UNK, CorpusError
from .device import describe_out_of_memory
from .generate import continue_text, unknown_prefix_note
from .rundir import CHECKPOINT, RunDirWriter
from .session import ViewSettings, compute_views
from .train import Diverged, Trainer, model_from_checkpoint

EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
BOOK_PREFIX = "time traveller"


class UsageError(ValueError):
    """A command line that argparse cannot read; its message as argparse words it."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one `error:` line, not a usage block."""

    def error(self, message):
        raise UsageError(message)


USER_ERRORS = (ConfigError, CorpusError, TooShortError, CheckpointError, UsageError)


def build_parser() -> Parser:
    parser = Parser(prog="python -m deeprnn", description="Train and sample deep recurrent networks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = commands.add_parser("train", help="train a stacked RNN")
    train.add_argument("--preset", choices=sorted(PRESETS),
                       help="start from a named recipe; flags override it. Without one: the defaults below, the fast recipe")
    for name, what in TRAIN_FLAGS.items():
        add_config_flag(train, name, what)
    train.add_argument("--save", help="write a checkpoint here at the end (and on divergence or Ctrl-C)")
    train.add_argument("--resume", help="continue from this checkpoint, or from a run directory's")
    train.add_argument("--run-dir", help="keep a run directory here (metrics, probe, samples, checkpoint)")
    train.add_argument("--json", action="store_true", help="end with one JSON line of results")
    generate = commands.add_parser("generate", help="continue a prefix from a checkpoint")
    generate.add_argument("--checkpoint", required=True, help="a file from --save or the page's export, or a run directory")
    generate.add_argument("--prefix", default=BOOK_PREFIX, help="the text to continue (default: %(default)s)")
    generate.add_argument("--length", type=int, default=50, help="tokens to write (default: %(default)s)")
    generate.add_argument("--temperature", type=float, default=0.0,
                          help="0: the likeliest token each time (greedy); higher: more daring (default: %(default)s)")
    generate.add_argument("--top-k", type=int, default=0,
                          help="sample from the k likeliest tokens only; 0: from all (default: %(default)s)")
    generate.add_argument("--seed", type=int, help="the same seed writes the same sample (default: none, a new one each time)")
    return parser


# What each of train's flags sets (a RunConfig field of the same name); its choices or range and its
# default are added from config.py.
TRAIN_FLAGS = {
    "corpus": "timemachine, pydocs, or the path of a text file (/dev/stdin: a pipe)",
    "tokens": "characters or words",
    "preprocess": "spaced: letters only, lower case, line breaks as spaces (the book's current edition); "
                  "book: the same per line, lines joined without a space (its first edition); raw: as it is",
    "min_freq": "tokens seen fewer times read as <unk>",
    "max_vocab": "the most frequent tokens kept, <unk> included (0: all); the rest read as <unk>",
    "max_tokens": "tokens kept from the start of the text (-1: all; the book keeps 10,000)",
    "val_fraction": "the share of the text held out for evaluation, from its end",
    "cell": "rnn (a tanh cell), gru or lstm",
    "layers": "stacked layers",
    "hidden": "hidden units per layer",
    "dropout": "dropout between layers and before the output",
    "weight_drop": "DropConnect on the recurrent weights while training",
    "embedding": "embedding size; 0 means one-hot input",
    "optimizer": None,
    "lr": "learning rate",
    "schedule": "cosine: decays the rate to 5%% of lr over the epoch budget",
    "weight_decay": None,
    "clip": "gradient norm clipping; 0: off",
    "batch": "sequences per minibatch",
    "steps": "time steps per sequence (truncated backpropagation)",
    "epochs": "passes over the training text",
    "iterator": "sequential: row b of each minibatch continues row b of the last; random: independent "
                "subsequences in shuffled order",
    "seed": None,
    "device": None,
    "precision": "auto: bf16 products on CPUs with bf16 instructions and on GPUs from Ampere on, else fp32",
    "cuda_graph": "auto: on one GPU, record the whole training step as a CUDA graph and replay it",
    "report_every": "minibatches between report points (0: per epoch)",
    "eval_every": "minibatches between held-out evaluations (0: per epoch)",
}


def add_config_flag(parser, name: str, what: str | None) -> None:
    """--name for RunConfig's field `name`; its value is None unless given, so that a preset's stands."""
    default = RunConfig.__dataclass_fields__[name].default
    kind = int if name in INTEGER_FIELDS else type(default)
    notes = [what, describe_range(name) if name in RANGES else None, f"default: {default:g}" if kind is float
             else f"default: {default}"]
    parser.add_argument("--" + name.replace("_", "-"), type=kind, choices=CHOICES.get(name),
                        help="; ".join(filter(None, notes)))


# generate's flags, as config.RANGES: (low, high, low_open, high_open); temperature 0 is greedy.
GENERATE_RANGES = {"length": (0, 100_000, False, False), "temperature": (0.0, 100.0, False, False),
                   "top_k": (0, 1_000_000, False, False)}
NOT_CONFIG = {"command", "preset", "save", "resume", "run_dir", "json"}


def explicit_overrides(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in NOT_CONFIG and v is not None}


def checkpoint_file(path: str) -> Path:
    """A checkpoint's path, given it or the run directory that keeps it."""
    return Path(path) / CHECKPOINT if Path(path).is_dir() else Path(path)


def make_trainer(args) -> Trainer:
    overrides = explicit_overrides(args)
    if args.resume:
        return Trainer.resume(checkpoint_file(args.resume), **overrides)
    return Trainer(preset(args.preset, **overrides) if args.preset else RunConfig(**overrides))


@contextlib.contextmanager
def distributed():
    """Under torchrun (WORLD_SIZE > 1): join the process group, NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def train(args) -> int:
    check_destinations(args)
    with distributed():
        trainer = make_trainer(args)
        try:
            lead = trainer.rank == 0  # only the first process speaks and writes
            writer = RunDirWriter(args.run_dir, trainer, on_problem=warn) if args.run_dir and lead else None
            if lead:
                announce(trainer)
            try:
                status = run_to_the_end(trainer, writer, verbose=lead)
            except KeyboardInterrupt:
                if lead:
                    keep_interrupted(trainer, writer, args.save)
                raise
            if args.save and lead:
                trainer.save(args.save)
            if status == 0 and lead:
                print_results(trainer, args.json)
            return status
        finally:
            # DDP's reducer must go while the process group lives: freed later, from the main
            # thread, it deadlocks with gloo's threads over the GIL.
            trainer.forward = trainer.model


def check_destinations(args) -> None:
    """Refuse a --save or --run-dir that cannot be written before training, not after it."""
    if args.save:
        if Path(args.save).is_dir():
            raise CheckpointError(f"--save {args.save} is a folder; name a file, such as {Path(args.save) / 'run.pt'}")
        writable_folder(Path(args.save).parent)
    if args.run_dir:
        writable_folder(args.run_dir)


def warn(problem: str) -> None:
    print(f"warning: {problem}", file=sys.stderr)


def keep_interrupted(trainer: Trainer, writer: RunDirWriter | None, save: str | None) -> None:
    """Ctrl-C keeps what was trained: --save and the run directory get the weights of the last step."""
    if writer:
        writer.update(trainer, "stopped", checkpoint=True, message="interrupted")
    if save:
        trainer.save(save)
    kept = ", ".join(str(p) for p in (save, writer and writer.path / CHECKPOINT) if p)
    if kept:
        print(f"interrupted at step {trainer.step}; its weights are in {kept}", file=sys.stderr)


def announce(trainer: Trainer) -> None:
    for notice in trainer.corpus.notices:
        print(f"notice: {notice}", file=sys.stderr)
    cfg = trainer.config
    print(f"training {cfg.cell.upper()} x{cfg.layers} h{cfg.hidden} on {trainer.corpus.name} "
          f"({len(trainer.corpus.train)} train / {len(trainer.corpus.val)} held-out tokens, "
          f"{trainer.parameter_count:,} parameters) on {trainer.device_label}"
          + (f" x {trainer.world} processes" if trainer.world > 1 else ""), file=sys.stderr)
    if trainer.epoch >= cfg.epochs:  # a resumed run at its budget
        print(f"notice: the checkpoint has trained {trainer.epoch} of its {cfg.epochs} epochs; raise --epochs to "
              "train on", file=sys.stderr)


def run_to_the_end(trainer: Trainer, writer: RunDirWriter | None, verbose: bool) -> int:
    """Train through the epoch budget; 0 when done, EXIT_DIVERGED when the loss blew up."""
    every = max(1, trainer.config.epochs // 10)
    started = time.perf_counter()
    was_lost = False  # at the last report: the note is printed each time the run gets lost
    try:
        for report in trainer.steps():
            if report and writer:
                end = report.get("end_of_epoch", False)
                probe, samples = compute_views(trainer, ViewSettings()) if end else (None, None)
                writer.update(trainer, "running", probe, samples, checkpoint=end)
            if verbose and report:
                if trainer.lost and not was_lost:
                    warn(trainer.lost_note())
                was_lost = trainer.lost
            if verbose and report and report.get("end_of_epoch") and (
                    trainer.epoch % every == 0 or trainer.epoch == trainer.config.epochs):
                print(progress_line(trainer, report, time.perf_counter() - started), file=sys.stderr)
    except Diverged as err:
        if writer:
            writer.update(trainer, "failed", checkpoint=True, message=str(err))
        if verbose:
            print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    if writer:
        writer.update(trainer, "finished", *compute_views(trainer, ViewSettings()), checkpoint=True)
    return 0


def progress_line(trainer: Trainer, report: dict, wall: float) -> str:
    val = report.get("val_ppl")
    return (f"epoch {trainer.epoch}/{trainer.config.epochs}  perplexity {trainer.perplexity():.2f}"
            + (f"  held-out {val:.2f}" if val else "")
            + f"  {trainer.tokens_per_s():,.0f} tokens/s  {wall:.0f}s")


def print_results(trainer: Trainer, as_json: bool) -> None:
    ppl = trainer.perplexity()
    val = trainer.evals.last()
    sample = continue_text(trainer.model, trainer.codec, sample_prefix(trainer), 50)
    print(f"perplexity {ppl:.1f}, {trainer.tokens_per_s():.1f} tokens/sec on {trainer.device}")
    print(sample)
    if as_json:
        print(json.dumps({
            "perplexity": ppl, "val_perplexity": val["val_ppl"] if val else None,
            "best_val_perplexity": trainer.best["val_ppl"] if trainer.best else None,
            "tokens_per_s": trainer.tokens_per_s(), "train_tokens": trainer.tokens,
            "seconds": trainer.train_seconds, "device": str(trainer.device), "epochs": trainer.epoch,
            "steps": trainer.step, "parameters": trainer.parameter_count, "sample": sample,
            "config": {k: v for k, v in trainer.config.to_dict().items() if k != "text"},
        }))


def sample_prefix(trainer: Trainer) -> str:
    """The book's "time traveller" where the text has its characters or words, else the text's own
    first ones: a prefix of <unk>s said nothing of what a model of another text writes."""
    codec = trainer.codec
    if UNK not in codec.decode(codec.encode(BOOK_PREFIX)):
        return BOOK_PREFIX
    return codec.decode(trainer.corpus.train[:codec.tokens_for(len(BOOK_PREFIX))])


def generate(args) -> int:
    for name, bounds in GENERATE_RANGES.items():
        check_range(name, getattr(args, name), bounds)
    model, codec, _ = model_from_checkpoint(checkpoint_file(args.checkpoint))
    text = continue_text(model, codec, args.prefix, args.length, args.temperature, args.top_k, args.seed)
    print(text)
    if note := unknown_prefix_note(text):
        print(f"notice: {note} Give --prefix some of its own.", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return train(args) if args.command == "train" else generate(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:
        if (message := describe_out_of_memory(err)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
