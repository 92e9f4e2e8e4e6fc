"""The body of a synthetic scan: its geometry, then air, fat, muscle, ribs, sternum and spine, the
mediastinum with the heart, liver domes at the base, the trachea at the top and two lungs.

In-plane anatomy is in mm relative to the slice center and scales with the field of view, so a
tiny scan is a coarse whole chest. Arrays are ``(index, row, col)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src_train.ct import Geometry
from src_train.synth.config import SynthConfig
from src_train.synth.primitives import uniform

#: Tissue values, HU.
AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 45.0
MEDIASTINAL_FAT_HU = -90.0
HEART_HU = 40.0
LIVER_HU = 55.0
RIB_HU = 500.0
STERNUM_HU = 350.0
VERTEBRA_HU = 220.0
CORTEX_HU = 650.0
CANAL_HU = 15.0

#: Rib pattern: one rib plus one intercostal space per this many mm along z.
RIB_PERIOD_MM = 26.0
#: Fraction of a period that is bone.
RIB_FILL = 0.38
#: Ribs drop this many mm per mm travelled round the ribcage from the spine.
RIB_SLOPE = 0.3


def draw_geometry(rng: np.random.Generator, cfg: SynthConfig) -> Geometry:
    """A scan's geometry: size ``(index, row, col)``, spacing, origin (world mm) and direction
    (``cfg.flip_xyz``), drawn from ``cfg``'s ranges."""
    low, high = cfg.inplane_px_range
    sizes = np.arange(low, high + 1)
    multiples = sizes[sizes % cfg.inplane_px_multiple == 0]
    n_px = int(rng.choice(multiples if multiples.size else sizes))
    spacing_xy = round(uniform(rng, cfg.spacing_inplane_mm_range), 6)
    spacing_z = round(uniform(rng, cfg.slice_spacing_mm_range), 4)
    n_z = round(uniform(rng, cfg.chest_length_mm_range) / spacing_z)
    n_z = int(np.clip(n_z, *cfg.slices_range))
    signs = np.where(np.asarray(cfg.flip_xyz, dtype=bool), -1.0, 1.0)
    direction = np.diag(signs)
    spacing_xyz = np.array([spacing_xy, spacing_xy, spacing_z])
    half_extent_xyz = spacing_xyz * (np.array([n_px, n_px, n_z]) - 1) / 2
    center_xyz = np.array([rng.uniform(-15, 15), rng.uniform(-10, 30), rng.uniform(-320, 40)])
    origin = center_xyz - direction @ half_extent_xyz
    return Geometry(
        shape_irc=(n_z, n_px, n_px),
        origin_xyz_mm=tuple(np.round(origin, 4)),
        spacing_xyz_mm=tuple(spacing_xyz),
        direction=tuple(direction.ravel()),
    )


@dataclass
class Anatomy:
    """Per-scan anatomy in-plane, mm relative to the slice center (x = col, y = row axis)."""

    body_ax: float
    body_ay: float
    body_cy: float
    fat_mm: float
    muscle_mm: float
    thorax_bx: float
    thorax_by: float
    rib_band: float  # rib thickness relative to thorax_bx
    rib_phase: float
    lung_hu_gradient: float
    boundary_harmonics: tuple[tuple[float, float, float], ...]  # (order, amplitude, phase)
    pad_hu: int

    @property
    def size_scale(self) -> float:
        """Thorax half-width relative to an adult's (~130 mm), clipped: scales vessels."""
        return float(np.clip(self.thorax_bx / 130.0, 0.35, 1.3))


def draw_anatomy(rng: np.random.Generator, cfg: SynthConfig, geometry: Geometry) -> Anatomy:
    """A scan's body outline, thorax, rib phase, lung gradient and padding value, drawn from
    ``cfg`` and scaled to the field of view of ``geometry`` (mm)."""
    n_px = geometry.shape_irc[2]
    spacing = geometry.spacing_xyz_mm[0]
    fov_r = n_px * spacing / 2
    body_ax = fov_r * uniform(rng, cfg.body_fov_fraction_range)
    body_ay = body_ax * rng.uniform(0.64, 0.74)
    fat = body_ax * rng.uniform(0.04, 0.09)
    muscle = body_ax * rng.uniform(0.05, 0.07)
    thorax_bx = body_ax - fat - muscle
    thorax_by = body_ay - fat - muscle
    harmonics = tuple(
        (float(order), float(rng.uniform(0.01, 0.035)), float(rng.uniform(0, 2 * np.pi)))
        for order in (2, 3, 5)
    )
    return Anatomy(
        body_ax=body_ax,
        body_ay=body_ay,
        body_cy=fov_r * rng.uniform(0.0, 0.06),
        fat_mm=fat,
        muscle_mm=muscle,
        thorax_bx=thorax_bx,
        thorax_by=thorax_by,
        rib_band=max(0.045, 1.6 * spacing / thorax_bx),
        rib_phase=float(rng.uniform(0, 2 * np.pi)),
        lung_hu_gradient=float(rng.uniform(20, 45)),
        boundary_harmonics=harmonics,
        pad_hu=int(rng.choice(cfg.outside_fov_hu_choices)),
    )


def thorax_scale(t: np.ndarray) -> np.ndarray:
    """Lung cross-section scale along the scan (t = 0 base ... 1 apex)."""
    return 0.72 + 0.28 * np.sin(np.pi * (0.25 + 0.7 * t))


def heart_scale(t: np.ndarray) -> np.ndarray:
    """Heart cross-section scale along the scan (t = 0 base ... 1 apex; 0 where there is none)."""
    return np.clip(1.0 - ((t - 0.15) / 0.55) ** 2, 0.0, 1.0)


def draw_body(
    rng: np.random.Generator, cfg: SynthConfig, geometry: Geometry, anat: Anatomy
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HU (float32) and the lung mask (bool), both ``(index, row, col)``."""
    n_z, n_y, n_x = geometry.shape_irc
    spacing_z, spacing_y, spacing_x = geometry.spacing_irc_mm
    y = ((np.arange(n_y, dtype=np.float32) - (n_y - 1) / 2) * spacing_y)[:, None]
    x = ((np.arange(n_x, dtype=np.float32) - (n_x - 1) / 2) * spacing_x)[None, :]
    bx, by, cy = anat.thorax_bx, anat.thorax_by, anat.body_cy

    # z-independent template: air, fat, muscle, spine, sternum
    template = np.full((n_y, n_x), AIR_HU, dtype=np.float32)
    body_r = (x / anat.body_ax) ** 2 + ((y - cy) / anat.body_ay) ** 2
    template[body_r <= 1] = FAT_HU + rng.uniform(-15, 15)
    inner_ax, inner_ay = anat.body_ax - anat.fat_mm, anat.body_ay - anat.fat_mm
    template[(x / inner_ax) ** 2 + ((y - cy) / inner_ay) ** 2 <= 1] = MUSCLE_HU
    vert_r = 0.14 * bx
    vert_cy = cy + 0.8 * by
    vert_d = np.sqrt(x**2 + (y - vert_cy) ** 2)
    template[vert_d <= vert_r] = CORTEX_HU
    template[vert_d <= 0.8 * vert_r] = VERTEBRA_HU
    template[np.sqrt(x**2 + (y - vert_cy - 1.55 * vert_r) ** 2) <= 0.45 * vert_r] = CANAL_HU
    sternum = (x / (0.09 * bx)) ** 2 + ((y - cy + by * 1.03) / (0.035 * by + 1.5)) ** 2 <= 1
    template[sternum] = STERNUM_HU

    # thorax radius with a slightly irregular outline; lungs fill it up to the ribs
    theta = np.arctan2(x, -(y - cy))  # 0 at the front, +-pi at the spine
    outline = np.ones_like(theta)
    for order, amplitude, phase in anat.boundary_harmonics:
        outline += amplitude * np.cos(order * theta + phase)
    rho = (np.sqrt((x / bx) ** 2 + ((y - cy) / by) ** 2) / outline).astype(np.float32)
    from_spine = (np.pi - np.abs(theta)) * bx  # mm round the ribcage from the spine
    rib_zone = (np.abs(theta) < np.pi - 0.3) & (np.abs(theta) > 0.3)
    mediastinum = np.abs(x - 0.04 * bx) < 0.1 * bx + 0.05 * np.clip(y - cy, 0, None)
    heart_rho = ((x - 0.12 * bx) / (0.36 * bx)) ** 2 + ((y - cy + 0.12 * by) / (0.48 * by)) ** 2
    spine_excl = np.sqrt(x**2 + (y - vert_cy) ** 2) <= 1.35 * vert_r
    right_dome = ((x + 0.45 * bx) / (0.42 * bx)) ** 2 + ((y - cy) / (0.62 * by)) ** 2
    left_dome = ((x - 0.5 * bx) / (0.33 * bx)) ** 2 + ((y - cy - 0.1 * by) / (0.5 * by)) ** 2
    trachea = np.sqrt(x**2 + (y - cy + 0.3 * by) ** 2) <= max(0.07 * bx, 1.5 * spacing_x)
    lung_map = (cfg.lung_hu + anat.lung_hu_gradient * (y - cy) / by).astype(np.float32)
    lung_map = np.broadcast_to(lung_map, (n_y, n_x))

    t = np.linspace(0.03, 0.97, n_z)
    scales = thorax_scale(t)
    hearts = heart_scale(t)
    hu = np.empty((n_z, n_y, n_x), dtype=np.float32)
    lung = np.empty((n_z, n_y, n_x), dtype=bool)
    for k in range(n_z):  # one slice at a time keeps temporaries small
        s = scales[k]
        z_mm = k * spacing_z
        slice_hu = hu[k]
        slice_hu[...] = template
        band = rib_zone & (rho >= s) & (rho < s + anat.rib_band)
        pattern = np.cos(
            2 * np.pi * (z_mm + RIB_SLOPE * from_spine) / RIB_PERIOD_MM + anat.rib_phase
        )
        slice_hu[band & (pattern > np.cos(np.pi * RIB_FILL))] = RIB_HU
        inside = rho < s
        slice_hu[inside] = MUSCLE_HU
        slice_hu[inside & mediastinum] = MEDIASTINAL_FAT_HU
        heart = heart_rho < hearts[k] ** 2
        slice_hu[heart & inside] = HEART_HU
        lung_k = inside & ~mediastinum & ~heart & ~spine_excl
        dome = np.zeros_like(lung_k)
        if t[k] < 0.2:
            dome |= right_dome < 1 - t[k] / 0.2
        if t[k] < 0.14:
            dome |= left_dome < 1 - t[k] / 0.14
        slice_hu[dome & inside] = LIVER_HU
        lung_k &= ~dome
        if t[k] > 0.62:
            slice_hu[trachea] = AIR_HU
            lung_k &= ~trachea
        slice_hu[lung_k] = lung_map[lung_k]
        slice_hu[spine_excl & ~lung_k] = template[spine_excl & ~lung_k]
        lung[k] = lung_k
    return hu, lung
