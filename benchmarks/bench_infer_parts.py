"""A data set of many small series through ``lunaseg infer`` and ``lunaseg cache`` (figures only).

On ``--series`` synthetic series (default 40, the tiny test size: 96-128 px in-plane, 32-48
slices), one run measures, each in fresh processes as a user would start them:

1. **1 part** (the baseline): ``lunaseg infer DATA --out OUT1 --progress-json``, one process
   over every series. Its peak resident memory (``VmHWM``) is sampled after every series, so
   the table shows whether memory grows with the number of series done;
2. **2 parts at once**: ``--num-parts 2 --part-id 0`` and ``--part-id 1`` started together on
   one ``OUT2``, with the default threads and again with one thread each
   (``OMP_NUM_THREADS=1``);
3. **rerun**: the baseline command again on the complete ``OUT1`` (every series skipped);
4. **cache**: ``lunaseg cache`` with 1 and 2 worker processes.

Series per second counts the whole command (Python and torch start-up, reading, inference,
writing) from launch to the last process's exit. The candidates of the 2-part runs are
compared with the baseline's. The CPU (model, AVX2/AVX-512/bf16), the device and the load
average before and after are printed: on a shared machine every figure moves with the
neighbours' work.

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_infer_parts.py            # 40 series, CPU
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_infer_parts.py --series 8 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import cpu_kind, load_text

from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.devices import cpu_has_native_bf16
from src_train.synth import SynthConfig, write_dataset

DATA_SEED = 20261128
KIB = 1024


def device_line(device: str) -> str:
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return f"device {device}: {torch.cuda.get_device_name(0)}"
    return f"device {device}: CPU"


def peak_rss_kib(pid: int) -> int | None:
    """Peak resident memory of a running process so far (``VmHWM``), KiB."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def infer_cmd(data: Path, out: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "src_train.cli", "infer", str(data), "--out", str(out)]
    return [*cmd, "--checkpoint", str(args.checkpoint), "--device", args.device, *extra]


def run_parts(
    commands: list[list[str]], env: dict[str, str], watch_first: bool = False
) -> tuple[float, list[int], list[tuple[int, int]]]:
    """Start the commands together; wall seconds, peak RSS (KiB) of each, and for the first
    (with ``--progress-json``) ``(series done, VmHWM KiB)`` after each series."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE if (watch_first and i == 0) else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i, cmd in enumerate(commands)
    ]
    samples: list[tuple[int, int]] = []
    if watch_first and procs[0].stdout is not None:
        for line in procs[0].stdout:
            event = json.loads(line)
            if event["kind"] == "series":
                hwm = peak_rss_kib(procs[0].pid)
                if hwm is not None:
                    samples.append((int(event["done"]), hwm))
    peaks = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"{proc.args} failed with exit status {code}")
        peaks.append(int(usage.ru_maxrss))
    return time.perf_counter() - t0, peaks, samples


def compare_candidates(a: Path, b: Path) -> str:
    """Byte-equal, or how far two runs' candidates are apart (the tuner may pick another
    memory format, which moves float16 probabilities by a step)."""
    text_a = (a / "candidates.csv").read_text()
    text_b = (b / "candidates.csv").read_text()
    if text_a == text_b:
        return "byte-equal"
    rows_a = [line.split(",") for line in text_a.splitlines()[1:]]
    rows_b = [line.split(",") for line in text_b.splitlines()[1:]]
    if len(rows_a) != len(rows_b):
        return f"{len(rows_a)} vs {len(rows_b)} candidates"
    key = sorted  # rows sorted as text: series, then coordinates
    worst_mm = max(
        (
            abs(float(x) - float(y))
            for ra, rb in zip(key(rows_a), key(rows_b), strict=True)
            for x, y in zip(ra[1:4], rb[1:4], strict=True)
        ),
        default=0.0,
    )
    return f"same {len(rows_a)} candidates, centers within {worst_mm:.3f} mm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=40, help="synthetic series (default 40)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto (default cpu)")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--keep", type=Path, default=None, help="keep the files in this folder")
    args = parser.parse_args()

    print(f"CPU: {cpu_kind()}, oneDNN bf16 {cpu_has_native_bf16()}")
    print(
        f"{device_line(args.device)}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"load average before: {load_text()}")
    with tempfile.TemporaryDirectory(prefix="bench-parts-") as tmp:
        root = args.keep or Path(tmp)
        data = root / "data"
        t0 = time.perf_counter()
        write_dataset(data, n_scans=args.series, seed=DATA_SEED, config=SynthConfig.tiny())
        print(f"{args.series} synthetic series written in {time.perf_counter() - t0:.0f} s")
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        one_thread = {**env, "OMP_NUM_THREADS": "1"}
        n = args.series
        rows: list[tuple[str, float, str]] = []

        base_s, base_peak, samples = run_parts(
            [infer_cmd(data, root / "out1", args, "--progress-json")], env, watch_first=True
        )
        rows.append(("infer, 1 part (baseline)", base_s, f"peak RSS {base_peak[0] / KIB:.0f} MiB"))
        for label, out, part_env in (
            ("infer, 2 parts at once", "out2", env),
            ("infer, 2 parts, 1 thread each", "out3", one_thread),
        ):
            part_s, part_peaks, _ = run_parts(
                [
                    infer_cmd(data, root / out, args, "--num-parts", "2", "--part-id", str(i))
                    for i in (0, 1)
                ],
                part_env,
            )
            peaks = ", ".join(f"{p / KIB:.0f}" for p in part_peaks)
            rows.append((label, part_s, f"peak RSS {peaks} MiB"))
        rerun_s, _, _ = run_parts([infer_cmd(data, root / "out1", args)], env)
        rows.append(("infer rerun, all complete", rerun_s, "every series skipped"))
        for workers in (1, 2):
            cache_cmd = [sys.executable, "-m", "src_train.cli", "cache", str(data)]
            cache_cmd += ["--cache-dir", str(root / f"cache{workers}"), "--workers", str(workers)]
            cache_s, _, _ = run_parts([cache_cmd], env)
            rows.append((f"cache, {workers} worker(s)", cache_s, ""))

        agreement = [compare_candidates(root / "out1", root / o) for o in ("out2", "out3")]
        print(f"\n{n} series; seconds from launch to the last exit (start-up included)")
        print(f"{'':34s} {'seconds':>8s} {'series/s':>9s} {'x baseline':>11s}")
        for name, seconds, note in rows:
            ratio = f"{base_s / seconds:11.2f}" if "part" in name else " " * 11
            print(f"{name:34s} {seconds:8.1f} {n / seconds:9.2f} {ratio}  {note}")
        for label, text in zip(("2 parts", "2 parts, 1 thread"), agreement, strict=True):
            print(f"candidates of '{label}' vs the baseline: {text}")
        print("\npeak RSS of the 1-part run after N series (VmHWM):")
        marks = sorted({1, n // 4, n // 2, 3 * n // 4, n} - {0})
        for done, hwm in samples:
            if done in marks:
                print(f"  after {done:3d} series: {hwm / KIB:7.0f} MiB")
    print(f"\nload average after: {load_text()}")


if __name__ == "__main__":
    main()
