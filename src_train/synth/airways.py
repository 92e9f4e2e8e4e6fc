"""The airways of a synthetic scan: the trachea down to the carina, the two main bronchi to the
hila (the right one steeper and shorter) and the bronchi that branch from them into each lung,
drawn as air tubes with a soft-tissue wall.

Positions are array mm ``(z, y, x)`` (see :mod:`src_train.synth.primitives`).
"""

from __future__ import annotations

import numpy as np

from src_train.ct import Geometry
from src_train.synth.anatomy import Anatomy
from src_train.synth.primitives import bend
from src_train.synth.vessels import Vessel, draw_vessel

#: Airway lumen and wall, HU.
LUMEN_HU = -1000.0
WALL_HU = 30.0
#: Wall thickness over the lumen radius (plus a floor, mm).
WALL_FRACTION = 0.18
WALL_MIN_MM = 0.6
#: Bronchi stop branching below this lumen radius (mm) or after this many generations.
MIN_BRONCHUS_MM = 0.9
BRONCHUS_GENERATIONS = 4


def airway_tree(
    rng: np.random.Generator, geometry: Geometry, anat: Anatomy, lung: np.ndarray
) -> tuple[list[Vessel], list[Vessel]]:
    """The central airways (trachea, main bronchi: drawn everywhere) and the bronchi in the
    lungs (drawn inside the lung mask), as tubes of lumen radius, array mm."""
    spacing = np.asarray(geometry.spacing_irc_mm)
    shape = np.asarray(geometry.shape_irc)
    center = (shape - 1) / 2 * spacing
    scale = anat.size_scale
    vy, vr = anat.vertebra
    trachea_yx = np.array([center[1] + vy - 1.75 * vr, center[2]])
    carina = np.array([anat.z_of_u(anat.carina_u), *trachea_yx])
    top = np.array([anat.z_of_u(1.3), *trachea_yx])
    radius = 8.0 * scale
    central = [Vessel(top, carina, radius, radius, LUMEN_HU)]
    inner: list[Vessel] = []
    for side, drop, r_main in ((-1.0, 0.05, 6.5), (1.0, 0.02, 5.5)):
        hilum = anat.hilum_mm(side, center, drop)
        hilum[1] -= 0.05 * anat.thorax_by  # bronchi lie just in front of the arteries
        central.append(Vessel(carina, hilum, r_main * scale, 0.85 * r_main * scale, LUMEN_HU))
        stack = []
        for lobe in range(3 if side < 0 else 2):
            up = (1.0, 0.0, -1.0)[lobe] if side < 0 else (0.8, -0.8)[lobe]
            direction = np.array([up, rng.uniform(-0.6, 0.6), side * 0.7])
            direction /= np.linalg.norm(direction)
            stack.append((hilum, bend(rng, direction, 0.2), 4.0 * scale, 0.14 * anat.thorax_bx, 0))
        while stack:
            start, direction, r, length, generation = stack.pop()
            end = start + direction * length
            inner.append(Vessel(start, end, r, 0.9 * r, LUMEN_HU))
            child_r = 0.78 * r
            if generation >= BRONCHUS_GENERATIONS or child_r < MIN_BRONCHUS_MM:
                continue
            for _ in range(2):
                child = bend(rng, direction, rng.uniform(0.3, 0.6))
                tip = np.round((end + child * length * 0.8) / spacing).astype(int)
                if np.all((tip >= 0) & (tip < shape)) and lung[tuple(tip)]:
                    stack.append((end, child, child_r, length * 0.8, generation + 1))
    return central, inner


def _walled(tube: Vessel) -> Vessel:
    """The same tube widened by its wall."""

    def wider(r: float) -> float:
        return r + max(WALL_FRACTION * r, WALL_MIN_MM)

    return Vessel(
        tube.start_mm, tube.end_mm, wider(tube.radius_start_mm), wider(tube.radius_end_mm), WALL_HU
    )


def draw_airways(
    hu: np.ndarray,
    lung: np.ndarray,
    central: list[Vessel],
    inner: list[Vessel],
    spacing: np.ndarray,
    edge_mm: float,
) -> None:
    """Draw walls, then lumens: the central airways everywhere, the bronchi inside the lungs."""
    for tubes, mask in ((central, None), (inner, lung)):
        for tube in tubes:
            draw_vessel(hu, mask, _walled(tube), spacing, edge_mm)
        for tube in tubes:
            draw_vessel(hu, mask, tube, spacing, edge_mm)
