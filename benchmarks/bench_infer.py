"""Whole-series inference speed on one synthetic 512x512x300 scan (prints figures, no pass/fail).

Three measurements in one run, on the same scan and checkpoint:

1. baseline: the model's forward passes alone, fp32, NCHW, batch 8, whole 512x512 slices,
   PyTorch's default threads (the inputs are stacked outside the timed region);
2. project settings in this process: :func:`src_train.infer.run_inference` with its defaults
   (measured threads / memory format / batch size, bf16 autocast, folded batch norms, body box),
   model time and total time including candidate grouping;
3. the whole command ``lunaseg infer SERIES --out DIR --checkpoint CKPT`` in a fresh process
   (start-up, reading, inference, writing included), with that process's peak RSS;
4. the project settings with ``--mirror`` (each slice also segmented mirrored left-right).

The ratio the issue asks for is baseline forward seconds / whole-command seconds. The machine's
load average is printed too: on a shared CPU every figure moves with the neighbours' work.

Usage::

    .venv/bin/python benchmarks/bench_infer.py                  # 512 x 512 x 300, demo checkpoint
    .venv/bin/python benchmarks/bench_infer.py --slices 60      # quicker
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import load_text, reference_forward

from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.ct import save_volume
from src_train.infer import run_inference
from src_train.model import load_model
from src_train.synth import SynthConfig, generate_scan

SCAN_SEED = 20261124


def run_command(series: Path, out_dir: Path, checkpoint: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of ``lunaseg infer`` in a fresh process."""
    cmd = [sys.executable, "-m", "src_train.cli", "infer", str(series), "--out", str(out_dir)]
    cmd += ["--checkpoint", str(checkpoint)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"lunaseg infer failed ({proc.returncode}):\n{output}")
    return seconds, usage.ru_maxrss / 1024.0, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="in-plane pixels (default 512)")
    parser.add_argument("--slices", type=int, default=300, help="slices (default 300)")
    parser.add_argument(
        "--baseline-slices",
        type=int,
        default=None,
        help="slices the baseline runs (default: all; fewer are extrapolated linearly)",
    )
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    args = parser.parse_args()

    config = replace(
        SynthConfig(),
        inplane_px_range=(args.size, args.size),
        inplane_px_multiple=1,
        slices_range=(args.slices, args.slices),
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {load_text()}")
    t0 = time.perf_counter()
    scan = generate_scan("bench.512", SCAN_SEED, config)
    ct = scan.ct
    print(
        f"scan {ct.shape_irc} (z, y, x), {ct.hu.nbytes / 2**20:.0f} MiB int16, "
        f"{len(scan.nodules)} nodules, made in {time.perf_counter() - t0:.1f} s"
    )

    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        series = save_volume(ct.hu, ct.geometry, Path(tmp) / "bench.512.mhd")

        # 3. whole command first, in a fresh process (no warm caches from this one).
        cmd_s, cmd_rss, output = run_command(series, Path(tmp) / "out", args.checkpoint)
        print(f"load {load_text()}")

        # 2. project settings, in this process.
        model, _ = load_model(args.checkpoint, device="cpu")
        res = run_inference(ct, model, device="cpu")
        s = res.settings
        print(f"load {load_text()}")

        # 4. the same with test-time mirroring.
        mirrored = run_inference(ct, model, device="cpu", mirror=True)
        print(f"load {load_text()}")

        # 1. baseline forward passes.
        n_base = args.baseline_slices or ct.shape_irc[0]
        baseline = model.eval().to(memory_format=torch.contiguous_format)
        base_part, _ = reference_forward(baseline, ct.hu, n_base)
        base_s = base_part * ct.shape_irc[0] / n_base

    n = ct.shape_irc[0]
    print(f"load {load_text()}")
    print()
    print(f"{'run':<46} {'seconds':>8} {'slices/s':>9}")
    label = "baseline fp32 NCHW batch 8 (forward passes only)"
    extra = "" if n_base == n else f"  ({n_base} slices measured, scaled to {n})"
    print(f"{label:<46} {base_s:8.1f} {n / base_s:9.1f}{extra}")
    print(
        f"{'project settings: model passes':<46} {res.model_seconds:8.1f} "
        f"{n / res.model_seconds:9.1f}"
    )
    print(
        f"{'project settings: run_inference total':<46} {res.seconds:8.1f} {n / res.seconds:9.1f}"
    )
    print(f"{'whole command: lunaseg infer':<46} {cmd_s:8.1f} {n / cmd_s:9.1f}")
    print(
        f"{'project settings --mirror: model passes':<46} {mirrored.model_seconds:8.1f} "
        f"{n / mirrored.model_seconds:9.1f}"
    )
    print()
    print(f"project settings: {s.describe() if s else '?'}; {len(res.candidates)} candidates")
    print(f"speed-up, baseline forward / whole command: {base_s / cmd_s:.1f}x")
    print(f"speed-up, baseline forward / project model passes: {base_s / res.model_seconds:.1f}x")
    print(
        f"peak RSS: lunaseg infer {cmd_rss:.0f} MiB (CT {ct.hu.nbytes / 2**20:.0f} MiB); "
        f"this benchmark {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print("command output:")
    print("  " + output.strip().replace("\n", "\n  "))


if __name__ == "__main__":
    main()
