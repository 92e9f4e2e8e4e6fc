"""lunaseg train / cache from the command line: JSON progress, SIGTERM, DDP, bad folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training import REPO

from src_train.model import load_checkpoint, load_model
from src_train.train import (
    CONFIG_FILE,
    FINAL,
    LATEST,
    METRICS_FILE,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_cli_cache_on_a_folder_without_annotations_says_so(
    tmp_path: Path, tiny_synth_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir / "subset0", data / "subset0")
    assert main(["cache", str(data)]) == 2
    err = capsys.readouterr().err
    assert "annotations.csv" in err and str(data) in err and "Traceback" not in err
    assert not (data / "cache").exists()


def test_a_train_that_fails_its_checks_leaves_no_run_folder_and_keeps_the_earlier_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "run"
    assert main(["train", str(empty), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no series" in err  # one line
    assert not run.exists()  # no empty run folder, no 0-byte train.log
    run.mkdir()
    (run / LATEST).write_bytes(b"an earlier run's checkpoint")
    assert main(["train", str(empty), "--run-dir", str(run), "--overwrite"]) == 2
    capsys.readouterr()
    assert (run / LATEST).read_bytes() == b"an earlier run's checkpoint"  # not cleared
    assert sorted(p.name for p in run.iterdir()) == [LATEST]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _cli_args(data: Path, cache: Path, run: Path, epochs: int) -> list[str]:
    return [
        str(data),
        "--run-dir",
        str(run),
        "--cache-dir",
        str(cache),
        "--epochs",
        str(epochs),
        "--epoch-samples",
        "16",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--filters",
        "4",
        "--depth",
        "2",
        "--amp",
        "off",
        "--device",
        "cpu",
        "--augment",
        "flip,noise",
        "--no-tensorboard",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_progress_json_and_sigterm_stop(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path, stop: signal.Signals, status: int
) -> None:
    """Stopped by a signal: a loadable checkpoint, then the shells' exit status 128 + signal,
    so a script tells an interrupted run (130 Ctrl-C, 143 SIGTERM) from a finished one (0)."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "src_train.cli",
        "train",
        *_cli_args(tiny_synth_dir, cache_dir, run, epochs=50),
        "--progress-json",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO
    )
    events = []
    assert proc.stdout is not None
    for line in proc.stdout:
        events.append(json.loads(line))  # every stdout line is one JSON object
        if events[-1]["kind"] == "batch" and events[-1]["epoch"] == 2:
            proc.send_signal(stop)
            break
    events += [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == status, proc.stderr.read() if proc.stderr else ""
    assert events[-1]["kind"] == "end" and events[-2]["kind"] == "stopped"
    assert events[-1]["epoch"] == 1
    assert {"batch", "epoch", "checkpoint"} <= {e["kind"] for e in events}
    ckpt = load_checkpoint(run / LATEST)
    assert ckpt.epoch == 1 and ckpt.samples_seen >= 16
    assert not (run / FINAL).exists()


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
    reason="torchrun not installed",
)
def test_ddp_two_cpu_processes_gloo(tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "src_train.cli",
        "train",
        *_cli_args(tiny_synth_dir, cache_dir, run, epochs=2),
    ]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = load_checkpoint(run / FINAL)
    assert ckpt.epoch == 2 and ckpt.samples_seen == 2 * 16, "each process saw half an epoch"
    config = json.loads((run / CONFIG_FILE).read_text())
    assert config["world_size"] == 2
    # only rank 0 writes: one summary line, one log
    assert out.stdout.count("done: epoch 2/2") == 1
    assert len((run / METRICS_FILE).read_text().splitlines()) == 2
    model, _ = load_model(run / FINAL)
    assert not any(k.startswith("module.") for k in model.state_dict())
    assert time.perf_counter() - started < 120
