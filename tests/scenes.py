"""Hand-built CT scenes for mask tests: lung at -850 HU with dense boxes and balls at known
places, so every radius, box and Dice is known exactly."""

from __future__ import annotations

import numpy as np

from src_train.ct import CtVolume, Geometry
from src_train.luna import Nodule

LUNG_HU = -850


SOLID_HU = 40


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)


PERMUTED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def make_ct(
    shape: tuple[int, int, int] = (20, 24, 28),
    spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0),
    direction: tuple[float, ...] = IDENTITY,
    origin: tuple[float, float, float] = (-10.0, 20.0, -300.0),
) -> CtVolume:
    hu = np.full(shape, LUNG_HU, dtype=np.int16)
    geometry = Geometry(shape, origin, spacing_xyz, direction)
    return CtVolume(hu, geometry, "1.2.3.test")


def nodule_at(ct: CtVolume, irc: tuple[int, int, int], diameter_mm: float | None = 6.0) -> Nodule:
    xyz = ct.geometry.irc_to_xyz(np.asarray(irc, dtype=float))
    return Nodule(ct.series_uid, tuple(float(v) for v in xyz), diameter_mm)


def paint_box(ct: CtVolume, center: tuple[int, int, int], half: tuple[int, int, int]) -> None:
    """Dense cuboid center +- half (inclusive), clipped to the volume."""
    sl = tuple(slice(max(0, c - h), c + h + 1) for c, h in zip(center, half, strict=True))
    ct.hu[sl] = SOLID_HU


def ball(shape: tuple[int, int, int], center_irc, radius_mm: float, spacing_irc) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center_irc, spacing_irc, strict=True))
    return d2 <= radius_mm**2


# ---------------------------------------------------------------------------------------------
# Interactive thresholds
# ---------------------------------------------------------------------------------------------
def graded_ct() -> tuple[CtVolume, list[Nodule]]:
    """Three nodules (two with overlapping boxes) whose HU falls off with distance."""
    ct = make_ct(shape=(24, 40, 40))
    centers = [(12, 14, 14), (12, 14, 21), (8, 30, 28)]
    grids = np.ogrid[:24, :40, :40]
    hu = ct.hu.astype(np.float64)
    for c in centers:
        d = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True)))
        hu = np.maximum(hu, 60.0 - 150.0 * d)
    rng = np.random.default_rng(3)
    ct.hu[...] = np.clip(hu + rng.normal(0, 30, hu.shape), -1000, 400).astype(np.int16)
    return ct, [nodule_at(ct, c) for c in centers]


# ---------------------------------------------------------------------------------------------
# Diameter-aware methods
# ---------------------------------------------------------------------------------------------
def diameter_scene(
    spacing_irc: tuple[float, float, float], diameter_mm: float, *, wall: bool, vessel: bool
) -> tuple[CtVolume, Nodule, np.ndarray]:
    """A ball nodule in lung (physical mm), optionally on a chest wall and crossed by a vessel."""
    extent_mm = 3.2 * diameter_mm
    shape = tuple(round(extent_mm / s) | 1 for s in spacing_irc)
    center = tuple(n // 2 for n in shape)
    ct = make_ct(shape=shape, spacing_xyz=spacing_irc[::-1])  # type: ignore[arg-type]
    truth = ball(shape, center, diameter_mm / 2, spacing_irc)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    if wall:  # everything beyond the nodule's surface along +col is chest wall
        wall_mask = (grids[2] - center[2]) * spacing_irc[2] > diameter_mm / 2
        ct.hu[np.broadcast_to(wall_mask, shape)] = SOLID_HU
    if vessel:  # a 2 mm vessel along the row axis through the center
        d2 = sum(((grids[a] - center[a]) * spacing_irc[a]) ** 2 for a in (0, 2))
        ct.hu[np.broadcast_to(d2 <= 1.0, shape)] = SOLID_HU
    ct.hu[truth] = SOLID_HU
    return ct, nodule_at(ct, center, diameter_mm), truth


def nodule_center(ct: CtVolume, nodule: Nodule) -> tuple[int, int, int]:
    return tuple(int(v) for v in ct.geometry.xyz_to_irc_index(nodule.center_xyz_mm))


# ---------------------------------------------------------------------------------------------
# The SPEC rule written out literally, against build_masks / MaskState on random volumes
# ---------------------------------------------------------------------------------------------
OBLIQUE_FLIP = (0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)  # axes permuted, one flipped


def spec_rule(hu: np.ndarray, center: tuple[int, int, int], threshold_hu: float):
    """Reference: per axis (index, row, col) r = 2, 3, ... while center-r and center+r are both
    inside the volume and both > threshold; box = center +- r clipped; mask = box AND dense."""
    radii = []
    for axis in range(3):
        r = 2
        while True:
            lo_i, hi_i = center[axis] - r, center[axis] + r
            if lo_i < 0 or hi_i >= hu.shape[axis]:
                break
            lo_v = list(center)
            hi_v = list(center)
            lo_v[axis], hi_v[axis] = lo_i, hi_i
            if not (hu[tuple(lo_v)] > threshold_hu and hu[tuple(hi_v)] > threshold_hu):
                break
            r += 1
        radii.append(r)
    box = tuple(
        slice(max(0, c - r), min(n, c + r + 1))
        for c, r, n in zip(center, radii, hu.shape, strict=True)
    )
    mask = np.zeros(hu.shape, dtype=bool)
    mask[box] = hu[box] > threshold_hu
    return tuple(radii), mask


def blobby_ct(shape, direction, seed: int) -> tuple[CtVolume, list[Nodule]]:
    """Random dense cuboids in lung; nodules at blob centers, at corners and on every face."""
    rng = np.random.default_rng(seed)
    ct = make_ct(shape=shape, spacing_xyz=(0.7, 0.9, 2.5), direction=direction)
    centers = [tuple(int(v) for v in rng.integers(0, shape)) for _ in range(6)]
    centers += [(0, 0, 0), tuple(n - 1 for n in shape)]
    centers += [(0, shape[1] // 2, shape[2] - 1), (shape[0] - 1, 0, shape[2] // 2)]
    for c in centers:
        paint_box(ct, c, tuple(int(v) for v in rng.integers(1, 6, size=3)))
    ct.hu[...] += rng.integers(-40, 40, size=shape).astype(np.int16)
    return ct, [nodule_at(ct, c) for c in centers]
