"""What the whole LUNA16 costs: per-series time and bytes measured on full-size series, x 888.

On ``--series`` synthetic series of LUNA16's mean size (default 2 x 258 x 512 x 512; see
:data:`LUNA16_VOXELS`), in one run:

1. the **reference**: the model's forward passes alone, fp32, NCHW, batch 8, whole slices, on
   ``--baseline-slices`` slices of the first series, scaled to a series (the figure the issue's
   59.3 s per 130 slices measured);
2. ``lunaseg infer DATA --out OUT --device D`` in a fresh process; each series' record gives
   where its time went (reading, model passes, candidate grouping, writing the volumes and
   the ground-truth comparison) and the bytes it wrote;
3. ``lunaseg cache DATA --workers 1``: seconds and bytes per series.

Then the arithmetic for 888 scans, scaled by voxels from the measured series (a series' cost
is close to proportional to its voxels: every stage runs slice by slice or voxel by voxel):
one process, and ``--gpus`` parts at once (one per GPU, each with its own CPU cores for
reading and writing, which a GPU does not speed up). The CPU kind, device and load average are
printed with the figures.

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_luna_scale.py                 # CPU
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_luna_scale.py --device cuda --series 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import cpu_kind, load_text, reference_forward, run_timed

from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.model import load_model
from src_train.synth import SynthConfig, write_dataset

#: LUNA16: 888 CT scans in 10 subsets, about 120 GB of int16 ``.raw`` files (the issue's
#: figure), i.e. about 60e9 voxels; 67.6 M voxels a scan = 258 slices of 512 x 512 on average.
LUNA16_SCANS = 888
LUNA16_BYTES = 120e9
LUNA16_VOXELS = LUNA16_BYTES / 2
MEAN_SLICES = round(LUNA16_VOXELS / LUNA16_SCANS / (512 * 512))
DATA_SEED = 888
HOUR_S = 3600.0
GB = 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--slices", type=int, default=MEAN_SLICES)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus", type=int, default=8, help="parts at once in the arithmetic")
    parser.add_argument("--baseline-slices", type=int, default=32)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    args = parser.parse_args()

    print(f"CPU: {cpu_kind(('avx2', 'avx512f', 'avx512_bf16'))}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"device {args.device} (GPU: {gpu}); torch {torch.__version__}; load {load_text()}")
    config = replace(
        SynthConfig(),
        inplane_px_range=(args.size, args.size),
        inplane_px_multiple=1,
        slices_range=(args.slices, args.slices),
    )
    with tempfile.TemporaryDirectory(prefix="bench-luna-") as tmp:
        data, out, cache = Path(tmp) / "data", Path(tmp) / "out", Path(tmp) / "cache"
        t0 = time.perf_counter()
        folder = write_dataset(data, n_scans=args.series, seed=DATA_SEED, config=config)
        uids = folder.series_uids
        print(
            f"{args.series} series {args.slices} x {args.size} x {args.size} written in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        voxels = args.slices * args.size * args.size

        hu = folder.load(uids[0]).hu
        n_ref = min(args.baseline_slices, hu.shape[0])
        model, _ = load_model(args.checkpoint, device=args.device)
        ref_s = reference_forward(model, hu, n_ref)[0] * hu.shape[0] / n_ref
        print(
            f"reference fp32 NCHW batch-8 forward passes: {ref_s:.1f} s per series ({n_ref} "
            f"slices measured, scaled); load {load_text()}"
        )

        cmd = [sys.executable, "-m", "src_train.cli", "infer", str(data), "--out", str(out)]
        cmd += ["--checkpoint", str(args.checkpoint), "--device", args.device]
        infer_s = run_timed(cmd)
        records = [json.loads((out / f"{uid}.json").read_text()) for uid in uids]
        stages = {
            "reading": [r["load_seconds"] for r in records],
            "model passes": [r["model_seconds"] for r in records],
            "grouping candidates": [r["seconds"] - r["model_seconds"] for r in records],
            "writing (+ truth)": [r["write_seconds"] for r in records],
        }
        per_series = sum(float(np.mean(v)) for v in stages.values())
        out_bytes = float(np.mean([sum(f["bytes"] for f in r["files"].values()) for r in records]))
        print(
            f"\nlunaseg infer, {args.series} series in {infer_s:.1f} s (start-up included); "
            "per series (mean):"
        )
        for name, values in stages.items():
            print(f"  {name:22s} {np.mean(values):7.2f} s")
        print(
            f"  {'total':22s} {per_series:7.2f} s   (model passes "
            f"{ref_s / float(np.mean(stages['model passes'])):.1f}x faster than the reference)"
        )
        print(
            f"  outputs written: {out_bytes / 2**20:.1f} MiB per series; "
            f"execution: {records[-1]['execution']}"
        )

        cache_s = run_timed(
            [
                sys.executable,
                "-m",
                "src_train.cli",
                "cache",
                str(data),
                "--cache-dir",
                str(cache),
                "--workers",
                "1",
            ]
        )
        cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / args.series
        print(
            f"lunaseg cache (1 worker): {cache_s / args.series:.1f} s and "
            f"{cache_bytes / 2**20:.1f} MiB per series (start-up included)"
        )
        print(f"load {load_text()}")

    scale = LUNA16_VOXELS / (voxels * LUNA16_SCANS)  # LUNA16's mean scan vs the measured one
    one = per_series * scale * LUNA16_SCANS
    cpu_side = (per_series - float(np.mean(stages["model passes"]))) * scale * LUNA16_SCANS
    print(
        f"\nLUNA16 arithmetic: {LUNA16_SCANS} scans, {LUNA16_VOXELS / 1e9:.0f}e9 voxels "
        f"({LUNA16_BYTES / GB:.0f} GB int16), mean scan {MEAN_SLICES} x 512 x 512"
    )
    print(
        f"  inference, 1 process on {args.device}: {per_series * scale:.1f} s/scan x "
        f"{LUNA16_SCANS} = {one / HOUR_S:.1f} h"
    )
    print(
        f"  inference, {args.gpus} parts at once: {one / args.gpus / HOUR_S:.1f} h (reading, "
        f"grouping, writing alone: {cpu_side / args.gpus / HOUR_S:.2f} h, CPU work per part)"
    )
    print(
        "  reference forward passes alone, 1 process: "
        f"{ref_s * scale * LUNA16_SCANS / HOUR_S:.1f} h"
    )
    print(
        f"  inference outputs: {out_bytes / voxels * LUNA16_VOXELS / GB:.1f} GB (compressed; "
        "synthetic scans compress like real ones only roughly)"
    )
    print(
        f"  training cache: {cache_bytes / voxels * LUNA16_VOXELS / GB:.0f} GB "
        f"({cache_bytes / voxels:.3f} bytes/voxel), "
        f"{cache_s / args.series * scale * LUNA16_SCANS / HOUR_S:.1f} h with 1 worker"
    )


if __name__ == "__main__":
    main()
