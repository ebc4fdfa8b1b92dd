"""torchrun on CPU (gloo, 2 processes on 127.0.0.1), the run directory and the page's watcher."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deeprnn.cli import main
from deeprnn.rundir import read_metrics, read_run_dir

from repo import ROOT  # bench/repo.py, on the path from conftest
from support import figures
RECIPE = ["--max-tokens", "6000", "--hidden", "24", "--embedding", "8", "--batch", "8", "--steps", "16",
          "--device", "cpu", "--seed", "3", "--report-every", "4", "--eval-every", "0", "--schedule", "constant",
          "--lr", "0.01"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(processes: int, args: list[str], tmp_dir: Path, **popen) -> subprocess.Popen:
    # TMPDIR: torchrun leaves a torchelastic_* folder of logs in the temporary directory at every launch.
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}", "-m", "deeprnn", "train", *args], cwd=ROOT, env=env, **popen)


def train_losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(run_dir / "metrics.jsonl")["train"]]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *RECIPE, "--epochs", "2", "--run-dir", str(one)]) == 0
    proc = torchrun(2, [*RECIPE, "--epochs", "2", "--run-dir", str(two)], tmp_path, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True)
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    assert "x 2 processes" in output
    single, double = train_losses(one), train_losses(two)
    assert len(single) == len(double) > 4
    assert single == pytest.approx(double, rel=2e-4)  # the same steps, whichever way the batch is split
    status = json.loads((two / "status.json").read_text())
    assert status["status"] == "finished" and status["processes"] == 2
    for name in ("config.json", "metrics.jsonl", "status.json", "probe.npz", "samples.json", "checkpoint.pt"):
        assert (two / name).is_file(), name
    snap = read_run_dir(two)
    assert snap.step == status["step"] and len(snap.evals) == 2 and len(snap.probe.hidden) == 2
    assert snap.samples.greedy.startswith("time traveller")


def test_killing_a_rank_leaves_a_readable_resumable_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    proc = torchrun(2, [*RECIPE, "--epochs", "400", "--run-dir", str(run_dir)], tmp_path, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint.pt").is_file():
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint appeared"
            time.sleep(0.2)
        time.sleep(1.0)
        workers = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "deeprnn"], capture_output=True, text=True)
        pids = [int(p) for p in workers.stdout.split()]
        assert len(pids) == 2, workers.stdout
        os.kill(pids[-1], signal.SIGKILL)  # one rank dies mid-run
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    snap = read_run_dir(run_dir)
    assert snap.metrics and snap.step > 0
    steps_before = snap.metrics[-1]["step"]
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--run-dir", str(run_dir)]) in (0,)
    resumed = read_run_dir(run_dir)
    assert resumed.status == "finished" and resumed.metrics[-1]["step"] > 0
    steps = [row["step"] for row in resumed.metrics]
    assert steps == sorted(set(steps))  # the curve continues; rewritten steps replace the old ones
    assert resumed.epoch == 3 or resumed.metrics[-1]["step"] >= steps_before


def test_an_in_process_run_writes_a_directory_the_page_can_watch(tmp_path):
    from streamlit.testing.v1 import AppTest

    from deeprnn.session import close_all_sessions
    run_dir = tmp_path / "watched"
    assert main(["train", *RECIPE, "--epochs", "2", "--run-dir", str(run_dir)]) == 0
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    at.text_input(key="watch_dir").set_value(str(run_dir)).run()
    try:
        assert not at.exception
        assert any("Watching the run directory" in i.value for i in at.info)
        assert any(m.value.startswith("### LSTM x2 h24") and "finished" in m.value for m in at.markdown)
        assert next(b for b in at.button if b.label == "Start").disabled
        kinds = [t["type"] for fig in figures(at) for t in fig["data"]]
        assert kinds.count("heatmap") >= 2 and "scatter" in kinds
        for path, problem in ((tmp_path / "nothing", "no such directory"), (tmp_path, "not a deeprnn run directory")):
            at.text_input(key="watch_dir").set_value(str(path)).run()
            assert [problem in e.value for e in at.error] == [True]  # said once, in the status line
            assert not any("press **Start**" in i.value for i in at.info)  # Start is off while watching
    finally:
        close_all_sessions()
