"""A tiny hand-made LUNA16 folder: spheres at known places in known geometries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src_train.ct import Geometry, save_volume

LUNG_HU = -900


NODULE_HU = 100


BONE_HU = 1500  # above the model's clamp: must survive in the cache, clamped in samples


FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def sphere(shape: tuple[int, int, int], center: tuple[int, int, int], radius: float) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    z, y, x = center
    return (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def write_tiny_luna(
    root: Path,
    specs: list[tuple[str, tuple[int, int, int], list[tuple[int, int, int]], tuple[float, ...]]],
) -> dict[str, Geometry]:
    """Write series ``(uid, shape_irc, nodule centers irc, direction)`` in LUNA16 layout."""
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    geometries = {}
    for uid, shape, centers, direction in specs:
        hu = np.full(shape, LUNG_HU, dtype=np.int16)
        hu[:, :2, :] = BONE_HU
        for center in centers:
            hu[sphere(shape, center, 3)] = NODULE_HU
        geom = Geometry(shape, (-10.0, 20.0, -30.0), (0.8, 0.8, 2.0), direction)
        save_volume(hu, geom, root / "subset0" / f"{uid}.mhd")
        for center in centers:
            x, y, z = geom.irc_to_xyz(center)
            rows.append(f"{uid},{x},{y},{z},6.0")
        geometries[uid] = geom
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return geometries


SPECS = [
    ("1.1", (12, 40, 44), [(5, 20, 22), (1, 6, 38)], FLIPPED),  # second one near two edges
    ("1.2", (10, 70, 66), [(8, 35, 30)], (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)),
    ("1.3", (9, 48, 48), [(4, 24, 24)], (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
]


def record_mask(record, shape: tuple[int, int, int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A nodule record's own voxels (its box's local mask) as a whole-volume bool array."""
    out = np.zeros(shape, dtype=bool)
    out[record.box_slices] = record.local_mask
    return out
