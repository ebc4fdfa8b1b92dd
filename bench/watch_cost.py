#!/usr/bin/env python3
"""What watching a long run's directory costs the page's server at each refresh: the run directory read
as the page reads it (its metric lines parsed as they grow) against its whole metrics.jsonl parsed again,
for metrics files of the length a run of the fast preset writes in minutes to hours.

    python bench/watch_cost.py
"""
import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import repo  # noqa: F401  puts the repository's deeprnn on sys.path
from deeprnn.cli import main
from deeprnn.rundir import read_metrics, read_run_dir
from timing import median_ms


def run_dir_with(lines: int, folder: Path) -> Path:
    """A run directory of a short fast-preset run whose metrics.jsonl is stretched to `lines` lines,
    its train and eval rows repeated at later steps."""
    path = folder / f"run-{lines}"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["train", "--preset", "fast", "--max-tokens", "20000", "--epochs", "1", "--run-dir", str(path)])
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row["kind"] != "event"]
    with open(path / "metrics.jsonl", "w", encoding="utf-8") as f:
        for index in range(lines):
            f.write(json.dumps({**rows[index % len(rows)], "step": index + 1}) + "\n")
    return path


def main_table(line_counts: list[int], repeats: int) -> None:
    print("| metric lines | metrics.jsonl | whole file parsed, ms | read as the page reads it, ms |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for lines in line_counts:
            path = run_dir_with(lines, Path(folder))
            metrics = path / "metrics.jsonl"
            whole, _ = median_ms(lambda: read_metrics(metrics), repeats)
            last_train = read_run_dir(path).metrics[-1]  # the page's first read parses everything once
            step = [lines]

            def refresh():  # a refresh after the run wrote one more line
                step[0] += 1
                with open(metrics, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"kind": "train", **last_train, "step": step[0]}) + "\n")
                read_run_dir(path)
            print(f"| {lines:,} | {metrics.stat().st_size / 1e6:.1f} MB | {whole:.1f} | {median_ms(refresh, repeats)[0]:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main_table(args.lines, args.repeats)
