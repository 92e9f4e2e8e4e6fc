"""The layout of a synthetic chest: its geometry (from the scan's protocol) and where the organs
are, as numbers a slice-by-slice drawing (:mod:`.body`) and the trees (:mod:`.vessels`,
:mod:`.airways`) read.

In-plane positions are mm relative to the slice center (``x`` along columns, toward the
patient's left; ``y`` along rows, toward the back) and scale with the field of view, so a tiny
scan is a coarse whole chest. Along the scan, positions are the lung height ``u``: 0 at the
lung base (costophrenic recesses), 1 at the apex; a scan covers part of or all of that range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src_train.ct import Geometry
from src_train.synth.config import SynthConfig
from src_train.synth.primitives import uniform
from src_train.synth.protocols import ScanProtocol

#: Lung heights ``u`` the first and last slices of a fully covering scan lie within.
FULL_COVERAGE_U = ((-0.02, 0.03), (0.93, 0.98))
#: A partially covering scan keeps this fraction of its slices.
PARTIAL_SLICE_FRACTION = (0.45, 0.7)


def draw_geometry(
    rng: np.random.Generator, cfg: SynthConfig, protocol: ScanProtocol
) -> tuple[Geometry, int]:
    """A scan's geometry: size ``(index, row, col)``, spacing (the protocol's), origin (world mm)
    and direction (``cfg.flip_xyz``); and the slice count a full coverage would have had."""
    low, high = cfg.inplane_px_range
    sizes = np.arange(low, high + 1)
    multiples = sizes[sizes % cfg.inplane_px_multiple == 0]
    n_px = int(rng.choice(multiples if multiples.size else sizes))
    spacing_xy = protocol.inplane_spacing_mm
    spacing_z = protocol.slice_spacing_mm
    n_full = round(uniform(rng, cfg.chest_length_mm_range) / spacing_z)
    n_full = int(np.clip(n_full, *cfg.slices_range))
    n_z = n_full
    if protocol.coverage != "full":
        n_z = round(n_full * uniform(rng, PARTIAL_SLICE_FRACTION))
        n_z = int(max(n_z, cfg.slices_range[0]))
    signs = np.where(np.asarray(cfg.flip_xyz, dtype=bool), -1.0, 1.0)
    direction = np.diag(signs)
    spacing_xyz = np.array([spacing_xy, spacing_xy, spacing_z])
    half_extent_xyz = spacing_xyz * (np.array([n_px, n_px, n_z]) - 1) / 2
    center_xyz = np.array([rng.uniform(-15, 15), rng.uniform(-10, 30), rng.uniform(-320, 40)])
    origin = center_xyz - direction @ half_extent_xyz
    geometry = Geometry(
        shape_irc=(n_z, n_px, n_px),
        origin_xyz_mm=tuple(np.round(origin, 4)),
        spacing_xyz_mm=tuple(spacing_xyz),
        direction=tuple(direction.ravel()),
    )
    return geometry, n_full


@dataclass
class Anatomy:
    """Per-scan layout: in-plane mm relative to the slice center, heights as lung heights ``u``."""

    body_ax: float
    body_ay: float
    body_cy: float
    fat_mm: float
    muscle_mm: float
    thorax_bx: float
    thorax_by: float
    rib_band: float  # rib thickness relative to thorax_bx
    rib_phase: float
    lung_hu: float
    lung_hu_gradient: float
    boundary_harmonics: tuple[tuple[float, float, float], ...]  # (order, amplitude, phase)
    pad_hu: int
    #: Lung height of slice 0 and lung height per mm along the array's slice axis.
    u_start: float
    u_per_mm: float
    heart_x: float  # heart center, fraction of thorax_bx toward the patient's left
    heart_size: float
    dome_right_u: float
    dome_left_u: float
    carina_u: float
    hilum_u: float
    #: Oblique fissure: ``u = fissure_u + fissure_slope * y / thorax_by`` (+ a bow in x).
    fissure_u: float
    fissure_slope: float
    horizontal_fissure_u: float
    texture_hu: float

    @property
    def size_scale(self) -> float:
        """Thorax half-width relative to an adult's (~130 mm), clipped: scales vessels."""
        return float(np.clip(self.thorax_bx / 130.0, 0.35, 1.3))

    @property
    def vertebra(self) -> tuple[float, float]:
        """Vertebral body center ``y`` and radius, mm."""
        return self.body_cy + 0.74 * self.thorax_by, 0.14 * self.thorax_bx

    def u_of_z(self, z_mm: np.ndarray | float) -> np.ndarray:
        """Lung height of array-mm positions along the slice axis."""
        return self.u_start + np.asarray(z_mm, dtype=np.float64) * self.u_per_mm

    def z_of_u(self, u: float) -> float:
        """Array-mm position along the slice axis of lung height ``u``."""
        return (u - self.u_start) / self.u_per_mm

    def hilum_mm(self, side: float, center_mm: np.ndarray, du: float = 0.0) -> np.ndarray:
        """The hilum of the right (``side`` -1) or left (+1) lung, array mm ``(z, y, x)``."""
        x = side * (0.24 if side < 0 else 0.28) * self.thorax_bx
        return np.array(
            [
                self.z_of_u(self.hilum_u + du),
                center_mm[1] + self.body_cy + 0.08 * self.thorax_by,
                center_mm[2] + x,
            ]
        )


def _coverage_u(
    rng: np.random.Generator, coverage: str, n_z: int, n_full: int
) -> tuple[float, float]:
    """Lung heights ``(u_start, u_per_slice)`` of a scan of ``n_z`` slices (``n_full`` if full)."""
    (lo0, hi0), (lo1, hi1) = FULL_COVERAGE_U
    u0, u1 = rng.uniform(lo0, hi0), rng.uniform(lo1, hi1)
    per_slice = (u1 - u0) / max(n_full - 1, 1)
    span = per_slice * (n_z - 1)
    # a scan that starts inside the lungs keeps its top; one that ends inside keeps its base
    return (u1 - span if coverage == "starts-inside" else u0), per_slice


def draw_anatomy(
    rng: np.random.Generator,
    cfg: SynthConfig,
    geometry: Geometry,
    protocol: ScanProtocol,
    n_full: int,
) -> Anatomy:
    """A scan's body outline, thorax, organ heights, fissures and texture, drawn from ``cfg`` and
    scaled to the field of view of ``geometry`` (mm); coverage and padding from ``protocol``."""
    n_z, _, n_px = geometry.shape_irc
    spacing = geometry.spacing_xyz_mm[0]
    fov_r = n_px * spacing / 2
    body_ax = fov_r * uniform(rng, cfg.body_fov_fraction_range)
    body_ay = body_ax * rng.uniform(0.66, 0.76)
    fat = body_ax * rng.uniform(0.04, 0.09)
    muscle = body_ax * rng.uniform(0.05, 0.07)
    harmonics = tuple(
        (float(order), float(rng.uniform(0.01, 0.03)), float(rng.uniform(0, 2 * np.pi)))
        for order in (2, 3, 5)
    )
    u_start, u_per_slice = _coverage_u(rng, protocol.coverage, n_z, n_full)
    dome_right = rng.uniform(0.14, 0.2)
    thorax_bx = body_ax - fat - muscle
    return Anatomy(
        body_ax=body_ax,
        body_ay=body_ay,
        body_cy=fov_r * rng.uniform(0.0, 0.06),
        fat_mm=fat,
        muscle_mm=muscle,
        thorax_bx=thorax_bx,
        thorax_by=body_ay - fat - muscle,
        rib_band=max(0.06, 1.6 * spacing / thorax_bx),
        rib_phase=float(rng.uniform(0, 2 * np.pi)),
        lung_hu=cfg.lung_hu + rng.uniform(-25, 25),
        lung_hu_gradient=float(rng.uniform(20, 45)),
        boundary_harmonics=harmonics,
        pad_hu=protocol.pad_hu,
        u_start=float(u_start),
        u_per_mm=float(u_per_slice / geometry.spacing_irc_mm[0]),
        heart_x=float(rng.uniform(0.1, 0.2)),
        heart_size=float(rng.uniform(0.9, 1.1)),
        dome_right_u=float(dome_right),
        dome_left_u=float(dome_right - rng.uniform(0.02, 0.05)),
        carina_u=float(rng.uniform(0.6, 0.66)),
        hilum_u=float(rng.uniform(0.5, 0.56)),
        fissure_u=float(rng.uniform(0.36, 0.42)),
        fissure_slope=float(rng.uniform(0.4, 0.5)),
        horizontal_fissure_u=float(rng.uniform(0.5, 0.56)),
        texture_hu=float(rng.uniform(10, 18)),
    )
