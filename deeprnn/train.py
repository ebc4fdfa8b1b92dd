"""Trainer: one step, evaluation, report points and checkpoints for a StackedRNN."""
from __future__ import annotations

import copy
import itertools
import math
import random
import time

import torch
import torch._dynamo  # noqa: F401  the optimizers import it lazily at their first step; importing it
# here keeps that second of imports out of the worker thread, where it raced with the page's imports
from torch.nn import functional as F

from .batches import ITERATORS, check_length, eval_chunks
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, RunConfig
from .corpus import Codec, Corpus, Vocab, build_corpus
from .device import autocast, device_label, keep_freed_memory, resolve_device, resolve_precision
from .graph import CapturedStep, make_capturable
from .history import BoundedHistory
from .model import StackedRNN, count_parameters, detach_state

# Fields that shape the model or its data: a checkpoint resumes only with the same values.
ARCHITECTURE_FIELDS = ("corpus", "tokens", "preprocess", "min_freq", "max_vocab", "cell", "layers",
                       "hidden", "embedding")


# A loss this many times that of uniform guessing is as hopeless as NaN: tanh units saturate and
# the loss can stay finite while the run is lost.
DIVERGED_LOSS_FACTOR = 10
# A run whose training loss over this many steps averages above LOST_MARGIN times the perplexity of a
# uniform guess is lost, not learning. The presets' first steps overshoot for two or three steps and recover
# (the best preset's GRU to 2.3 times the guess: bench/lost_runs.py); a run still at its start, learning slowly,
# sits at the guess.
LOST_STEPS = 10
LOST_MARGIN = 1.5
# The speed a run shows is taken over its latest report points spanning this much training time:
# one point's own rate can cover a single step, and the page's last point once read half the speed.
RATE_WINDOW_S = 2.0


def still_lost(mean_loss: float, vocab: int, was_lost: bool) -> bool:
    """Lost once the mean loss goes past LOST_MARGIN uniform guesses; found again only under one guess, so
    that a run near the line is not told and untold from point to point (the fast preset at a rate of 0.5
    was told twice in its first 300 steps without this: bench/lost_runs.py)."""
    return mean_loss > math.log(LOST_MARGIN * vocab) or (was_lost and mean_loss > math.log(vocab))


class Diverged(RuntimeError):
    def __init__(self, step: int, good_step: int = 0):
        kept = f"those of step {good_step}, the last good ones" if good_step else "the ones it started with"
        super().__init__(f"diverged at step {step}: the loss became NaN, infinite or exploded; the weights went "
                         f"back to {kept}; lowered learning rate suggested")
        self.step = step


def distributed_rank_and_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of time-major logits (T, B, V) against (B, T) targets, in float32 whatever the
    logits' precision."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.T.reshape(-1), reduction=reduction)


def layer_weight_index(model: StackedRNN) -> list[tuple[int, int]]:
    """Per layer, the positions of its input-to-hidden and hidden-to-hidden weights in parameters()."""
    names = [name for name, _ in model.named_parameters()]
    return [(names.index(f"layers.{i}.weight_ih_l0"), names.index(f"layers.{i}.weight_hh_l0"))
            for i in range(model.num_layers)]


def make_optimizer(config: RunConfig, params: list) -> torch.optim.Optimizer:
    """Adam or SGD, fused into one kernel call on CPU and CUDA. PyTorch's default on CPU is a Python
    loop of seven tensor calls per parameter, each releasing and retaking the GIL that the process's
    other threads (a session's views and publishing) also take: on the fast preset the fused step
    trains 4% faster alone and 10% faster beside a thread holding the GIL 15% of the time."""
    fused = params[0].device.type in ("cpu", "cuda")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _clone_state(module_or_optimizer) -> dict:
    return copy.deepcopy(module_or_optimizer.state_dict())


class Trainer:
    """Owns a model, its optimizer and its metric history; `steps()` drives training.

    Losses and gradient norms stay on the device and are read once per report point, so a
    step never waits for the host.
    """

    def __init__(self, config: RunConfig, corpus: Corpus | None = None):
        self.config = config
        self.rank, self.world = distributed_rank_and_size()
        if config.batch % self.world:
            raise ConfigError("batch", f"must be divisible by the {self.world} processes (got {config.batch})")
        self.device = resolve_device(config.device, self.world > 1)
        self.precision = resolve_precision(config.precision, self.device)
        self.device_label = device_label(self.device, self.precision)  # in the thread that trains
        keep_freed_memory()  # once per process: reuse freed host memory instead of faulting it in each step
        self.corpus = corpus or build_corpus(config)
        check_length(len(self.corpus.train), config.batch, config.steps)
        torch.manual_seed(config.seed)
        self.model = StackedRNN(len(self.corpus.vocab), config.cell, config.layers, config.hidden,
                                config.embedding, config.dropout, config.weight_drop).to(self.device)
        # Under torchrun each process trains its own contiguous rows of the batch, so the sequential
        # scheme's state stays with its rows; DDP averages the gradients: one global-batch step.
        self.forward = torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model
        self._params = list(self.model.parameters())
        self.optimizer = make_optimizer(config, self._params)
        self._graphed = self.device.type == "cuda" and self.world == 1 and config.cuda_graph == "auto"
        if self._graphed:
            make_capturable(self.optimizer)
        self._step = self._new_step()
        self.train_ids = torch.tensor(self.corpus.train, device=self.device)
        self.val_ids = torch.tensor(self.corpus.val, device=self.device) if len(self.corpus.val) > 1 else None
        self.step = self.epoch = self.tokens = 0
        self.train_seconds = 0.0
        self.metrics, self.evals, self.events = BoundedHistory(), BoundedHistory(), []
        self.best: dict | None = None  # {"val_ppl", "step", "tokens", "weights"}
        # The rate when the run got lost (see LOST_STEPS), None while it is not: a rate lowered since is not
        # the one to blame.
        self._lost_at_lr: float | None = None
        self._weight_index = layer_weight_index(self.model)
        self._pending_losses: list[torch.Tensor] = []
        self._pending_norms: list[torch.Tensor] = []  # per step, every parameter's gradient norm
        self._last_report = (0, 0.0)  # tokens and train seconds at the previous report
        self._good = (_clone_state(self.model), _clone_state(self.optimizer))

    @property
    def codec(self) -> Codec:
        return self.corpus.codec

    @property
    def parameter_count(self) -> int:
        return count_parameters(self.model)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])  # a device tensor when the step is a CUDA graph

    @property
    def lost(self) -> bool:
        """Doing worse than guessing: see LOST_STEPS."""
        return self._lost_at_lr is not None

    @property
    def notices(self) -> tuple[str, ...]:
        """What the reader should know about the text, and whether the run is lost."""
        note = self.lost_note()
        return self.corpus.notices + ((note,) if note else ())

    def lost_note(self) -> str | None:
        """Why the run looks lost while it does (see LOST_STEPS), else None: the loss stays finite, so
        nothing else tells the user."""
        if not self.lost:
            return None
        vocab = len(self.corpus.vocab)
        return (f"the training perplexity went past {LOST_MARGIN:g} times the {vocab} of guessing uniformly among the "
                f"{vocab} tokens, and its average over the last {LOST_STEPS} steps is still above {vocab}: the model "
                f"does worse than knowing nothing. It got lost at a learning rate of {self._lost_at_lr:.3g}, likely "
                "too high for it; a lower one may bring it back.")

    def set_lr(self, lr: float) -> None:
        """Takes effect at the next step (as the new peak under a schedule); recorded as an event."""
        self.config = self.config.replace(lr=lr)
        self._apply_schedule()
        self.events.append({"step": self.step, "kind": "lr", "value": lr})

    def lr_at(self, step: int) -> float:
        """The configured rate, or under the cosine schedule its decay to 5% over the epoch budget."""
        if self.config.schedule == "constant":
            return self.config.lr
        total = max(1, self.config.epochs * self.tokens_per_epoch // (self.config.batch * self.config.steps))
        progress = min(step / total, 1.0)
        return self.config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    def _apply_schedule(self) -> None:
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # in place: the recorded step reads this tensor
            else:
                group["lr"] = lr

    def set_clip(self, clip: float) -> None:
        self.config = self.config.replace(clip=clip)
        self._step = self._new_step()  # the clip value is baked into a recorded step
        self.events.append({"step": self.step, "kind": "clip", "value": clip})

    def use_threads(self, threads: int) -> None:
        """Train on this many torch threads from the next step (in the thread that trains: OpenMP's
        count is each thread's own)."""
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.device_label = device_label(self.device, self.precision)

    def steps(self):
        """Train until the epoch budget is spent, yielding after every minibatch.

        Yields a report dict at report points (every `report_every` minibatches and at the end of
        each epoch), otherwise None; the held-out perplexity is measured at the end of each epoch and
        every `eval_every` minibatches. Raises Diverged.
        """
        cfg = self.config
        while self.epoch < cfg.epochs:
            rng = random.Random(cfg.seed + self.epoch)
            state = None
            for x, y in ITERATORS[cfg.iterator](self.train_ids, cfg.batch, cfg.steps, rng):
                x, y = self._my_rows(x), self._my_rows(y)
                started = time.perf_counter()
                state = self._train_step(x, y, state)
                self.train_seconds += time.perf_counter() - started
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    yield self._report_and_evaluate()
                else:
                    due = cfg.report_every and self.step % cfg.report_every == 0
                    yield self.report() if due else None
            self.epoch += 1
            yield {**self._report_and_evaluate(), "end_of_epoch": True}

    def _my_rows(self, rows: torch.Tensor) -> torch.Tensor:
        share = rows.shape[0] // self.world
        return rows[self.rank * share:(self.rank + 1) * share] if self.world > 1 else rows

    def _train_step(self, x, y, state):
        if state is None or self.config.iterator == "random":
            state = self.model.begin_state(x.shape[0], self.device)
        else:
            state = detach_state(state)
        if self.config.schedule != "constant":
            self._apply_schedule()
        loss, norms, state = self._step(x, y, state)
        self._pending_losses.append(loss)
        self._pending_norms.append(norms)
        self.step += 1
        self.tokens += y.numel() * self.world
        return state

    def _new_step(self):
        """The step function: recorded as a CUDA graph on one GPU, else called as it is."""
        return CapturedStep(self._eager_step) if self._graphed else self._eager_step

    def _eager_step(self, x, y, state):
        """Forward, backward, clipping and the optimizer: the loss, per-parameter gradient norms
        and the new state."""
        with autocast(self.device, self.precision):
            logits, state = self.forward(x, state)
        loss = next_token_loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The per-parameter norms clipping needs anyway, kept for the gradient-flow view.
        norms = torch.stack(torch._foreach_norm([p.grad for p in self._params]))
        if self.config.clip > 0:
            total = torch.linalg.vector_norm(norms)
            torch.nn.utils.clip_grads_with_norm_(self._params, self.config.clip, total, foreach=True)
        self.optimizer.step()
        return loss.detach(), norms.detach(), state

    def _report_and_evaluate(self) -> dict:
        """A report point with the held-out perplexity (None without a held-out split)."""
        report = self.report() or {"step": self.step, "epoch": self.epoch}
        val_ppl = self.evaluate() if self.rank == 0 else None  # the other processes train on
        if val_ppl is not None:
            record = {"step": self.step, "epoch": self.epoch, "tokens": self.tokens,
                      "seconds": self.train_seconds, "val_loss": math.log(val_ppl), "val_ppl": val_ppl}
            self.evals.append(record)
            self._keep_if_best(val_ppl)
        return {**report, "val_ppl": val_ppl}

    def report(self) -> dict | None:
        """Record a point from the steps since the last one (None if there were none).

        Reading the pending device values is the only host sync; its time counts as training.
        """
        if not self._pending_losses:
            return None
        started = time.perf_counter()
        try:
            return self._record_point()
        finally:
            self.train_seconds += time.perf_counter() - started

    def _record_point(self) -> dict:
        losses = torch.stack(self._pending_losses).float()
        if self.world > 1:  # every process sees the global loss, so all agree on divergence
            torch.distributed.all_reduce(losses, op=torch.distributed.ReduceOp.AVG)
        losses = losses.cpu()
        param_norms = torch.stack(self._pending_norms).float().cpu()  # (steps, parameters)
        norms = param_norms.square().sum(1).sqrt()  # the global norm before clipping, per step
        first_step = self.step - len(losses) + 1
        self._pending_losses, self._pending_norms = [], []
        ceiling = DIVERGED_LOSS_FACTOR * math.log(max(len(self.corpus.vocab), 2))
        bad = ~torch.isfinite(losses) | ~torch.isfinite(norms) | (losses > ceiling)
        if bad.any():
            self._restore_good()
            good = self.metrics.last()  # the report point whose weights _good holds
            raise Diverged(first_step + int(bad.nonzero()[0]), good["step"] if good else 0)
        tokens, seconds = self._last_report
        loss = float(losses.mean())
        record = {"step": self.step, "epoch": self.epoch, "tokens": self.tokens,
                  "seconds": self.train_seconds, "loss": loss, "ppl": math.exp(loss), "lr": self.lr,
                  "grad_norm": float(norms.mean()),
                  "clipped": float((norms > self.config.clip).float().mean()) if self.config.clip > 0 else 0.0,
                  "grad_ih": [float(param_norms[:, ih].mean()) for ih, _ in self._weight_index],
                  "grad_hh": [float(param_norms[:, hh].mean()) for _, hh in self._weight_index],
                  "tokens_per_s": (self.tokens - tokens) / max(self.train_seconds - seconds, 1e-9)}
        self.metrics.append(record)
        self._judge_lost()
        self._last_report = (self.tokens, self.train_seconds)
        self._good = (_clone_state(self.model), _clone_state(self.optimizer))
        return record

    def _judge_lost(self) -> None:
        """Whether the run is lost, by the mean loss of the report points of its last LOST_STEPS steps."""
        last = self.metrics.last()
        if last["step"] < LOST_STEPS:
            return
        window = [r["loss"] for r in itertools.takewhile(lambda r: r["step"] > last["step"] - LOST_STEPS,
                                                         self.metrics.newest_first())]
        if not still_lost(sum(window) / len(window), len(self.corpus.vocab), self.lost):
            self._lost_at_lr = None
        elif self._lost_at_lr is None:
            self._lost_at_lr = self.lr

    def _restore_good(self) -> None:
        self.model.load_state_dict(self._good[0])
        self._load_optimizer(self._good[1])
        self.events.append({"step": self.step, "kind": "diverged", "value": self.lr})

    def _load_optimizer(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
        if self._graphed:  # the loaded state replaced the tensors the recorded step used
            make_capturable(self.optimizer)
            self._step = self._new_step()

    def _keep_if_best(self, val_ppl: float) -> None:
        if self.best is None or val_ppl < self.best["val_ppl"]:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.best = {"val_ppl": val_ppl, "step": self.step, "tokens": self.tokens, "weights": weights}

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Perplexity over the whole held-out tail, state carried left to right; None without one."""
        if self.val_ids is None:
            return None
        was_training = self.model.training
        self.model.eval()
        total, count, state = 0.0, 0, None
        for x, y in eval_chunks(self.val_ids, self.config.batch, self.config.steps):
            with autocast(self.device, self.precision):
                logits, state = self.model(x, state)
            total += next_token_loss(logits, y, reduction="sum")
            count += y.numel()
        self.model.train(was_training)
        return math.exp(float(total) / count)

    @property
    def tokens_per_epoch(self) -> int:
        """Tokens one epoch trains on (the sequential scheme's offset aside)."""
        per_row = (len(self.corpus.train) - 1) // self.config.batch
        return (per_row // self.config.steps) * self.config.steps * self.config.batch

    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    def recent_tokens_per_s(self) -> float:
        """Tokens per training second over the latest RATE_WINDOW_S (the whole run if shorter)."""
        last = self.metrics.last()
        for record in reversed(self.metrics.records()):
            if last["seconds"] - record["seconds"] >= RATE_WINDOW_S:
                return (last["tokens"] - record["tokens"]) / (last["seconds"] - record["seconds"])
        return last["tokens"] / last["seconds"] if last and last["seconds"] else 0.0

    def perplexity(self) -> float | None:
        last = self.metrics.last()
        return last["ppl"] if last else None

    # --- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        best = None if self.best is None else {k: v for k, v in self.best.items()}
        return {"config": self.config.to_dict(), "vocab": self.corpus.vocab.idx_to_token,
                "model": self.model.state_dict(), "optimizer": self._portable_optimizer_state(),
                "counters": {"step": self.step, "epoch": self.epoch, "tokens": self.tokens,
                             "train_seconds": self.train_seconds},
                "metrics": list(self.metrics.records()), "evals": list(self.evals.records()),
                "events": list(self.events), "best": best}

    def _portable_optimizer_state(self) -> dict:
        """The optimizer's state with plain-number rates and Adam's capturable flag off, so that a
        checkpoint from a GPU run loads on a CPU-only machine."""
        state = self.optimizer.state_dict()
        for group in state["param_groups"]:
            group["lr"] = float(group["lr"])
            if "capturable" in group:
                group["capturable"] = False
        return state

    def save(self, path) -> None:
        save_checkpoint(self.checkpoint(), path)

    @classmethod
    def resume(cls, path, **overrides) -> "Trainer":
        """Continue a saved run; `overrides` may change anything but the architecture."""
        payload = load_checkpoint(path)
        saved = RunConfig.from_dict(payload["config"])
        config = saved.replace(**overrides)
        changed = [f for f in ARCHITECTURE_FIELDS if getattr(config, f) != getattr(saved, f)]
        if changed:
            name = changed[0]
            raise CheckpointError(f"cannot resume with {name} {getattr(config, name)!r}: the checkpoint's run has "
                                  f"{getattr(saved, name)!r}, and a resumed run keeps its architecture and text")
        trainer = cls(config)
        if trainer.corpus.vocab.idx_to_token != payload["vocab"]:
            raise CheckpointError("the corpus gives a different vocabulary from the checkpoint's")
        trainer.load_state(payload)
        return trainer

    def load_state(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self._load_optimizer(payload["optimizer"])
        counters = payload["counters"]
        self.step, self.epoch, self.tokens = counters["step"], counters["epoch"], counters["tokens"]
        self._apply_schedule()  # explicit overrides win over the saved rate
        self.train_seconds = counters["train_seconds"]
        self._last_report = (self.tokens, self.train_seconds)
        self.metrics = BoundedHistory(records=payload["metrics"])
        self.evals = BoundedHistory(records=payload["evals"])
        self.events = list(payload["events"])
        self.best = payload.get("best")
        self._good = (_clone_state(self.model), _clone_state(self.optimizer))


def model_from_checkpoint(path) -> tuple[StackedRNN, Codec, RunConfig]:
    """A model ready to generate from, on the CPU, with the codec its vocabulary needs."""
    payload = load_checkpoint(path)
    config = RunConfig.from_dict(payload["config"])
    vocab = Vocab(idx_to_token=payload["vocab"])
    model = StackedRNN(len(vocab), config.cell, config.layers, config.hidden, config.embedding,
                       config.dropout)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the saved configuration") from err
    return model.eval(), Codec(vocab, config.tokens, config.preprocess), config
