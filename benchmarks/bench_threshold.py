"""How fast does a threshold change update the masks? Box-only update vs whole-volume recompute.

Builds a 512x512x300 int16 volume (index, row, col) of lung with a few dense nodules, then times,
in the same run and at the same thresholds:

- ``MaskState.set_threshold`` (recompute each nodule inside its box only, update in place);
- whole volume, int compare: ``(hu > t) & boxes`` over all voxels (the naive viewer update);
- whole volume, float compare: ``(hu > float t) & boxes`` (what a float threshold costs).

Usage: ``python benchmarks/bench_threshold.py [--repeats N] [--slices Z] [--method NAME]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from src_train.ct import CtVolume, Geometry
from src_train.luna import Nodule
from src_train.masks import MaskState, available_methods

THRESHOLDS_HU = (-700, -600, -750, -500, -800, -650)
#: Lung parenchyma of the phantom and its noise (standard deviation), HU.
LUNG_HU = -850.0
LUNG_NOISE_HU = 25.0


def make_volume(n_slices: int, n_nodules: int, seed: int = 0) -> tuple[CtVolume, list[Nodule]]:
    """Lung (-850 HU, noise) with ``n_nodules`` graded balls of 4-25 mm; 1.25x0.7x0.7 mm voxels
    ``(index, row, col)``."""
    rng = np.random.default_rng(seed)
    shape = (n_slices, 512, 512)
    # float32 in place: rng.normal would hold a float64 copy (8 bytes/voxel, ~630 MB at 300 slices)
    noise = rng.standard_normal(size=shape, dtype=np.float32)
    noise *= LUNG_NOISE_HU
    noise += LUNG_HU
    hu = noise.astype(np.int16)
    del noise
    geometry = Geometry(shape, (-180.0, -180.0, -350.0), (0.7, 0.7, 1.25))
    spacing_irc = np.asarray(geometry.spacing_irc_mm)
    nodules = []
    for _ in range(n_nodules):
        diameter = float(rng.uniform(4, 25))
        half_vox = np.ceil(diameter / spacing_irc).astype(int)
        center = [int(rng.integers(h + 1, n - h - 1)) for h, n in zip(half_vox, shape, strict=True)]
        sl = tuple(slice(c - h, c + h + 1) for c, h in zip(center, half_vox, strict=True))
        grids = np.ogrid[sl]
        dist = np.sqrt(
            sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing_irc, strict=True))
        )
        # Graded edge (so boxes move with the threshold), half-way HU at the annotated radius.
        ramp = np.clip((dist - 0.3 * diameter) / (0.4 * diameter), 0, 1)
        hu[sl] = np.maximum(hu[sl], (60 - 910 * ramp).astype(np.int16))
        xyz = geometry.irc_to_xyz(np.asarray(center, dtype=float))
        nodules.append(Nodule("bench", tuple(float(v) for v in xyz), diameter))
    return CtVolume(hu, geometry, "bench"), nodules


def best_ms(fn: Callable[[float], object], repeats: int) -> float:
    """Best of ``repeats`` passes over all thresholds, in ms per threshold change."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for t in THRESHOLDS_HU:
            fn(t)
        best = min(best, (time.perf_counter() - start) / len(THRESHOLDS_HU))
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--nodules", type=int, default=8)
    parser.add_argument("--method", choices=available_methods(), default="grow")
    args = parser.parse_args()

    ct, nodules = make_volume(args.slices, args.nodules)
    state = MaskState(ct, nodules, method=args.method)
    boxes = np.zeros(ct.shape_irc, dtype=bool)
    for rec in state.records:
        boxes[rec.box_slices] = True
    out = np.empty(ct.shape_irc, dtype=bool)

    def whole_int(t: float) -> None:
        np.greater(ct.hu, np.int16(t), out=out)
        np.logical_and(out, boxes, out=out)

    hu_float = ct.hu.astype(np.float32)

    def whole_float(t: float) -> None:
        np.greater(ct.hu, np.float32(t), out=out)
        np.logical_and(out, boxes, out=out)

    def whole_float_volume(t: float) -> None:
        np.greater(hu_float, np.float32(t), out=out)
        np.logical_and(out, boxes, out=out)

    rows = [
        (
            f"MaskState.set_threshold ({args.method}, boxes only)",
            best_ms(state.set_threshold, args.repeats),
        ),
        ("whole volume: (hu > int16 t) & boxes", best_ms(whole_int, args.repeats)),
        ("whole volume: (hu > float t) & boxes", best_ms(whole_float, args.repeats)),
        ("whole volume: float32 volume > t, & boxes", best_ms(whole_float_volume, args.repeats)),
    ]
    voxels = int(np.prod(ct.shape_irc))
    box_voxels = sum(int(np.prod(r.box_shape_irc)) for r in state.records)
    print(
        f"volume {ct.shape_irc} int16 ({voxels / 1e6:.1f} M voxels), {len(nodules)} nodules, "
        f"{box_voxels} voxels in boxes; ms per threshold change, best of {args.repeats}"
    )
    width = max(len(name) for name, _ in rows)
    for name, ms in rows:
        print(f"  {name:<{width}}  {ms:9.3f} ms  ({rows[1][1] / ms:7.1f}x vs int whole volume)")


if __name__ == "__main__":
    main()
