"""How fast is the synthetic data generator? Prints figures, not pass/fail.

Usage::

    python benchmarks/bench_synth.py [--size 512] [--slices 150] [--repeats 2]

Measured in one run, on one 512 x 512 x 150 scan (index, row, col):

* generating it (``generate_scan``: body, vessels, nodules, noise);
* writing it in LUNA16 form (int16 ``.mhd``/``.raw`` plus the compressed uint8 truth) and
  reading it back with ``load_ct`` -- the I/O any consumer pays anyway;
* the baseline for the nodule step: drawing one nodule by evaluating its shape over the whole
  volume (the naive way) against its local box (what ``synth`` does).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from src_train.ct import load_ct, save_volume
from src_train.synth import SynthConfig, SynthScan, generate_scan
from src_train.synth.nodule_shape import draw_nodule, make_spec, nodule_radius_ratio
from src_train.synth.primitives import box_offsets


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="in-plane pixels (default 512)")
    parser.add_argument("--slices", type=int, default=150, help="slices (default 150)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per figure (median)")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the whole-volume baseline (it needs ~2 GB of memory and ~15 s)",
    )
    args = parser.parse_args()

    config = SynthConfig(
        inplane_px_range=(args.size, args.size),
        inplane_px_multiple=1,
        slices_range=(args.slices, args.slices),
        nodules_per_scan_range=(4, 4),
    )
    seconds, scan = _timed(lambda: generate_scan("bench", 0, config), args.repeats)
    assert isinstance(scan, SynthScan)
    shape = scan.ct.shape_irc
    megavoxels = np.prod(shape) / 1e6
    print(f"scan {shape} (index, row, col) = {megavoxels:.1f} Mvoxel, {len(scan.nodules)} nodules")
    print(
        f"  generate_scan                 {seconds:7.2f} s   ({megavoxels / seconds:.0f} Mvoxel/s)"
    )

    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        ct_path, truth_path = Path(tmp) / "scan.mhd", Path(tmp) / "truth.mhd"

        def write() -> None:
            save_volume(scan.ct.hu, scan.ct.geometry, ct_path, overwrite=True)
            save_volume(scan.truth, scan.ct.geometry, truth_path, compress=True, overwrite=True)

        write_s, _ = _timed(write, args.repeats)
        read_s, _ = _timed(lambda: load_ct(ct_path), args.repeats)
        size_mb = (ct_path.with_suffix(".raw").stat().st_size) / 1e6
        print(f"  write ct .raw + truth .zraw   {write_s:7.2f} s   ({size_mb:.0f} MB of CT)")
        print(f"  read ct back (load_ct)        {read_s:7.2f} s")

    if args.no_baseline:
        return
    # Baseline: one nodule's shape evaluated over the whole volume vs inside its box.
    spacing = np.asarray(scan.ct.geometry.spacing_irc_mm)
    rng = np.random.default_rng(1)
    spec = make_spec(rng, config, "solid", 12.0, spacing)
    spec.center_mm = (np.asarray(shape) - 1) / 2 * spacing
    whole = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))

    def naive() -> int:
        dz, dy, dx = box_offsets(whole, spacing, spec.center_mm)
        r, radius = nodule_radius_ratio(spec, dz, dy, dx)
        return int(np.count_nonzero(r <= radius))

    # The volumes the local version draws into are allocated outside the timed call.
    hu = np.zeros(shape, np.float32)
    truth = np.zeros(shape, np.uint8)
    lung = np.ones(shape, bool)

    def local() -> int:
        _, count = draw_nodule(hu, truth, lung, spec, 1, spacing, float(spacing[1]))
        return count

    naive_s, naive_count = _timed(naive, 1)
    local_s, _ = _timed(local, 1)
    print(f"  one 12 mm nodule, whole volume {naive_s:7.3f} s   (shape only, {naive_count} voxels)")
    print(f"  one 12 mm nodule, local box    {local_s:7.3f} s   (shape, texture, blend, truth)")
    print(f"  local-box speed-up             {naive_s / local_s:7.0f} x")


if __name__ == "__main__":
    main()
