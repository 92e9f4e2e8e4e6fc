"""A hand-made chest for label-QA tests: air, a body, two lungs, three 8 mm nodules, and
annotations of every kind QA looks for (one right, the others each wrong one way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src_train.ct import CtVolume, Geometry, save_volume

FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SHAPE = (24, 96, 96)
NODULE_D_MM = 8.0
#: Nodules (index, row, col): A is annotated right, B with 3x its diameter, C with a third.
NODULES = {"A": (12, 48, 26), "B": (12, 48, 70), "C": (4, 36, 30)}


def chest(direction: tuple[float, ...]) -> CtVolume:
    """Air, an elliptic body (30 HU), two lungs (-850 HU), three 8 mm nodules (40 HU)."""
    rng = np.random.default_rng(0)
    _, y, x = SHAPE
    yy, xx = np.ogrid[:y, :x]
    hu = np.full(SHAPE, -1000, dtype=np.int16)
    body = ((yy - 48) / 40) ** 2 + ((xx - 48) / 44) ** 2 < 1
    lungs = ((yy - 48) / 28) ** 2 + ((np.abs(xx - 48) - 22) / 18) ** 2 < 1
    hu[:, body] = 30
    hu[:, lungs] = -850
    geometry = Geometry(SHAPE, (-40.0, 10.0, -200.0), (1.0, 1.0, 2.0), direction)
    zz, yy3, xx3 = np.indices(SHAPE)
    for center in NODULES.values():
        d2 = ((zz - center[0]) * 2.0) ** 2 + (yy3 - center[1]) ** 2 + (xx3 - center[2]) ** 2
        hu[d2 <= (NODULE_D_MM / 2) ** 2] = 40
    hu += rng.integers(-15, 16, size=SHAPE, dtype=np.int16)
    return CtVolume(hu=hu, geometry=geometry, series_uid="1.2.3")


def world(ct: CtVolume, irc: tuple[float, float, float]) -> tuple[float, float, float]:
    x, y, z = ct.geometry.irc_to_xyz(np.asarray(irc, dtype=np.float64))
    return (float(x), float(y), float(z))


def scene_rows(ct: CtVolume) -> list[tuple[str, tuple[float, float, float], float]]:
    """(what it is, center world mm, diameter mm), one per annotation."""
    a = NODULES["A"]
    return [
        ("good", world(ct, a), NODULE_D_MM),
        ("large", world(ct, NODULES["B"]), 3 * NODULE_D_MM),
        ("small", world(ct, NODULES["C"]), NODULE_D_MM / 3),
        ("air", world(ct, (20, 48, 26)), 6.0),
        ("body", world(ct, (12, 4, 4)), 6.0),
        ("outside", world(ct, (40, 48, 26)), 6.0),
        ("duplicate", world(ct, (a[0], a[1] + 1.5, a[2])), NODULE_D_MM),
    ]


def write_folder(root: Path, direction: tuple[float, ...]) -> CtVolume:
    ct = chest(direction)
    save_volume(ct.hu, ct.geometry, root / "subset0" / "1.2.3.mhd")
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm,reader"]
    for k, (what, (x, y, z), d) in enumerate(scene_rows(ct)):
        lines.append(f"1.2.3,{x:.5f},{y:.5f},{z:.5f},{d:.2f},r{k}-{what}")
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    return ct


#: A calcified nodule (600 HU, 8 mm) in the right lung, away from B.
CALCIFIED = (18, 60, 70)
#: A rib in the front chest wall: rows 12-16, columns 20-76, slices 9-13 (10 mm wide).
RIB = (slice(9, 14), slice(12, 17), slice(20, 77))


def bony_chest() -> CtVolume:
    """:func:`chest` plus a calcified nodule in lung and a rib (300 HU marrow in a 750 HU
    cortex) in the chest wall."""
    ct = chest(IDENTITY)
    hu = ct.hu.copy()
    zz, yy, xx = np.indices(SHAPE)
    k, r, c = CALCIFIED
    ball = ((zz - k) * 2.0) ** 2 + (yy - r) ** 2 + (xx - c) ** 2 <= (NODULE_D_MM / 2) ** 2
    hu[ball] = 600
    hu[RIB] = 750
    hu[10:13, 13:16, 21:76] = 300
    return CtVolume(hu=hu, geometry=ct.geometry, series_uid=ct.series_uid)
