"""The shape of a synthetic nodule: a sphere whose radius is modulated by a few low-order
angular harmonics, then stretched and rotated; ground glass is patchy, a part-solid nodule has
a solid core. Drawn into a scan only inside its local box, with a partial-volume edge; its true
shape is written beside the HU as a label.

Positions are array mm ``(z, y, x)`` (see :mod:`src_train.synth.primitives`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from src_train.synth.config import SynthConfig
from src_train.synth.primitives import box_offsets, index_box, random_unit, uniform

#: Density of a calcified nodule, HU.
CALCIFIED_HU_RANGE = (300.0, 1000.0)


@dataclass
class NoduleSpec:
    """The drawn shape and density of one nodule (array mm ``(z, y, x)``, HU); ``center_mm`` is
    set when it is placed (:func:`~src_train.synth.nodule_placement.place_nodules`)."""

    kind: str
    center_mm: np.ndarray  # (z, y, x) array mm
    radius_mm: float  # radius of the unperturbed sphere
    rotation: np.ndarray  # 3x3
    stretch: np.ndarray  # (3,) axis scales, product 1
    harmonics: list[tuple[float, float, np.ndarray]]  # (order, amplitude, direction)
    hu: float
    texture: list[tuple[np.ndarray, float, float]]  # (wave vector 1/mm, phase, amplitude HU)
    core_fraction: float = 0.0
    core_offset_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    core_hu: float = 0.0

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere that surely contains the nodule."""
        bump = 1.0 + sum(a for _, a, _ in self.harmonics)
        return self.radius_mm * float(self.stretch.max()) * bump


def nodule_radius_ratio(
    spec: NoduleSpec, dz: np.ndarray, dy: np.ndarray, dx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the center and the shape's local radius (mm), for box offsets."""
    rot = spec.rotation.astype(np.float32)
    scale = (1.0 / spec.stretch).astype(np.float32)
    u = [(rot[i, 0] * dz + rot[i, 1] * dy + rot[i, 2] * dx) * scale[i] for i in range(3)]
    r = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    safe = np.maximum(r, np.float32(1e-6))
    local = np.full(r.shape, np.float32(1.0))
    for order, amplitude, direction in spec.harmonics:
        cosine = (u[0] * direction[0] + u[1] * direction[1] + u[2] * direction[2]) / safe
        local = local + np.float32(amplitude) * np.cos(order * np.arccos(np.clip(cosine, -1, 1)))
    return r, local * np.float32(spec.radius_mm)


def draw_nodule(
    hu: np.ndarray,
    truth: np.ndarray,
    lung: np.ndarray,
    spec: NoduleSpec,
    label: int,
    spacing: np.ndarray,
    edge_mm: float,
) -> tuple[tuple[slice, slice, slice], int]:
    """Blend a nodule into ``hu`` and write ``label`` where its true shape is (inside lungs)."""
    pad = spec.extent_mm + edge_mm
    box = index_box(spec.center_mm - pad, spec.center_mm + pad, spacing, hu.shape)
    if box is None:
        return (slice(0, 0),) * 3, 0  # type: ignore[return-value]
    dz, dy, dx = box_offsets(box, spacing, spec.center_mm)
    r, radius = nodule_radius_ratio(spec, dz, dy, dx)
    allowed = lung[box]
    inside = (r <= radius) & allowed
    weight = np.clip((radius - r) / edge_mm + 0.5, 0.0, 1.0) * allowed
    value = np.full(r.shape, np.float32(spec.hu))
    for wave, phase, amplitude in spec.texture:
        value += amplitude * np.cos(dz * wave[0] + dy * wave[1] + dx * wave[2] + phase)
    if spec.core_fraction > 0:
        cz, cy, cx = (
            dz - spec.core_offset_mm[0],
            dy - spec.core_offset_mm[1],
            dx - spec.core_offset_mm[2],
        )
        core_r, core_radius = nodule_radius_ratio(spec, cz, cy, cx)
        core_weight = np.clip((core_radius * spec.core_fraction - core_r) / edge_mm + 0.5, 0, 1)
        value += core_weight * (np.float32(spec.core_hu) - value)
    region = hu[box]
    region += weight * (value - region)
    truth[box][inside] = label
    return box, int(np.count_nonzero(inside))


def make_spec(
    rng: np.random.Generator, cfg: SynthConfig, kind: str, diameter_mm: float, spacing: np.ndarray
) -> NoduleSpec:
    """A nodule of ``kind`` about ``diameter_mm`` across (at least about one voxel of
    ``spacing``, mm): a lobulated, stretched, rotated sphere with its texture (not placed yet)."""
    radius = max(diameter_mm / 2, 0.55 * float(spacing.max()))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    stretch = rng.uniform(0.8, 1.2, size=3)
    stretch /= np.cbrt(np.prod(stretch))
    harmonics = [
        (float(order), float(rng.uniform(0.03, 0.1)), random_unit(rng))
        for order in rng.choice([2, 3, 4, 5], size=int(rng.integers(2, 4)), replace=False)
    ]
    ground_glass = kind in ("ground-glass", "part-solid")
    if kind == "calcified":
        base, amplitude = uniform(rng, CALCIFIED_HU_RANGE), 60.0
    else:
        base = uniform(rng, cfg.ground_glass_hu_range if ground_glass else cfg.solid_hu_range)
        amplitude = 80.0 if ground_glass else 12.0  # ground glass is patchy
    texture = [
        (
            random_unit(rng) * 2 * np.pi / rng.uniform(2.0, 6.0),
            float(rng.uniform(0, 2 * np.pi)),
            amplitude / 2,
        )
        for _ in range(3)
    ]
    spec = NoduleSpec(kind, np.zeros(3), radius, q, stretch, harmonics, base, texture)
    if kind == "part-solid":
        spec.core_fraction = float(rng.uniform(0.35, 0.6))
        spec.core_offset_mm = rng.uniform(-0.15, 0.15, size=3) * radius
        spec.core_hu = uniform(rng, cfg.solid_hu_range)
    return spec
