"""Synthetic chest CT in LUNA16 layout, with the true nodule shapes beside the scans.

The project's embedded default data: every command runs on it out of the box and a real LUNA16
folder is a drop-in replacement. A scan holds air, a body with subcutaneous fat and muscle, ribs,
sternum and spine, a mediastinum with the heart, liver domes at the base, the trachea at the top,
two lungs near -850 HU, branching vessels (bright tubes that sometimes touch a nodule), CT noise
and the scanner's circular field of view padded with -2000 or -3024 HU, as LUNA16 scans are.

Nodules are lobulated (a sphere whose radius is modulated by a few low-order angular harmonics,
then stretched and rotated). Their target diameters are drawn from the 1,186 LUNA16 reference
diameters (``assets/luna16_diameters.json``). Kinds: ``solid``, ``juxtapleural`` (touching the
chest wall; the true shape stops at the pleura), ``edge`` (cut by the first or last slice),
``ground-glass`` (-600..-400 HU: the -700 HU threshold sees most, not all, of it) and
``part-solid`` (ground glass around a solid core).

What is written for each nodule (``annotations.csv`` and ``truth/true_nodules.csv``):

* center = center of mass of the true shape's voxels, world ``(x, y, z)`` mm;
* ``diameter_mm`` = equivalent-sphere diameter ``(6 V / pi) ** (1/3)`` of the true shape inside
  the scan (so an ``edge`` nodule cut by the last slice reports what is visible);
* ``volume_mm3`` = voxel count x voxel volume.

Internally positions are "array millimetres": ``(z, y, x)`` mm from voxel ``(0, 0, 0)`` along
the array axes (IRC order). The scan's :class:`~src_train.ct.Geometry` maps them to the world;
only the final records are converted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from src_train.atomic import write_text_atomic
from src_train.ct import CtVolume, Geometry, save_volume
from src_train.errors import CancelledError, ConfigError, OutputExistsError, OutputWriteError
from src_train.luna import (
    ANNOTATIONS_FILE,
    MALIGNANCY_FILE,
    TRUE_NODULE_KINDS,
    TRUTH_DIR,
    TRUTH_TABLE,
    LunaFolder,
    Nodule,
    TrueNodule,
)

log = logging.getLogger(__name__)

#: Root of LUNA16's (LIDC-IDRI's) series UIDs; synthetic UIDs append 30 digits.
UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."

#: Marker file written by :func:`write_dataset` (the config and seed that made the folder).
MARKER_FILE = "lunaseg-synth.json"

#: Scans and seed of the synthetic default data set (``lunaseg synth`` and ``lunaseg view``
#: write the same one, so either can follow the other).
DEFAULT_SCANS = 8
DEFAULT_SEED = 0

CANDIDATES_FILE = "candidates.csv"

#: Stored HU range (int16 like LUNA16); the FOV padding lies outside it on purpose.
HU_STORE_RANGE = (-1024, 3071)
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
#: A solid nodule's center keeps this far (mm) from other nodules.
NODULE_GAP_MM = 3.0
#: Candidates of class 0 keep this far (mm) beyond a nodule's radius.
CANDIDATE_GAP_MM = 5.0

#: Largest nodule label the uint8 truth volume can hold.
MAX_TRUTH_LABEL = int(np.iinfo(np.uint8).max)

_DIAMETERS_ASSET = "luna16_diameters.json"


@dataclass(frozen=True)
class SynthConfig:
    """Ranges the synthetic scans are drawn from (inclusive ``(low, high)``; units in names).

    The defaults look like LUNA16 scans; tests shrink them (see :meth:`tiny`).
    Anatomy scales with the field of view, so a tiny scan is a coarse whole chest, while
    nodule sizes stay in millimetres.
    """

    inplane_px_range: tuple[int, int] = (448, 512)
    #: In-plane sizes are multiples of this (a U-Net of depth 3 needs multiples of 8).
    inplane_px_multiple: int = 16
    slices_range: tuple[int, int] = (110, 190)
    #: Length of chest covered, mm; the slice count is this over the slice spacing, clipped.
    chest_length_mm_range: tuple[float, float] = (220.0, 320.0)
    spacing_inplane_mm_range: tuple[float, float] = (0.6, 0.9)
    slice_spacing_mm_range: tuple[float, float] = (1.0, 2.5)
    #: Body width as a fraction of the field of view's diameter.
    body_fov_fraction_range: tuple[float, float] = (0.78, 0.9)
    nodules_per_scan_range: tuple[int, int] = (1, 4)
    #: Target diameters are LUNA16 diameters within this range (mm).
    diameter_mm_range: tuple[float, float] = (3.0, 32.0)
    false_candidates_per_scan_range: tuple[int, int] = (20, 60)
    lung_hu: float = -850.0
    #: Standard deviation of the CT noise, HU.
    noise_hu_range: tuple[float, float] = (12.0, 25.0)
    solid_hu_range: tuple[float, float] = (-30.0, 70.0)
    ground_glass_hu_range: tuple[float, float] = (-600.0, -400.0)
    vessel_hu_range: tuple[float, float] = (20.0, 70.0)
    #: Fraction of solid / part-solid nodules with a vessel running into them.
    juxtavascular_fraction: float = 0.4
    #: Branching levels of each vessel tree (0 = trunks only).
    vessel_generations: int = 6
    vessel_trunks_per_lung: int = 10
    outside_fov_hu_choices: tuple[int, ...] = (-2000, -3024)
    #: Flip the world direction of the array's x, y, z axes (direction entries -1).
    flip_xyz: tuple[bool, bool, bool] = (False, False, False)
    #: Store the CT as compressed ``.zraw`` (the truth volumes are always compressed).
    compress_ct: bool = False

    def __post_init__(self) -> None:
        for name in (
            "inplane_px_range",
            "slices_range",
            "chest_length_mm_range",
            "spacing_inplane_mm_range",
            "slice_spacing_mm_range",
            "body_fov_fraction_range",
            "nodules_per_scan_range",
            "diameter_mm_range",
            "false_candidates_per_scan_range",
            "noise_hu_range",
            "solid_hu_range",
            "ground_glass_hu_range",
            "vessel_hu_range",
        ):
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"SynthConfig.{name} = {(low, high)}: low must not exceed high.")
        if self.inplane_px_range[0] < 32 or self.slices_range[0] < 4:
            raise ConfigError(
                f"SynthConfig: scans need at least 32 px in-plane and 4 slices; got "
                f"{self.inplane_px_range} px and {self.slices_range} slices."
            )
        if min(self.spacing_inplane_mm_range[0], self.slice_spacing_mm_range[0]) <= 0:
            raise ConfigError("SynthConfig: voxel spacings must be positive (mm).")
        if self.diameter_mm_range[0] <= 0 or self.nodules_per_scan_range[0] < 0:
            raise ConfigError("SynthConfig: diameters must be positive, nodule counts >= 0.")
        if self.nodules_per_scan_range[1] > MAX_TRUTH_LABEL:
            raise ConfigError(
                f"SynthConfig.nodules_per_scan_range = {self.nodules_per_scan_range}: the uint8 "
                f"truth volume holds at most {MAX_TRUTH_LABEL} nodules per scan."
            )
        if not 0 < self.body_fov_fraction_range[1] <= 0.98:
            raise ConfigError("SynthConfig.body_fov_fraction_range must lie within (0, 0.98].")
        if not self.outside_fov_hu_choices or self.inplane_px_multiple < 1:
            raise ConfigError("SynthConfig: give outside_fov_hu_choices and a px multiple >= 1.")

    @classmethod
    def tiny(cls, **overrides: object) -> SynthConfig:
        """A small, fast configuration for tests and demos (~112 px, ~40 slices, coarse).

        Keyword arguments override single fields.
        """
        base: dict[str, object] = {
            "inplane_px_range": (96, 128),
            "slices_range": (32, 48),
            "chest_length_mm_range": (90.0, 110.0),
            "spacing_inplane_mm_range": (1.5, 1.9),
            "slice_spacing_mm_range": (2.0, 2.5),
            "nodules_per_scan_range": (2, 4),
            "diameter_mm_range": (6.0, 20.0),
            "false_candidates_per_scan_range": (5, 10),
            "vessel_generations": 4,
            "vessel_trunks_per_lung": 6,
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


@dataclass
class SynthScan:
    """One synthetic scan.

    Attributes:
        ct: the CT (int16 HU, ``(index, row, col)``) with its geometry.
        truth: uint8 labels, same shape: 0 background, ``k`` the k-th nodule's true shape.
        nodules: the true nodules, in label order.
        candidates: candidate points (class 1 = near a true nodule, class 0 = lookalikes).
    """

    ct: CtVolume
    truth: np.ndarray
    nodules: list[TrueNodule]
    candidates: list[Nodule] = field(default_factory=list)

    @property
    def annotations(self) -> list[Nodule]:
        """The nodules as LUNA16 annotations (center of mass, equivalent diameter)."""
        return [
            Nodule(t.series_uid, t.center_xyz_mm, t.diameter_mm, True, None, t.label)
            for t in self.nodules
        ]


def synthetic_series_uid(seed: int, index: int) -> str:
    """A LUNA16-looking series UID for scan ``index`` of the data set made with ``seed``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), 0x5EED])
    digits = rng.integers(0, 10, size=29)
    return UID_PREFIX + str(int(rng.integers(1, 10))) + "".join(map(str, digits))


def _scan_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1)[0])


_DIAMETER_CACHE: list[np.ndarray] = []


def luna16_diameters_mm() -> np.ndarray:
    """The 1,186 LUNA16 reference diameters (mm, sorted), shipped with the package."""
    if not _DIAMETER_CACHE:
        text = (
            resources.files("src_train")
            .joinpath("assets", _DIAMETERS_ASSET)
            .read_text(encoding="utf-8")
        )
        _DIAMETER_CACHE.append(np.asarray(json.loads(text)["diameters_mm"], dtype=np.float64))
    return _DIAMETER_CACHE[0]


# ---------------------------------------------------------------------------------------------
# geometry and anatomy
# ---------------------------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _draw_geometry(rng: np.random.Generator, cfg: SynthConfig) -> Geometry:
    low, high = cfg.inplane_px_range
    sizes = np.arange(low, high + 1)
    multiples = sizes[sizes % cfg.inplane_px_multiple == 0]
    n_px = int(rng.choice(multiples if multiples.size else sizes))
    spacing_xy = round(_uniform(rng, cfg.spacing_inplane_mm_range), 6)
    spacing_z = round(_uniform(rng, cfg.slice_spacing_mm_range), 4)
    n_z = round(_uniform(rng, cfg.chest_length_mm_range) / spacing_z)
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
class _Anatomy:
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


def _draw_anatomy(rng: np.random.Generator, cfg: SynthConfig, geometry: Geometry) -> _Anatomy:
    n_px = geometry.shape_irc[2]
    spacing = geometry.spacing_xyz_mm[0]
    fov_r = n_px * spacing / 2
    body_ax = fov_r * _uniform(rng, cfg.body_fov_fraction_range)
    body_ay = body_ax * rng.uniform(0.64, 0.74)
    fat = body_ax * rng.uniform(0.04, 0.09)
    muscle = body_ax * rng.uniform(0.05, 0.07)
    thorax_bx = body_ax - fat - muscle
    thorax_by = body_ay - fat - muscle
    harmonics = tuple(
        (float(order), float(rng.uniform(0.01, 0.035)), float(rng.uniform(0, 2 * np.pi)))
        for order in (2, 3, 5)
    )
    return _Anatomy(
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


def _thorax_scale(t: np.ndarray) -> np.ndarray:
    """Lung cross-section scale along the scan (t = 0 base ... 1 apex)."""
    return 0.72 + 0.28 * np.sin(np.pi * (0.25 + 0.7 * t))


def _heart_scale(t: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - ((t - 0.15) / 0.55) ** 2, 0.0, 1.0)


def _draw_body(
    rng: np.random.Generator, cfg: SynthConfig, geometry: Geometry, anat: _Anatomy
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
    scales = _thorax_scale(t)
    hearts = _heart_scale(t)
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


# ---------------------------------------------------------------------------------------------
# local boxes: tubes and nodules are drawn only where they are
# ---------------------------------------------------------------------------------------------
def _box(
    lo_mm: np.ndarray, hi_mm: np.ndarray, spacing: np.ndarray, shape: tuple[int, int, int]
) -> tuple[slice, slice, slice] | None:
    """Index box (IRC) covering array-mm corners ``lo_mm..hi_mm``, clipped to the volume."""
    lo = np.clip(np.floor(lo_mm / spacing).astype(int), 0, shape)
    hi = np.clip(np.ceil(hi_mm / spacing).astype(int) + 1, 0, shape)
    if np.any(hi <= lo):
        return None
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def _box_offsets(
    box: tuple[slice, slice, slice], spacing: np.ndarray, origin_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable ``(z, y, x)`` array-mm offsets of a box's voxels from ``origin_mm``."""
    axes = [
        (np.arange(b.start, b.stop, dtype=np.float32) * np.float32(s) - np.float32(o))
        for b, s, o in zip(box, spacing, origin_mm, strict=True)
    ]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


@dataclass
class _Vessel:
    start_mm: np.ndarray  # (z, y, x) array mm
    end_mm: np.ndarray
    radius_start_mm: float
    radius_end_mm: float
    hu: float


def _draw_vessel(
    hu: np.ndarray, lung: np.ndarray, vessel: _Vessel, spacing: np.ndarray, edge_mm: float
) -> None:
    """Blend a tapered tube into ``hu`` inside the lungs, with a partial-volume edge."""
    pad = max(vessel.radius_start_mm, vessel.radius_end_mm) + edge_mm
    box = _box(
        np.minimum(vessel.start_mm, vessel.end_mm) - pad,
        np.maximum(vessel.start_mm, vessel.end_mm) + pad,
        spacing,
        hu.shape,
    )
    if box is None:
        return
    dz, dy, dx = _box_offsets(box, spacing, vessel.start_mm)
    axis = (vessel.end_mm - vessel.start_mm).astype(np.float32)
    length2 = float(axis @ axis) or 1e-6
    t = np.clip((dz * axis[0] + dy * axis[1] + dx * axis[2]) / length2, 0.0, 1.0)
    dist2 = (dz - t * axis[0]) ** 2 + (dy - t * axis[1]) ** 2 + (dx - t * axis[2]) ** 2
    radius = vessel.radius_start_mm + (vessel.radius_end_mm - vessel.radius_start_mm) * t
    weight = np.clip((radius - np.sqrt(dist2)) / edge_mm + 0.5, 0.0, 1.0)
    weight *= lung[box]
    region = hu[box]
    region += weight * (np.float32(vessel.hu) - region)


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _bend(rng: np.random.Generator, direction: np.ndarray, angle: float) -> np.ndarray:
    """``direction`` turned by ``angle`` radians about a random perpendicular axis."""
    perp = np.cross(direction, _random_unit(rng))
    perp /= np.linalg.norm(perp) or 1.0
    out = np.cos(angle) * direction + np.sin(angle) * perp
    return out / np.linalg.norm(out)


def _vessel_trees(
    rng: np.random.Generator,
    cfg: SynthConfig,
    geometry: Geometry,
    anat: _Anatomy,
    lung: np.ndarray,
    tries: int = 4,
) -> list[_Vessel]:
    """Branching trees from each hilum, in array mm; a branch must end inside a lung."""
    n_z = geometry.shape_irc[0]
    spacing = np.asarray(geometry.spacing_irc_mm)
    shape = np.asarray(geometry.shape_irc)
    center = (shape - 1) / 2 * spacing
    min_radius = max(0.45, 0.3 * float(spacing[1]))

    def ends_in_lung(point_mm: np.ndarray) -> bool:
        index = np.round(point_mm / spacing).astype(int)
        return bool(np.all((index >= 0) & (index < shape)) and lung[tuple(index)])

    vessels: list[_Vessel] = []
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
                _Vessel(start, end, radius, end_radius, _uniform(rng, cfg.vessel_hu_range))
            )
            child_radius = end_radius * rng.uniform(0.72, 0.85)
            if generation >= cfg.vessel_generations or child_radius < min_radius:
                continue
            for _ in range(2):
                child_length = length * rng.uniform(0.7, 0.95)
                for _ in range(tries):
                    child = _bend(rng, direction, rng.uniform(0.3, 0.8))
                    if ends_in_lung(end + child * child_length):
                        stack.append((end, child, child_radius, child_length, generation + 1))
                        break
    return vessels


@dataclass
class _NoduleSpec:
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


def _nodule_radius_ratio(
    spec: _NoduleSpec, dz: np.ndarray, dy: np.ndarray, dx: np.ndarray
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


def _draw_nodule(
    hu: np.ndarray,
    truth: np.ndarray,
    lung: np.ndarray,
    spec: _NoduleSpec,
    label: int,
    spacing: np.ndarray,
    edge_mm: float,
) -> tuple[tuple[slice, slice, slice], int]:
    """Blend a nodule into ``hu`` and write ``label`` where its true shape is (inside lungs)."""
    pad = spec.extent_mm + edge_mm
    box = _box(spec.center_mm - pad, spec.center_mm + pad, spacing, hu.shape)
    if box is None:
        return (slice(0, 0),) * 3, 0  # type: ignore[return-value]
    dz, dy, dx = _box_offsets(box, spacing, spec.center_mm)
    r, radius = _nodule_radius_ratio(spec, dz, dy, dx)
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
        core_r, core_radius = _nodule_radius_ratio(spec, cz, cy, cx)
        core_weight = np.clip((core_radius * spec.core_fraction - core_r) / edge_mm + 0.5, 0, 1)
        value += core_weight * (np.float32(spec.core_hu) - value)
    region = hu[box]
    region += weight * (value - region)
    truth[box][inside] = label
    return box, int(np.count_nonzero(inside))


# ---------------------------------------------------------------------------------------------
# nodule placement
# ---------------------------------------------------------------------------------------------
def _draw_diameters(rng: np.random.Generator, cfg: SynthConfig, n: int) -> np.ndarray:
    low, high = cfg.diameter_mm_range
    pool = luna16_diameters_mm()
    pool = pool[(pool >= low) & (pool <= high)]
    if pool.size == 0:
        return rng.uniform(low, high, size=n)
    return rng.choice(pool, size=n)


def _lung_fraction(
    lung: np.ndarray, center_mm: np.ndarray, radius_mm: float, spacing: np.ndarray
) -> float:
    """Fraction of a sphere's voxels (inside the volume) that are lung."""
    box = _box(center_mm - radius_mm, center_mm + radius_mm, spacing, lung.shape)
    if box is None:
        return 0.0
    dz, dy, dx = _box_offsets(box, spacing, center_mm)
    sphere = dz**2 + dy**2 + dx**2 <= radius_mm**2
    total = int(np.count_nonzero(sphere))
    return float(np.count_nonzero(lung[box] & sphere)) / total if total else 0.0


def _snap(center_mm: np.ndarray, spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Near a voxel center (within a quarter voxel), so a small nodule covers its center voxel."""
    return (np.round(center_mm / spacing) + rng.uniform(-0.25, 0.25, size=3)) * spacing


def _candidate_center(
    rng: np.random.Generator,
    kind: str,
    lung: np.ndarray,
    spacing: np.ndarray,
    extent_mm: float,
) -> np.ndarray | None:
    """A center (array mm) for a nodule of ``kind``, or None when this try failed."""
    n_z = lung.shape[0]
    margin = int(np.ceil(extent_mm / spacing[0])) + 1
    if kind == "edge":
        at_end = bool(rng.integers(2))
        depth = rng.uniform(0.0, 0.3) * extent_mm / spacing[0]
        k = n_z - 1 - int(np.rint(depth)) if at_end else int(np.rint(depth))
        k = int(np.clip(k, 0, n_z - 1))
    elif n_z > 2 * margin:
        k = int(rng.integers(margin, n_z - margin))
    else:
        k = int(rng.integers(n_z))
    pixels = np.flatnonzero(lung[k])
    if pixels.size == 0:
        return None
    if kind == "juxtapleural":
        plane = lung[k]
        edge = plane.copy()
        edge[1:-1, 1:-1] &= ~(
            plane[:-2, 1:-1] & plane[2:, 1:-1] & plane[1:-1, :-2] & plane[1:-1, 2:]
        )
        pixels = np.flatnonzero(edge)
        pixel = int(rng.choice(pixels))
        row, col = divmod(pixel, lung.shape[2])
        rows, cols = np.nonzero(plane)
        same_side = (cols < lung.shape[2] / 2) == (col < lung.shape[2] / 2)
        target = np.array([rows[same_side].mean(), cols[same_side].mean()])
        inward = target - np.array([row, col])
        inward = inward * spacing[1:] / (np.linalg.norm(inward * spacing[1:]) or 1.0)
        yx = np.array([row, col]) * spacing[1:] + inward * rng.uniform(0.3, 0.7) * extent_mm
        return np.array([k * spacing[0], yx[0], yx[1]])
    pixel = int(rng.choice(pixels))
    row, col = divmod(pixel, lung.shape[2])
    return np.array([k * spacing[0], row * spacing[1], col * spacing[2]])


def _make_spec(
    rng: np.random.Generator, cfg: SynthConfig, kind: str, diameter_mm: float, spacing: np.ndarray
) -> _NoduleSpec:
    radius = max(diameter_mm / 2, 0.55 * float(spacing.max()))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    stretch = rng.uniform(0.8, 1.2, size=3)
    stretch /= np.cbrt(np.prod(stretch))
    harmonics = [
        (float(order), float(rng.uniform(0.03, 0.1)), _random_unit(rng))
        for order in rng.choice([2, 3, 4, 5], size=int(rng.integers(2, 4)), replace=False)
    ]
    ground_glass = kind in ("ground-glass", "part-solid")
    base = _uniform(rng, cfg.ground_glass_hu_range if ground_glass else cfg.solid_hu_range)
    amplitude = 80.0 if ground_glass else 12.0  # ground glass is patchy
    texture = [
        (
            _random_unit(rng) * 2 * np.pi / rng.uniform(2.0, 6.0),
            float(rng.uniform(0, 2 * np.pi)),
            amplitude / 2,
        )
        for _ in range(3)
    ]
    spec = _NoduleSpec(kind, np.zeros(3), radius, q, stretch, harmonics, base, texture)
    if kind == "part-solid":
        spec.core_fraction = float(rng.uniform(0.35, 0.6))
        spec.core_offset_mm = rng.uniform(-0.15, 0.15, size=3) * radius
        spec.core_hu = _uniform(rng, cfg.solid_hu_range)
    return spec


def _place_nodules(
    rng: np.random.Generator,
    cfg: SynthConfig,
    lung: np.ndarray,
    spacing: np.ndarray,
    kind_offset: int,
    max_tries: int = 60,
) -> list[_NoduleSpec]:
    n = int(rng.integers(cfg.nodules_per_scan_range[0], cfg.nodules_per_scan_range[1] + 1))
    diameters = _draw_diameters(rng, cfg, n)
    placed: list[_NoduleSpec] = []
    for j in range(n):
        kind = TRUE_NODULE_KINDS[(kind_offset + j) % len(TRUE_NODULE_KINDS)]
        spec = _make_spec(rng, cfg, kind, float(diameters[j]), spacing)
        for attempt in range(max_tries):
            if attempt and attempt % 20 == 0:  # crowded or small lungs: try a smaller nodule
                spec = _make_spec(rng, cfg, kind, max(spec.radius_mm * 1.4, 1.5), spacing)
            center = _candidate_center(rng, kind, lung, spacing, spec.extent_mm)
            if center is None:
                continue
            center = _snap(center, spacing, rng)
            if not np.all(
                (center >= -0.5 * spacing) & (center <= (np.array(lung.shape) - 0.5) * spacing)
            ):
                continue
            if any(
                np.linalg.norm(center - other.center_mm)
                < spec.extent_mm + other.extent_mm + NODULE_GAP_MM
                for other in placed
            ):
                continue
            index = tuple(
                np.clip(np.round(center / spacing).astype(int), 0, np.array(lung.shape) - 1)
            )
            if not lung[index]:
                continue
            fraction = _lung_fraction(lung, center, spec.extent_mm, spacing)
            wanted = (0.5, 0.92) if kind == "juxtapleural" else (0.97, 1.0)
            if wanted[0] <= fraction <= wanted[1]:
                spec.center_mm = center
                placed.append(spec)
                break
        else:
            log.debug("could not place a %s nodule of %.1f mm; skipped", kind, 2 * spec.radius_mm)
    return placed


# ---------------------------------------------------------------------------------------------
# one scan
# ---------------------------------------------------------------------------------------------
def generate_scan(
    series_uid: str,
    seed: int,
    config: SynthConfig | None = None,
    *,
    kind_offset: int | None = None,
) -> SynthScan:
    """Make one synthetic chest CT with its true nodule labels (deterministic for ``seed``).

    Args:
        series_uid: UID to give the scan.
        seed: random seed; the same seed and config give identical arrays.
        config: ranges to draw from (default :class:`SynthConfig`).
        kind_offset: the first nodule's kind is ``TRUE_NODULE_KINDS[kind_offset % 5]`` and the
            next ones follow in order (a data set cycles through all kinds); random if None.

    Returns:
        A :class:`SynthScan`: int16 HU and uint8 truth, both ``(index, row, col)``, nodules in
        label order with world ``(x, y, z)`` mm centers.
    """
    cfg = config or SynthConfig()
    rng = np.random.default_rng(seed)
    geometry = _draw_geometry(rng, cfg)
    anat = _draw_anatomy(rng, cfg, geometry)
    spacing = np.asarray(geometry.spacing_irc_mm)
    edge_mm = float(spacing[1:].mean())
    hu, lung = _draw_body(rng, cfg, geometry, anat)

    offset = int(rng.integers(len(TRUE_NODULE_KINDS))) if kind_offset is None else kind_offset
    specs = _place_nodules(rng, cfg, lung, spacing, offset)
    vessels = _vessel_trees(rng, cfg, geometry, anat, lung)
    for spec in specs:
        if spec.kind in ("solid", "part-solid") and rng.random() < cfg.juxtavascular_fraction:
            direction = _random_unit(rng)
            side = _bend(rng, direction, np.pi / 2) * spec.radius_mm * rng.uniform(0.6, 1.0)
            length = rng.uniform(15, 35) * anat.size_scale
            middle = spec.center_mm + side
            radius = rng.uniform(0.8, 1.8) * anat.size_scale
            vessels.append(
                _Vessel(
                    middle - direction * length / 2,
                    middle + direction * length / 2,
                    radius,
                    radius * 0.8,
                    _uniform(rng, cfg.vessel_hu_range),
                )
            )
    for vessel in vessels:
        _draw_vessel(hu, lung, vessel, spacing, edge_mm)

    truth = np.zeros(geometry.shape_irc, dtype=np.uint8)
    nodules: list[TrueNodule] = []
    for spec in specs:
        label = len(nodules) + 1
        box, count = _draw_nodule(hu, truth, lung, spec, label, spacing, edge_mm)
        if count == 0:
            log.debug("nodule of %.1f mm left no voxel; skipped", 2 * spec.radius_mm)
            continue
        where = np.argwhere(truth[box] == label)
        com_irc = where.mean(axis=0) + np.array([b.start for b in box])
        volume_mm3 = count * geometry.voxel_volume_mm3
        nodules.append(
            TrueNodule(
                series_uid=series_uid,
                label=label,
                center_xyz_mm=_xyz_tuple(geometry.irc_to_xyz(com_irc)),
                diameter_mm=float(np.cbrt(6 * volume_mm3 / np.pi)),
                kind=spec.kind,
                volume_mm3=float(volume_mm3),
            )
        )

    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise *= np.float32(_uniform(rng, cfg.noise_hu_range))
    hu += noise
    del noise
    np.rint(hu, out=hu)
    np.clip(hu, *HU_STORE_RANGE, out=hu)
    volume = hu.astype(np.int16)
    del hu
    n_y, n_x = geometry.shape_irc[1:]
    yy, xx = np.ogrid[:n_y, :n_x]
    outside = (yy - (n_y - 1) / 2) ** 2 + (xx - (n_x - 1) / 2) ** 2 > (min(n_y, n_x) / 2) ** 2
    volume[:, outside] = anat.pad_hu

    candidates = _candidates(rng, cfg, series_uid, geometry, lung, nodules, vessels, specs)
    ct = CtVolume(hu=volume, geometry=geometry, series_uid=series_uid)
    return SynthScan(ct=ct, truth=truth, nodules=nodules, candidates=candidates)


def _xyz_tuple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def _candidates(
    rng: np.random.Generator,
    cfg: SynthConfig,
    series_uid: str,
    geometry: Geometry,
    lung: np.ndarray,
    nodules: list[TrueNodule],
    vessels: list[_Vessel],
    specs: list[_NoduleSpec],
) -> list[Nodule]:
    """Class-1 points near each true nodule and class-0 look-alikes (vessels, pleura, lung)."""
    spacing = np.asarray(geometry.spacing_irc_mm)
    out = []
    for nodule in nodules:
        jitter = _random_unit(rng) * rng.uniform(0, min(2.0, 0.2 * nodule.diameter_mm))
        center = _xyz_tuple(np.asarray(nodule.center_xyz_mm) + jitter)
        out.append(Nodule(series_uid, center, None, True))
    n_false = int(
        rng.integers(
            cfg.false_candidates_per_scan_range[0], cfg.false_candidates_per_scan_range[1] + 1
        )
    )
    centers_irc = [np.asarray(geometry.xyz_to_irc(n.center_xyz_mm)) for n in nodules]
    keep_out = [n.diameter_mm / 2 + CANDIDATE_GAP_MM for n in nodules]
    shape = np.array(lung.shape)
    tries = 0
    while sum(not c.is_nodule for c in out) < n_false and tries < 50 * max(n_false, 1):
        tries += 1
        source = rng.random()
        if source < 0.5 and vessels:
            vessel = vessels[int(rng.integers(len(vessels)))]
            point_mm = vessel.start_mm + rng.random() * (vessel.end_mm - vessel.start_mm)
            irc = np.round(point_mm / spacing)
        else:
            irc = np.floor(rng.random(3) * shape)
        idx = tuple(int(v) for v in np.clip(irc, 0, shape - 1))
        if not lung[idx]:
            continue
        if any(
            np.linalg.norm((irc - c) * spacing) < gap
            for c, gap in zip(centers_irc, keep_out, strict=True)
        ):
            continue
        center = _xyz_tuple(geometry.irc_to_xyz(np.asarray(idx, dtype=float)))
        out.append(Nodule(series_uid, center, None, False))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


# ---------------------------------------------------------------------------------------------
# a data set on disk
# ---------------------------------------------------------------------------------------------
ProgressCallback = Callable[[int, int, str], None]


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _mm(value: float) -> str:
    return f"{value:.6f}"


def _read_marker(out: Path) -> dict[str, Any] | None:
    """The :data:`MARKER_FILE` of a folder, or None when absent or unreadable."""
    try:
        marker = json.loads((out / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _marker_identity(n_scans: int, seed: int, cfg: SynthConfig) -> dict[str, Any]:
    """What makes a data set: the fields of the marker that :func:`same_dataset` compares
    (as JSON reads them back: tuples become lists)."""
    identity: dict[str, Any] = json.loads(
        json.dumps({"seed": seed, "n_scans": n_scans, "config": asdict(cfg)})
    )
    return identity


def same_dataset(
    out_dir: str | os.PathLike[str],
    n_scans: int = DEFAULT_SCANS,
    seed: int = DEFAULT_SEED,
    config: SynthConfig | None = None,
) -> bool:
    """True when ``out_dir`` already holds, complete, the data set :func:`write_dataset` would
    write with these arguments (its marker says so and every scan, truth volume and CSV file is
    there). Writing it again would change nothing."""
    out = Path(out_dir)
    marker = _read_marker(out)
    if marker is None or not marker.get("complete"):
        return False
    wanted = _marker_identity(n_scans, seed, config or SynthConfig())
    if any(marker.get(key) != value for key, value in wanted.items()):
        return False
    uids = [synthetic_series_uid(seed, index) for index in range(n_scans)]
    files = [out / ANNOTATIONS_FILE, out / CANDIDATES_FILE, out / TRUTH_DIR / TRUTH_TABLE]
    files += [out / "subset0" / f"{uid}.mhd" for uid in uids]
    files += [out / TRUTH_DIR / f"{uid}.mhd" for uid in uids]
    return all(path.is_file() for path in files)


def describe_dataset(out_dir: str | os.PathLike[str]) -> str | None:
    """``"8 scans, seed 0"`` for a folder :func:`write_dataset` wrote, else None."""
    marker = _read_marker(Path(out_dir))
    if marker is None:
        return None
    state = "" if marker.get("complete") else ", incomplete"
    return f"{marker.get('n_scans')} scans, seed {marker.get('seed')}{state}"


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; choose a folder for the synthetic data set.")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        earlier = describe_dataset(out)
        if earlier is not None:
            raise OutputExistsError(
                f"{out} holds another synthetic data set ({earlier}); replace it "
                "(--overwrite) or choose another folder."
            )
        raise OutputExistsError(
            f"{out} is not empty; choose another folder or overwrite it (--overwrite)."
        )
    if not (out / MARKER_FILE).is_file():
        # Anything that looks like LUNA16 data (even a partial download without its CSV files)
        # is refused: this folder would be mixed with, or its files replaced by, synthetic ones.
        data_like = [
            child.name
            for child in out.iterdir()
            if child.name in (ANNOTATIONS_FILE, MALIGNANCY_FILE, CANDIDATES_FILE, TRUTH_DIR)
            or (child.is_dir() and child.name.startswith("subset"))
        ]
        if data_like:
            raise OutputExistsError(
                f"{out} holds a data set that 'lunaseg synth' did not write (no {MARKER_FILE}; "
                f"found {', '.join(sorted(data_like))}); it is left alone. Choose another folder."
            )
        return
    log.info("replacing the synthetic data set in %s", out)
    for child in out.iterdir():
        if child.is_dir() and (child.name.startswith("subset") or child.name == TRUTH_DIR):
            shutil.rmtree(child)
        elif child.name in (ANNOTATIONS_FILE, CANDIDATES_FILE, MARKER_FILE):
            child.unlink()


def write_dataset(
    out_dir: str | os.PathLike[str],
    n_scans: int = DEFAULT_SCANS,
    seed: int = DEFAULT_SEED,
    config: SynthConfig | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> LunaFolder:
    """Write a synthetic data set in LUNA16 layout and return it as a :class:`LunaFolder`.

    Layout: ``subset0/<uid>.mhd`` (+ ``.raw``, int16 HU), ``annotations.csv``,
    ``candidates.csv``, ``truth/<uid>.mhd`` (+ ``.zraw``, uint8 labels, same geometry),
    ``truth/true_nodules.csv`` and ``lunaseg-synth.json`` (seed and config). The CSV files are
    written last, atomically. Deterministic for ``seed``.

    Args:
        out_dir: target folder; created if needed.
        n_scans: number of scans (>= 1).
        seed: random seed of the whole data set.
        config: ranges (default :class:`SynthConfig`).
        progress: called as ``progress(done, total, message)`` after each scan.
        overwrite: replace an earlier synthetic data set in ``out_dir``. A non-empty folder is
            otherwise refused with :class:`OutputExistsError` (unless it already holds this
            very data set, see :func:`same_dataset`: then nothing is written), and a LUNA16
            folder not written by this function is always refused.
        should_stop: checked between scans; when it returns True, :class:`CancelledError`.
    """
    if n_scans < 1:
        raise ConfigError(f"n_scans must be at least 1; got {n_scans}.")
    cfg = config or SynthConfig()
    out = Path(out_dir)
    if not overwrite and same_dataset(out, n_scans, seed, cfg):
        log.info("%s already holds this synthetic data set; nothing to write", out)
        return LunaFolder(out)
    _prepare_output(out, overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(
            f"Cannot create the data folder {out} ({exc.strerror}); choose a writable place."
        ) from exc
    marker = {
        "generator": "lunaseg synth",
        "seed": seed,
        "n_scans": n_scans,
        "complete": False,
        "config": asdict(cfg),
    }
    write_text_atomic(out / MARKER_FILE, json.dumps(marker, indent=2), overwrite=True)

    annotation_rows: list[list[object]] = []
    candidate_rows: list[list[object]] = []
    truth_rows: list[list[object]] = []
    kind_offset = 0
    started = time.perf_counter()
    for index in range(n_scans):
        if should_stop is not None and should_stop():
            raise CancelledError(f"Synthetic data set in {out} stopped after {index} scan(s).")
        uid = synthetic_series_uid(seed, index)
        scan = generate_scan(uid, _scan_seed(seed, index), cfg, kind_offset=kind_offset)
        kind_offset += len(scan.nodules)
        geometry = scan.ct.geometry
        save_volume(
            scan.ct.hu,
            geometry,
            out / "subset0" / f"{uid}.mhd",
            compress=cfg.compress_ct,
            overwrite=True,
        )
        save_volume(
            scan.truth, geometry, out / TRUTH_DIR / f"{uid}.mhd", compress=True, overwrite=True
        )
        for nodule in scan.nodules:
            x, y, z = nodule.center_xyz_mm
            annotation_rows.append([uid, _mm(x), _mm(y), _mm(z), _mm(nodule.diameter_mm)])
            truth_rows.append(
                [
                    uid,
                    nodule.label,
                    _mm(x),
                    _mm(y),
                    _mm(z),
                    _mm(nodule.diameter_mm),
                    nodule.kind,
                    f"{nodule.volume_mm3:.3f}",
                ]
            )
        for cand in scan.candidates:
            x, y, z = cand.center_xyz_mm
            candidate_rows.append([uid, _mm(x), _mm(y), _mm(z), int(cand.is_nodule)])
        message = f"scan {index + 1}/{n_scans}: {uid} ({len(scan.nodules)} nodules)"
        log.info(message)
        if progress is not None:
            progress(index + 1, n_scans, message)

    write_text_atomic(
        out / TRUTH_DIR / TRUTH_TABLE,
        _csv_text(
            [
                "seriesuid",
                "label",
                "coordX",
                "coordY",
                "coordZ",
                "diameter_mm",
                "kind",
                "volume_mm3",
            ],
            truth_rows,
        ),
        overwrite=True,
    )
    write_text_atomic(
        out / CANDIDATES_FILE,
        _csv_text(["seriesuid", "coordX", "coordY", "coordZ", "class"], candidate_rows),
        overwrite=True,
    )
    write_text_atomic(
        out / ANNOTATIONS_FILE,
        _csv_text(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], annotation_rows),
        overwrite=True,
    )
    marker.update(
        complete=True, seconds=round(time.perf_counter() - started, 2), nodules=len(annotation_rows)
    )
    write_text_atomic(out / MARKER_FILE, json.dumps(marker, indent=2), overwrite=True)
    return LunaFolder(out)
