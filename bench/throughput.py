#!/usr/bin/env python3
"""Throughput at the book's recipe: deeprnn beside the book's reference, same machine, same run.

Runs ../shared/bench/d2l_reference.py and `python -m deeprnn train --preset d2l` alternately,
each as its own process with the same epochs and seed, on the CPU and (when present) on CUDA,
and prints tokens/s, perplexity after the last epoch, and the ratio.

    python bench/throughput.py --epochs 100 --repeat 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "bench" / "d2l_reference.py"


def corpus_path() -> str:
    data_dir = os.environ.get("DEEPRNN_DATA_DIR")
    if data_dir:
        return str(Path(data_dir) / "timemachine.txt")
    from deeprnn.corpus import timemachine_path
    return str(timemachine_path())


def last_json(command: list[str]) -> dict:
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_pair(device: str, epochs: int, reference: Path, threads: int) -> tuple[dict, dict]:
    env_threads = ["env", f"OMP_NUM_THREADS={threads}"]
    book = last_json([*env_threads, sys.executable, str(reference), "--corpus", corpus_path(),
                      "--epochs", str(epochs), "--device", device])
    ours = last_json([*env_threads, sys.executable, "-m", "deeprnn", "train", "--preset", "d2l",
                      "--corpus", corpus_path(), "--epochs", str(epochs), "--device", device, "--json"])
    return book, ours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="alternating pairs per device")
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"book's recipe (2-layer LSTM 256, batch 32, 35 steps, SGD lr 2), {args.epochs} epochs, "
          f"{args.threads} CPU threads, torch {torch.__version__}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print("| device | run | reference tokens/s | deeprnn tokens/s | ratio | reference ppl | deeprnn ppl |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for device in devices:
        ratios = []
        for i in range(args.repeat):
            book, ours = run_pair(device, args.epochs, args.reference, args.threads)
            ratio = ours["tokens_per_s"] / book["tokens_per_s"]
            ratios.append(ratio)
            print(f"| {device} | {i + 1} | {book['tokens_per_s']:,.0f} | {ours['tokens_per_s']:,.0f} | "
                  f"{ratio:.2f}x | {book['perplexity']:.3f} | {ours['perplexity']:.3f} |", flush=True)
        print(f"| {device} | median | | | {statistics.median(ratios):.2f}x | | |")


if __name__ == "__main__":
    main()
