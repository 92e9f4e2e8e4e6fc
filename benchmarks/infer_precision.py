"""Whole-series inference in fp32 against bf16 autocast on this CPU, and what ``auto`` picks.

On a few synthetic scans (``lunaseg synth`` defaults, mixed protocols) and the demo checkpoint,
:func:`src_train.infer.run_inference` runs every scan once per precision and round, the
precisions interleaved (round r runs fp32, then bf16), each round with a fresh tuner as a fresh
``lunaseg infer`` process has; everything else as ``lunaseg infer`` ships (threads, memory
format and batch measured, batch norms folded, body box). The baseline is fp32. Printed: seconds
per round (median and minimum), slices per second, bf16's ratio to fp32, the candidates each
found, and the precision ``--precision auto`` takes on this CPU
(:func:`src_train.devices.cpu_bf16_pays`).

A CPU without AMX can be imitated on one with it: oneDNN's ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``
keeps it off the AMX tiles (AVX-512 bf16 instructions only), and LunaSeg then counts the CPU as
one without AMX. Example (about 5 minutes on 2 cores)::

    .venv/bin/python benchmarks/infer_precision.py
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 .venv/bin/python benchmarks/infer_precision.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import cpu_kind, load_text

from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.ct import CtVolume
from src_train.devices import cpu_bf16_pays, cpu_has_amx, cpu_has_native_bf16, onednn_isa_cap
from src_train.infer import InferenceOptions, TunerCache, run_inference
from src_train.infer.detector import load_detector
from src_train.luna import LunaFolder
from src_train.synth import write_dataset


def slices(cts: list[CtVolume]) -> int:
    """Slices of all scans."""
    return sum(ct.hu.shape[0] for ct in cts)


def one_round(cts: list[CtVolume], model: torch.nn.Module, precision: str) -> tuple[float, int]:
    """Seconds of ``run_inference`` over every scan in ``precision``, and the candidates found."""
    tuners = TunerCache()
    options = InferenceOptions(device="cpu", precision=precision)
    started = time.perf_counter()
    found = sum(len(run_inference(ct, model, options, tuners=tuners).candidates) for ct in cts)
    return time.perf_counter() - started, found


def time_rounds(
    cts: list[CtVolume], model: torch.nn.Module, rounds: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds of every round per precision, and the candidates each precision found."""
    print(f"{len(cts)} scans, {slices(cts)} slices; {rounds} rounds")
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    found: dict[str, int] = {}
    for r in range(rounds):
        for precision in seconds:
            took, found[precision] = one_round(cts, model, precision)
            seconds[precision].append(took)
            print(f"  round {r + 1} {precision}: {took:.1f} s", flush=True)
    return seconds, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=3, help="synthetic scans (default 3)")
    parser.add_argument("--seed", type=int, default=99, help="their seed (default 99)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per precision (default 2)")
    parser.add_argument("--data-dir", type=Path, help="a LUNA16-layout folder instead")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    args = parser.parse_args()
    if not cpu_has_native_bf16():
        parser.exit(0, "this CPU has no native bf16: LunaSeg runs fp32 here, nothing to compare\n")
    print(f"CPU: {cpu_kind()}; oneDNN ISA cap {onednn_isa_cap() or 'unset'}")
    print(
        f"native bf16 {cpu_has_native_bf16()}, AMX usable {cpu_has_amx()}: --precision auto "
        f"runs {'bf16' if cpu_bf16_pays() else 'fp32'} here; torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}; load {load_text()}"
    )
    detector = load_detector(args.checkpoint, "cpu")
    with tempfile.TemporaryDirectory(prefix="lunaseg-bench-") as tmp:
        data = args.data_dir
        if data is None:
            data = Path(tmp) / "data"
            write_dataset(data, n_scans=args.scans, seed=args.seed)
        folder = LunaFolder(data)
        cts = [folder.load(uid) for uid in folder.series_uids[: args.scans]]
        seconds, found = time_rounds(cts, detector.model, args.rounds)
    n_slices = slices(cts)
    base = statistics.median(seconds["fp32"])
    print(
        f"\n{'precision':<22}{'median s':>10}{'min s':>8}{'slices/s':>10}{'x fp32':>8}{'cands':>7}"
    )
    for precision, values in seconds.items():
        med = statistics.median(values)
        label = precision + (" (baseline)" if precision == "fp32" else " autocast")
        print(
            f"{label:<22}{med:>10.1f}{min(values):>8.1f}{n_slices / med:>10.1f}"
            f"{base / med:>7.2f}x{found[precision]:>7}"
        )
    print(f"load after: {load_text()}")


if __name__ == "__main__":
    main()
