"""Per-series inference speed on an fp32 CPU: eager PyTorch vs the exported model (figures only).

On one synthetic series (default 130 x 512 x 512, like ``lunaseg synth --size 512 --slices 130
--seed 3``) and the demo checkpoint, one run measures, ``--repeats`` rounds interleaved:

1. the **reference**: the unfused model's forward passes alone, fp32, NCHW, batch 8, PyTorch's
   default threads, whole slices, on ``--baseline-slices`` slices scaled to the series (what
   the issue's 59.3 s measured);
2. :func:`run_inference` with ``engine="torch"`` (the runner before this path: threads, memory
   format and batch tuned on the series, body box, batch norms folded);
3. :func:`run_inference` with each runtime forced (``engine="openvino"``) and with
   ``engine="auto"`` (what ``lunaseg infer`` does: the tuner measures PyTorch and the runtime
   and keeps the faster). Each call gets a fresh tuner and engine cache, so the export is paid
   every time, as in a fresh process; its seconds are shown apart;
4. the whole command ``lunaseg infer SERIES --out DIR --engine E`` in a fresh process (start-up,
   reading, export, inference, writing) for ``torch`` and ``auto``.

Probabilities are compared with the ``engine="torch"`` run (max |dp| and mask voxels that flip)
and with the reference on the slices it ran. The CPU kind (AVX2 / AVX-512 / bf16) and the load
average are printed: on a shared machine every figure moves with the neighbours' work.

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_infer_backends.py
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_infer_backends.py --slices 40 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import cpu_kind, load_1min, reference_forward, run_timed

from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.ct import save_volume
from src_train.devices import cpu_has_native_bf16
from src_train.infer import InferenceOptions, TunerCache, run_inference
from src_train.infer.backends import ENGINE_CHOICES, is_installed
from src_train.model import load_model
from src_train.synth import SynthConfig, generate_scan

SCAN_SEED = 3
THRESHOLD = 0.5


def command_seconds(series: Path, out: Path, engine: str) -> float:
    cmd = [sys.executable, "-m", "src_train.cli", "infer", str(series), "--out", str(out)]
    cmd += ["--device", "cpu", "--engine", engine]
    return run_timed(cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=130)
    parser.add_argument("--baseline-slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--no-command", action="store_true", help="skip the whole-command runs")
    args = parser.parse_args()

    print(f"CPU: {cpu_kind()}, oneDNN bf16 {cpu_has_native_bf16()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {load_1min():.2f}")
    config = replace(
        SynthConfig(),
        inplane_px_range=(args.size, args.size),
        inplane_px_multiple=1,
        slices_range=(args.slices, args.slices),
    )
    ct = generate_scan("bench.engines", SCAN_SEED, config).ct
    print(f"series {ct.shape_irc} (index, row, col)")
    model, _ = load_model(args.checkpoint, device="cpu")
    engines = [
        "torch",
        *[e for e in ENGINE_CHOICES if e not in ("auto", "torch") and is_installed(e)],
    ]
    engines.append("auto")
    missing = [e for e in ENGINE_CHOICES if e not in engines]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")

    n_ref = min(args.baseline_slices, ct.shape_irc[0])
    ref_s: list[float] = []
    model_s: dict[str, list[float]] = {e: [] for e in engines}
    total_s: dict[str, list[float]] = {e: [] for e in engines}
    results = {}
    loads = []
    for _round in range(args.repeats):
        seconds, ref_prob = reference_forward(model.eval(), ct.hu, n_ref, keep_probs=True)
        ref_s.append(seconds * ct.shape_irc[0] / n_ref)
        for engine in engines:
            opts = InferenceOptions(device="cpu", engine=engine)
            result = run_inference(ct, model, opts, tuners=TunerCache())
            model_s[engine].append(result.model_seconds)
            total_s[engine].append(result.seconds)
            results[engine] = result
        loads.append(load_1min())

    base = statistics.median(ref_s)
    print(f"\nmedian of {args.repeats} round(s); load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'path':42s} {'model s':>8s} {'total s':>8s} {'x ref':>6s}  settings")
    print(
        f"{'reference fp32 NCHW b8 whole slices':42s} {base:8.1f} {'':>8s} {1.0:6.2f}  "
        f"{n_ref} slices measured, scaled"
    )
    torch_prob = results["torch"].prob.astype(np.float32)
    for engine in engines:
        r = results[engine]
        m, t = statistics.median(model_s[engine]), statistics.median(total_s[engine])
        how = r.settings.describe() if r.settings else ""
        print(f"{'run_inference engine=' + engine:42s} {m:8.1f} {t:8.1f} {base / m:6.2f}  {how}")
    print("\nnumerics (probabilities stored as float16, as the runner keeps them):")
    for engine in engines[1:]:
        prob = results[engine].prob.astype(np.float32)
        flips = int(np.count_nonzero((prob >= THRESHOLD) != (torch_prob >= THRESHOLD)))
        print(
            f"  {engine:12s} vs torch: max|dp| {np.abs(prob - torch_prob).max():.2e}, "
            f"{flips} mask voxels flip"
        )
    for engine in engines:
        prob = results[engine].prob[:n_ref].astype(np.float32)
        print(
            f"  {engine:12s} vs reference ({n_ref} slices): "
            f"max|dp| {np.abs(prob - ref_prob).max():.2e}"
        )

    if not args.no_command:
        with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
            series = save_volume(ct.hu, ct.geometry, Path(tmp) / "bench.engines.mhd")
            print(
                "\nwhole command lunaseg infer (fresh process: start-up, reading, export, writing):"
            )
            for engine in ("torch", "auto"):
                seconds = command_seconds(series, Path(tmp) / f"out-{engine}", engine)
                print(
                    f"  --engine {engine:6s} {seconds:6.1f} s  ({base / seconds:.2f}x the "
                    f"reference forward passes); load {load_1min():.2f}"
                )


if __name__ == "__main__":
    main()
