"""How fast is the synthetic data generator? Prints figures, not pass/fail.

Usage::

    python benchmarks/bench_synth.py [--size 512] [--slices 150] [--repeats 2]
        [--against DIR] [--protocols]

Measured in one run:

* seconds per scan of ``generate_scan`` for a full-size scan (``--size`` x ``--size`` px,
  ``--slices`` slices, 4 nodules) and for the tiny scans the tests use
  (:meth:`SynthConfig.tiny`), each in a fresh interpreter;
* with ``--against DIR``: the same figures for the generator in another source tree (a checkout
  of an older version, e.g. ``git archive main src_train | tar -x -C DIR``), in the same run,
  so that both are timed on the same machine under the same load;
* with ``--protocols``: seconds per full-size scan of each protocol family;
* writing one scan in LUNA16 form and reading it back (the I/O any consumer pays anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from src_train.ct import load_ct, save_volume
from src_train.synth import SynthConfig, generate_scan
from src_train.synth.protocols import FAMILY_NAMES

#: Run in a fresh interpreter with a source tree first on the path: prints the median seconds.
_TIMER = """
import json, statistics, sys, time
from src_train.synth import SynthConfig, generate_scan
args = json.loads(sys.argv[1])
config = SynthConfig.tiny() if args["tiny"] else SynthConfig(**args["fields"])
times = []
for seed in range(args["repeats"]):
    start = time.perf_counter()
    scan = generate_scan("bench", seed, config)
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times), "shape": list(scan.ct.hu.shape)}))
"""


def _time_in(tree: Path, tiny: bool, fields: dict[str, object], repeats: int) -> dict[str, object]:
    """Median seconds per scan of the generator in source tree ``tree`` (a fresh process)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    payload = json.dumps({"tiny": tiny, "fields": fields, "repeats": repeats})
    done = subprocess.run(
        [sys.executable, "-c", _TIMER, payload],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="in-plane pixels (default 512)")
    parser.add_argument("--slices", type=int, default=150, help="slices (default 150)")
    parser.add_argument("--repeats", type=int, default=2, help="scans per figure (median)")
    parser.add_argument("--against", type=Path, help="another source tree to time the same way")
    parser.add_argument("--protocols", action="store_true", help="time every protocol family")
    args = parser.parse_args()

    here = Path(__file__).resolve().parents[1]
    full: dict[str, object] = {
        "inplane_px_range": [args.size, args.size],
        "inplane_px_multiple": 1,
        "slices_range": [args.slices, args.slices],
        "nodules_per_scan_range": [4, 4],
    }
    trees = [("this tree", here)] + ([("--against", args.against)] if args.against else [])
    print(f"seconds per scan (median of {args.repeats}; CPU: {os.cpu_count()} cores)")
    for name, tree in trees:
        big = _time_in(tree, False, full, args.repeats)
        tiny = _time_in(tree, True, {}, max(args.repeats, 4))
        print(
            f"  {name:10s} full {big['shape']}: {big['seconds']:6.2f} s   "
            f"tiny {tiny['shape']}: {tiny['seconds']:6.3f} s   ({tree})"
        )
    if args.protocols:
        for family in FAMILY_NAMES:
            fields = dict(full, protocol=family)
            fields.pop("slices_range")
            result = _time_in(here, False, fields, args.repeats)
            print(f"  protocol {family:10s} {result['shape']}: {result['seconds']:6.2f} s")

    config = SynthConfig(
        inplane_px_range=(args.size, args.size),
        inplane_px_multiple=1,
        slices_range=(args.slices, args.slices),
    )
    scan = generate_scan("bench", 0, config)
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        ct_path, truth_path = Path(tmp) / "scan.mhd", Path(tmp) / "truth.mhd"
        start = time.perf_counter()
        save_volume(scan.ct.hu, scan.ct.geometry, ct_path, overwrite=True)
        save_volume(scan.truth, scan.ct.geometry, truth_path, compress=True, overwrite=True)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        load_ct(ct_path)
        read_s = time.perf_counter() - start
        size_mb = ct_path.with_suffix(".raw").stat().st_size / 1e6
    voxels = float(np.prod(scan.ct.hu.shape)) / 1e6
    print(f"  write ct .raw + truth .zraw {write_s:6.2f} s ({size_mb:.0f} MB, {voxels:.0f} Mvox)")
    print(f"  read ct back (load_ct)      {read_s:6.2f} s")


if __name__ == "__main__":
    main()
