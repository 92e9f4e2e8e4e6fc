"""The vessels of a synthetic scan: branching trees from each hilum, tubes that run into some
nodules (juxtavascular ones), and how a tapered tube is blended into the lungs.

Positions are array mm ``(z, y, x)`` (see :mod:`src_train.synth.primitives`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src_train.ct import Geometry
from src_train.synth.anatomy import Anatomy
from src_train.synth.config import SynthConfig
from src_train.synth.nodule_shape import NoduleSpec
from src_train.synth.primitives import bend, box_offsets, index_box, random_unit, uniform


@dataclass
class Vessel:
    """A tapered tube from ``start_mm`` to ``end_mm`` (array mm ``(z, y, x)``), radii in mm."""

    start_mm: np.ndarray  # (z, y, x) array mm
    end_mm: np.ndarray
    radius_start_mm: float
    radius_end_mm: float
    hu: float


def draw_vessel(
    hu: np.ndarray,
    lung: np.ndarray | None,
    vessel: Vessel,
    spacing: np.ndarray,
    edge_mm: float,
) -> None:
    """Blend a tapered tube into ``hu`` inside the ``lung`` mask (everywhere if None), with a
    partial-volume edge."""
    pad = max(vessel.radius_start_mm, vessel.radius_end_mm) + edge_mm
    box = index_box(
        np.minimum(vessel.start_mm, vessel.end_mm) - pad,
        np.maximum(vessel.start_mm, vessel.end_mm) + pad,
        spacing,
        hu.shape,
    )
    if box is None:
        return
    dz, dy, dx = box_offsets(box, spacing, vessel.start_mm)
    axis = (vessel.end_mm - vessel.start_mm).astype(np.float32)
    length2 = float(axis @ axis) or 1e-6
    t = np.clip((dz * axis[0] + dy * axis[1] + dx * axis[2]) / length2, 0.0, 1.0)
    dist2 = (dz - t * axis[0]) ** 2 + (dy - t * axis[1]) ** 2 + (dx - t * axis[2]) ** 2
    radius = vessel.radius_start_mm + (vessel.radius_end_mm - vessel.radius_start_mm) * t
    weight = np.clip((radius - np.sqrt(dist2)) / edge_mm + 0.5, 0.0, 1.0)
    if lung is not None:
        weight *= lung[box]
    region = hu[box]
    region += weight * (np.float32(vessel.hu) - region)


#: Radius of a child branch over its parent's end radius (Murray's law gives 2 ** (-1/3)).
CHILD_RADIUS_RATIO = (0.72, 0.86)
#: Length of a child branch over its parent's.
CHILD_LENGTH_RATIO = (0.75, 0.92)
#: At most this many segments per scan (a bound on the work).
MAX_SEGMENTS = 6000

#: Lobar trunk directions from each hilum ``(z, y, x-outward)`` (up, forward, down, back).
_TRUNK_DIRECTIONS = (
    (1.0, -0.2, 0.5),
    (0.5, -0.8, 0.6),
    (-0.3, -0.6, 0.7),
    (-1.0, 0.3, 0.5),
    (-0.6, 0.8, 0.5),
    (0.2, 0.6, 0.8),
)


def vessel_trees(
    rng: np.random.Generator,
    cfg: SynthConfig,
    geometry: Geometry,
    anat: Anatomy,
    lung: np.ndarray,
    tries: int = 3,
) -> list[Vessel]:
    """Branching trees from each hilum, tapering toward the periphery (array mm); a branch must
    end inside a lung. Arteries start at the hilum, veins a little lower."""
    spacing = np.asarray(geometry.spacing_irc_mm)
    shape = np.asarray(geometry.shape_irc)
    center = (shape - 1) / 2 * spacing
    min_radius = max(0.4, 0.3 * float(spacing[1]))

    def ends_in_lung(point_mm: np.ndarray) -> bool:
        index = np.round(point_mm / spacing).astype(int)
        return bool(np.all((index >= 0) & (index < shape)) and lung[tuple(index)])

    stack = []
    for side in (-1.0, 1.0):
        for trunk in range(cfg.vessel_trunks_per_lung):
            du = -0.06 if trunk % 2 else 0.0  # veins drain lower than the arteries enter
            start = anat.hilum_mm(side, center, du)
            z, y, x = _TRUNK_DIRECTIONS[trunk % len(_TRUNK_DIRECTIONS)]
            direction = bend(rng, np.array([z, y, side * x]) / np.linalg.norm([z, y, x]), 0.25)
            radius = rng.uniform(3.5, 5.0) * anat.size_scale
            length = rng.uniform(0.24, 0.3) * anat.thorax_bx
            stack.append((start, direction, radius, length, 0, side))
    vessels: list[Vessel] = []
    while stack and len(vessels) < MAX_SEGMENTS:
        start, direction, radius, length, generation, side = stack.pop()
        end_radius = radius * rng.uniform(0.88, 0.96)
        end = start + direction * length
        vessels.append(Vessel(start, end, radius, end_radius, uniform(rng, cfg.vessel_hu_range)))
        if generation >= cfg.vessel_generations:
            continue
        for _ in range(3 if rng.random() < 0.3 else 2):
            child_radius = end_radius * uniform(rng, CHILD_RADIUS_RATIO)
            if child_radius < min_radius:
                continue
            child_length = max(length * uniform(rng, CHILD_LENGTH_RATIO), 4 * child_radius)
            for _ in range(tries):
                child = bend(rng, direction, rng.uniform(0.3, 0.75))
                if ends_in_lung(end + child * child_length):
                    stack.append((end, child, child_radius, child_length, generation + 1, side))
                    break
    return vessels


def juxtavascular_vessels(
    rng: np.random.Generator,
    cfg: SynthConfig,
    anat: Anatomy,
    specs: list[NoduleSpec],
    min_radius_mm: float,
) -> list[Vessel]:
    """Tubes that touch every ``juxtavascular`` nodule and run into a fraction
    ``cfg.juxtavascular_fraction`` of solid and part-solid ones (array mm); at least
    ``min_radius_mm`` thick, so that the scan shows them."""
    vessels: list[Vessel] = []
    for spec in specs:
        touching = spec.kind == "juxtavascular"
        if touching or (
            spec.kind in ("solid", "part-solid") and rng.random() < cfg.juxtavascular_fraction
        ):
            direction = random_unit(rng)
            side = bend(rng, direction, np.pi / 2) * spec.radius_mm * rng.uniform(0.6, 1.0)
            length = max(rng.uniform(15, 35) * anat.size_scale, 2 * spec.extent_mm + 8.0)
            middle = spec.center_mm + side
            radius = max(rng.uniform(0.8, 1.8) * anat.size_scale, min_radius_mm)
            vessels.append(
                Vessel(
                    middle - direction * length / 2,
                    middle + direction * length / 2,
                    radius,
                    radius * 0.8,
                    uniform(rng, cfg.vessel_hu_range),
                )
            )
    return vessels
