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
    hu: np.ndarray, lung: np.ndarray, vessel: Vessel, spacing: np.ndarray, edge_mm: float
) -> None:
    """Blend a tapered tube into ``hu`` inside the lungs, with a partial-volume edge."""
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
    weight *= lung[box]
    region = hu[box]
    region += weight * (np.float32(vessel.hu) - region)


def vessel_trees(
    rng: np.random.Generator,
    cfg: SynthConfig,
    geometry: Geometry,
    anat: Anatomy,
    lung: np.ndarray,
    tries: int = 4,
) -> list[Vessel]:
    """Branching trees from each hilum, in array mm; a branch must end inside a lung."""
    n_z = geometry.shape_irc[0]
    spacing = np.asarray(geometry.spacing_irc_mm)
    shape = np.asarray(geometry.shape_irc)
    center = (shape - 1) / 2 * spacing
    min_radius = max(0.45, 0.3 * float(spacing[1]))

    def ends_in_lung(point_mm: np.ndarray) -> bool:
        index = np.round(point_mm / spacing).astype(int)
        return bool(np.all((index >= 0) & (index < shape)) and lung[tuple(index)])

    vessels: list[Vessel] = []
    for side in (-1.0, 1.0):
        hilum = center + np.array(
            [
                rng.uniform(-0.05, 0.1) * n_z * spacing[0],
                anat.body_cy - 0.05 * anat.thorax_by,
                side * 0.27 * anat.thorax_bx,
            ]
        )
        stack = []
        for _ in range(cfg.vessel_trunks_per_lung):
            direction = np.array(
                [rng.uniform(-1, 1), rng.uniform(-0.5, 0.6), side * rng.uniform(0.4, 1.0)]
            )
            direction /= np.linalg.norm(direction)
            radius = rng.uniform(2.5, 4.0) * anat.size_scale
            length = rng.uniform(0.2, 0.3) * anat.thorax_bx
            start = hilum + np.array([rng.uniform(-0.25, 0.25) * n_z * spacing[0], 0.0, 0.0])
            stack.append((start, direction, radius, length, 0))
        while stack:
            start, direction, radius, length, generation = stack.pop()
            end_radius = radius * rng.uniform(0.85, 0.95)
            end = start + direction * length
            vessels.append(
                Vessel(start, end, radius, end_radius, uniform(rng, cfg.vessel_hu_range))
            )
            child_radius = end_radius * rng.uniform(0.72, 0.85)
            if generation >= cfg.vessel_generations or child_radius < min_radius:
                continue
            for _ in range(2):
                child_length = length * rng.uniform(0.7, 0.95)
                for _ in range(tries):
                    child = bend(rng, direction, rng.uniform(0.3, 0.8))
                    if ends_in_lung(end + child * child_length):
                        stack.append((end, child, child_radius, child_length, generation + 1))
                        break
    return vessels


def juxtavascular_vessels(
    rng: np.random.Generator, cfg: SynthConfig, anat: Anatomy, specs: list[NoduleSpec]
) -> list[Vessel]:
    """Tubes that run into solid and part-solid nodules (a fraction
    ``cfg.juxtavascular_fraction`` of them), past their center, in array mm."""
    vessels: list[Vessel] = []
    for spec in specs:
        if spec.kind in ("solid", "part-solid") and rng.random() < cfg.juxtavascular_fraction:
            direction = random_unit(rng)
            side = bend(rng, direction, np.pi / 2) * spec.radius_mm * rng.uniform(0.6, 1.0)
            length = rng.uniform(15, 35) * anat.size_scale
            middle = spec.center_mm + side
            radius = rng.uniform(0.8, 1.8) * anat.size_scale
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
