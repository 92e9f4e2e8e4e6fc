"""``lunaseg train`` throughput by ``--threads`` setting, measured side by side in one run.

Each setting runs ``lunaseg train`` as a user does (a fresh process, the trainer's defaults
otherwise: two data-loader workers, bf16 where the CPU has it), on the same synthetic data and
cache; the figure is the training samples/s of the last epoch (from its ``--progress-json``
batch events; validation excluded). Settings are interleaved (1, 2, 0, 1, 2, 0, ...) so that a
change in the machine's load hits them alike; the median of the repeats is printed next to
the first setting's. ``--threads 0`` is PyTorch's own default (one thread per core).

    .venv/bin/python benchmarks/train_threads.py [--threads 1 2 0] [--repeats 3]

Say how busy the machine was next to any figure (``uptime``): on a shared CPU the ranking of
the settings can change with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import load_1min

ROOT = Path(__file__).resolve().parents[1]
DATA_SEED = 7


def load_average() -> str:
    """The 1-minute load average and the CPU count, e.g. ``"load 5.9 on 2 CPUs"``."""
    return f"load {load_1min():.1f} on {os.cpu_count()} CPUs"


def train_rate(data: Path, cache: Path, run: Path, threads: int, args: argparse.Namespace) -> float:
    """Samples/s of the last epoch of one ``lunaseg train --threads THREADS`` process."""
    cmd = [
        sys.executable,
        "-m",
        "src_train.cli",
        "train",
        str(data),
        "--run-dir",
        str(run),
        "--cache-dir",
        str(cache),
        "--epochs",
        str(args.epochs),
        "--epoch-samples",
        str(args.epoch_samples),
        "--val-every",
        str(args.epochs + 1),
        "--threads",
        str(threads),
        "--no-tensorboard",
        "--overwrite",
        "--progress-json",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"lunaseg train --threads {threads} failed:\n{out.stderr[-2000:]}")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    last = [e for e in events if e["kind"] == "batch" and e["epoch"] == args.epochs]
    return float(last[-1]["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-samples", type=int, default=512)
    parser.add_argument("--scans", type=int, default=6, help="small synthetic scans")
    args = parser.parse_args()

    from src_train.cache import SeriesCache
    from src_train.synth import SynthConfig, write_dataset

    print(f"{os.cpu_count()} CPUs; before: {load_average()}")
    rates: dict[int, list[float]] = {t: [] for t in args.threads}
    with tempfile.TemporaryDirectory(prefix="lunaseg-threads-") as tmp:
        data, cache = Path(tmp) / "data", Path(tmp) / "cache"
        write_dataset(data, n_scans=args.scans, seed=DATA_SEED, config=SynthConfig.tiny())
        SeriesCache(data, cache).build_all()
        for repeat in range(args.repeats):
            for threads in args.threads:
                start = time.perf_counter()
                rate = train_rate(data, cache, Path(tmp) / f"run{threads}", threads, args)
                rates[threads].append(rate)
                print(
                    f"  repeat {repeat + 1}, --threads {threads}: {rate:6.1f} samples/s "
                    f"({time.perf_counter() - start:.0f} s with start-up; {load_average()})",
                    flush=True,
                )
    base = statistics.median(rates[args.threads[0]])
    print(f"\nlunaseg train, last epoch's training samples/s (median of {args.repeats}):")
    for threads, values in rates.items():
        median = statistics.median(values)
        name = f"--threads {threads}" + (" (torch default)" if threads == 0 else "")
        spread = f"{min(values):.1f}-{max(values):.1f}"
        print(f"  {name:28s} {median:7.1f}  (range {spread})  x{median / base:.2f}")
    print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
