#!/usr/bin/env python3
"""Time to quality on The Time Machine: seconds (from start, corpus loading included) until the
held-out perplexity first reaches a target, and the best held-out perplexity within a time budget.

    python bench/time_to_quality.py                       # the presets
    python bench/time_to_quality.py --sweep fast          # the sweep that chose the fast preset
    python bench/time_to_quality.py --sweep best --budget 300
    python bench/time_to_quality.py --on-page            # the fast preset from pressing Start on the page
    python bench/time_to_quality.py --on-page --recipes best --target 3.8 --budget 480 --page-threads 2
    python bench/time_to_quality.py --recipes best --budget 300 --set layers=3 hidden=384   # one variant

Prints one table row per recipe. Set DEEPRNN_DATA_DIR to a folder holding timemachine.txt.
"""
import argparse
import itertools
import re
import time

import torch

from pageserver import dashboard_server, text_changes, training_page, watch_text
from deeprnn.config import RunConfig, preset
from deeprnn.controls import PRESET_LABELS
from deeprnn.train import Diverged, Trainer

SWEEPS = {
    # around the fast preset: what learns fastest in the first 20 seconds
    "fast": dict(hidden=[96, 128, 160], epochs=[2, 3, 5], lr=[8e-3, 1.5e-2], batch=[16, 32]),
    # around the best preset: what gets lowest within five minutes
    "best": dict(weight_drop=[0.3, 0.4, 0.5], dropout=[0.25, 0.3]),
}


def measure(config, budget: float, target: float) -> dict:
    started = time.perf_counter()
    trainer = Trainer(config)
    reached = None
    try:
        for report in trainer.steps():
            elapsed = time.perf_counter() - started
            if report and report.get("val_ppl") is not None and reached is None and report["val_ppl"] <= target:
                reached = elapsed
            if elapsed > budget:  # a run whose epoch budget outlasts the time budget is cut here
                break
    except Diverged:
        pass
    best = trainer.best
    return {"reached_s": reached, "best_val": best["val_ppl"] if best else None,
            "epochs": trainer.epoch, "tokens_per_s": trainer.tokens_per_s()}


def measure_on_page(name: str, budget: float, target: float, threads: int | None) -> dict:
    """A preset on the dashboard in headless Chromium: seconds from pressing Start until the page
    shows a best held-out perplexity at or under the target. `threads`: the page's training process's
    torch threads (DEEPRNN_TORCH_THREADS), else the page's choice by the model's size."""
    env = {"DEEPRNN_TORCH_THREADS": str(threads)} if threads else None
    with dashboard_server(env) as (url, _), training_page(url, preset(name).epochs, PRESET_LABELS[name]) as page:
        started = time.perf_counter()  # training_page returns right after the click on Start
        started_in_browser = watch_text(page, '[data-testid="stMetric"]', "best held-out ppl")
        best = reached = None
        while time.perf_counter() - started < budget and reached is None:
            time.sleep(1)
            for stamp, text in text_changes(page):
                match = re.search(r"best held-out ppl\s*([\d.]+)", text)
                best = float(match.group(1)) if match else best
                if best is not None and best <= target:
                    reached = stamp - started_in_browser  # the watch began right after Start
                    break
    return {"reached_s": reached, "best_val": best}


def parse_setting(item: str) -> tuple[str, object]:
    """FIELD=VALUE with VALUE read as the field's type (int, float or str)."""
    name, _, value = item.partition("=")
    kind = type(getattr(RunConfig(), name))
    return name, kind(value)


def describe(config) -> str:
    return (f"{config.preprocess} {config.cell} {config.layers}x{config.hidden} emb{config.embedding} "
            f"drop{config.dropout:g} wdrop{config.weight_drop:g} "
            f"{config.optimizer} lr{config.lr:g} {config.schedule} wd{config.weight_decay:g} batch{config.batch} "
            f"steps{config.steps} epochs{config.epochs}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=sorted(SWEEPS))
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per recipe")
    parser.add_argument("--target", type=float, default=4.5, help="held-out perplexity to reach")
    parser.add_argument("--on-page", action="store_true",
                        help="measure the first of --recipes (fast unless given) on the dashboard in headless Chromium")
    parser.add_argument("--page-threads", type=int, help="with --on-page: DEEPRNN_TORCH_THREADS for the page")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="RunConfig fields to override in every recipe, e.g. weight_drop=0.5 lr=4e-3")
    parser.add_argument("--recipes", nargs="+", default=["fast", "best", "d2l"], choices=["fast", "best", "d2l"],
                        help="presets to measure (d2l: the book's recipe on the full text, 10%% held out)")
    args = parser.parse_args()
    if args.on_page:
        name = args.recipes[0] if args.recipes != parser.get_default("recipes") else "fast"
        r = measure_on_page(name, args.budget, args.target, args.page_threads)
        reached = f"{r['reached_s']:.1f}" if r["reached_s"] else "not reached"
        threads = f"{args.page_threads} torch threads" if args.page_threads else "the page's torch threads"
        print(f"| the {name} preset on the page, {threads}, from pressing Start | {reached} "
              f"| best shown {r['best_val']} |")
        return
    torch.set_num_threads(args.threads)
    overrides = dict(parse_setting(item) for item in args.set)
    if args.sweep:
        grid = SWEEPS[args.sweep]
        base = "fast" if args.sweep == "fast" else "best"
        configs = [preset(base, **dict(zip(grid, values)), **overrides) for values in itertools.product(*grid.values())]
    else:
        full_text = dict(max_tokens=-1, val_fraction=0.1, epochs=1000, eval_every=40)
        configs = [preset(name, **{**(full_text if name == "d2l" else {}), **overrides}) for name in args.recipes]
    print(f"budget {args.budget:g} s per recipe, target held-out perplexity {args.target}, "
          f"{args.threads} torch threads, {torch.__version__}")
    print(f"| recipe | seconds to <= {args.target} | best held-out ppl in {args.budget:g} s | epochs | tokens/s |")
    print("| --- | --- | --- | --- | --- |")
    for config in configs:
        r = measure(config, args.budget, args.target)
        reached = f"{r['reached_s']:.1f}" if r["reached_s"] else "not reached"
        best = f"{r['best_val']:.3f}" if r["best_val"] else "-"
        print(f"| {describe(config)} | {reached} | {best} | {r['epochs']} | {r['tokens_per_s']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
