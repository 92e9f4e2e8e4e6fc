"""Ground truth from points: per-nodule voxel masks grown from annotated centers.

Arrays are ``(index, row, col)`` = ``(z, y, x)``; world centers are ``(x, y, z)`` mm; thresholds
are Hounsfield units (HU). "Dense" always means strictly greater than the threshold.

The reference rule (method ``"grow"``, the SPEC's bounding-box growth): from the nodule's center
voxel, grow a radius along each axis separately (index, then row, then column). The radius starts
at :data:`GROW_START_RADIUS` and increases while the voxels at ``center + r`` and ``center - r``
along that axis are both dense; it stops at the first radius where either side is not. The box is
``center +- radius`` on each axis (inclusive) and the nodule's mask is "inside its box and dense".

Volume edges: a voxel outside the volume counts as *not dense*, so growth stops at the edge
(recorded as ``stopped_by="edge"``) and the box is clipped to the volume. No index ever wraps
around, so a nodule on the first or last slice gets a correct, non-empty box.

A center voxel that is not dense is flagged (:data:`NOTE_CENTER_BELOW`) but the rule is applied
as written; a mask that ends up empty is flagged too (:data:`NOTE_EMPTY`), never hidden.

Other methods are registered by name (:func:`available_methods`, :func:`register_method`):
``"ball"`` and ``"region"`` use the annotated ``diameter_mm`` (see :func:`method_region`). Every
method reads only a region around the nodule and returns a :class:`MethodResult`. The volume mask
is the OR of the per-nodule masks, which for ``"grow"`` equals "inside some box AND dense".
:func:`mask_report` scores every method against the true shapes of a synthetic data set.
"""

from __future__ import annotations

import csv
import inspect
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import ndimage

from src_train.atomic import atomic_write
from src_train.colors import FN_RGB, FP_RGB, LUNG_WINDOW_HU, TP_RGB
from src_train.ct import CtVolume, Geometry, load_ct, save_volume
from src_train.errors import (
    CancelledError,
    ConfigError,
    GeometryError,
    OutputExistsError,
    SeriesNotFoundError,
)
from src_train.luna import TRUTH_DIR, Nodule

if TYPE_CHECKING:
    from src_train.luna import LunaFolder, TrueNodule

log = logging.getLogger(__name__)

#: The SPEC's default density threshold for bounding-box growth, in HU.
DEFAULT_THRESHOLD_HU = -700

#: The SPEC's first radius tested by bounding-box growth, in voxels.
GROW_START_RADIUS = 2

#: Axis names in array order, for logs, records and tables.
AXIS_NAMES = ("index", "row", "col")

#: Typical lung parenchyma, HU (used when a crop has no lung voxel to measure).
DEFAULT_LUNG_HU = -850.0

#: ``region``: a nodule is solid enough to take its level from its dense voxels when at least
#: this fraction of its ball is dense; fainter ones use the median of their core.
SOLID_DENSE_FRACTION = 0.25

#: Mask report: an annotation matches a true nodule within its diameter, but at least this (mm).
MATCH_MIN_DISTANCE_MM = 1.0

#: Names of the default and of the reference method.
REFERENCE_METHOD = "grow"

# Flags written to :attr:`NoduleMask.notes` (stable strings: viewers and tests match on them).
NOTE_CENTER_BELOW = "center below threshold"
NOTE_EMPTY = "empty mask"
NOTE_NO_DIAMETER = "no diameter: reference rule used"
NOTE_OUTSIDE = "center outside the volume: skipped"
NOTE_EDGE = "growth stopped at the volume edge"

#: What to do with a nodule whose center lies outside the volume.
OutsidePolicy = Literal["raise", "skip"]

Slices3 = tuple[slice, slice, slice]


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GrowthStep:
    """One radius tested by bounding-box growth along one axis.

    Attributes:
        axis: array axis, 0 = index (z), 1 = row (y), 2 = col (x).
        radius: the radius tested, in voxels.
        hu_minus: HU at ``center - radius`` along ``axis``; ``None`` outside the volume.
        hu_plus: HU at ``center + radius`` along ``axis``; ``None`` outside the volume.
        accepted: True when both sides were dense and growth went on.
        stopped_by: ``""`` when accepted, else ``"minus"``, ``"plus"``, ``"both"`` (a side not
            dense) or ``"edge"`` (a side outside the volume).
    """

    axis: int
    radius: int
    hu_minus: float | None
    hu_plus: float | None
    accepted: bool
    stopped_by: str = ""


@dataclass
class NoduleMask:
    """The mask of one annotated nodule and how it was made.

    Attributes:
        nodule: the annotation it came from.
        method: name of the method that made it.
        threshold_hu: density threshold in HU (dense = strictly greater).
        center_xyz_mm: annotated center, world ``(x, y, z)`` mm.
        center_irc: the center's voxel ``(index, row, col)`` (may lie outside when skipped).
        radius_irc: radius per axis in voxels ``(index, row, col)``; for ``"grow"`` the first
            radius where growth stopped, for other methods the half-extent of the mask.
        box_lo_irc: first voxel of the box, inclusive, clipped to the volume.
        box_hi_irc: end of the box, exclusive, clipped to the volume.
        voxel_count: number of mask voxels this nodule contributes (before OR with others).
        steps: the growth steps in order (``"grow"`` and fall-backs to it; empty otherwise).
        notes: flags and remarks (see the ``NOTE_*`` constants).
        skipped: True when the nodule was not masked (center outside the volume).
        local_mask: bool mask of shape ``box_hi_irc - box_lo_irc`` (the nodule within its box).
    """

    nodule: Nodule
    method: str
    threshold_hu: float
    center_xyz_mm: tuple[float, float, float]
    center_irc: tuple[int, int, int]
    radius_irc: tuple[int, int, int]
    box_lo_irc: tuple[int, int, int]
    box_hi_irc: tuple[int, int, int]
    voxel_count: int
    steps: list[GrowthStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: bool = False
    local_mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), bool), repr=False)

    @property
    def box_slices(self) -> Slices3:
        """The box as array slices ``(index, row, col)``."""
        return tuple(slice(lo, hi) for lo, hi in zip(self.box_lo_irc, self.box_hi_irc, strict=True))  # type: ignore[return-value]

    @property
    def box_shape_irc(self) -> tuple[int, int, int]:
        """Box size in voxels ``(index, row, col)``."""
        return tuple(hi - lo for lo, hi in zip(self.box_lo_irc, self.box_hi_irc, strict=True))  # type: ignore[return-value]

    def steps_along(self, axis: int) -> list[GrowthStep]:
        """The growth steps along one array axis (0 = index, 1 = row, 2 = col)."""
        return [s for s in self.steps if s.axis == axis]

    def to_row(self) -> dict[str, Any]:
        """A flat dict for a per-nodule CSV table (world mm, IRC voxels, HU)."""
        x, y, z = self.center_xyz_mm
        return {
            "seriesuid": self.nodule.series_uid,
            "coordX": round(x, 3),
            "coordY": round(y, 3),
            "coordZ": round(z, 3),
            "diameter_mm": "" if self.nodule.diameter_mm is None else self.nodule.diameter_mm,
            "method": self.method,
            "threshold_hu": self.threshold_hu,
            "center_irc": " ".join(map(str, self.center_irc)),
            "radius_irc": " ".join(map(str, self.radius_irc)),
            "box_lo_irc": " ".join(map(str, self.box_lo_irc)),
            "box_hi_irc": " ".join(map(str, self.box_hi_irc)),
            "voxel_count": self.voxel_count,
            "skipped": int(self.skipped),
            "notes": "; ".join(self.notes),
        }


@dataclass
class MethodResult:
    """What a mask method returns for one nodule.

    Attributes:
        box_lo_irc: first voxel of the nodule's box (inclusive), inside the volume.
        box_hi_irc: end of the box (exclusive), inside the volume.
        local_mask: bool array of the box's shape, True on the nodule.
        radius_irc: radius per axis in voxels ``(index, row, col)``.
        steps: growth steps (may be empty).
        notes: remarks for the record.
        method: the method actually used when it differs from the one asked for (fall-backs).
    """

    box_lo_irc: tuple[int, int, int]
    box_hi_irc: tuple[int, int, int]
    local_mask: np.ndarray
    radius_irc: tuple[int, int, int]
    steps: list[GrowthStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    method: str | None = None


#: A mask method: one nodule in, its local mask out. Called as
#: ``method(hu, geometry, nodule, center_irc, threshold_hu, **params)`` with ``hu`` the whole
#: volume ``(index, row, col)`` in HU (read only), ``center_irc`` the center voxel (inside the
#: volume) and ``threshold_hu`` in HU; it reads only a region around the nodule and returns a
#: :class:`MethodResult`. Parameters are keyword-only and named with their unit.
MaskMethod = Callable[..., MethodResult]


@dataclass(frozen=True)
class MethodInfo:
    """A registered mask method: its callable, a one-line description and its parameters."""

    name: str
    func: MaskMethod
    description: str
    defaults: dict[str, Any]


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, func: MaskMethod, description: str) -> None:
    """Register (or replace) a mask method under ``name``.

    Its parameters (and their defaults) are the keyword-only arguments of ``func``.
    """
    defaults = {
        p.name: p.default
        for p in inspect.signature(func).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    _METHODS[name] = MethodInfo(name, func, description, defaults)


def available_methods() -> list[str]:
    """Names of the registered mask methods, the reference rule ``"grow"`` first."""
    return sorted(_METHODS, key=lambda n: (n != REFERENCE_METHOD, n))


def method_info(name: str) -> MethodInfo:
    """The registered method ``name``; :class:`ConfigError` listing the choices otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown mask method {name!r}; choose one of {', '.join(available_methods())}."
        ) from None


def _check_params(info: MethodInfo, params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        known = ", ".join(info.defaults) or "none"
        raise ConfigError(
            f"Mask method {info.name!r} has no parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {known}."
        )
    return {**info.defaults, **params}


# ---------------------------------------------------------------------------------------------
# Density test
# ---------------------------------------------------------------------------------------------
def dense(values: np.ndarray, threshold_hu: float) -> np.ndarray:
    """``values > threshold_hu`` as a bool array, fast for integer HU.

    Integer volumes are compared against an integer of their own dtype (``v > t`` equals
    ``v > floor(t)`` for integer ``v``), which is about three times faster than a float compare
    and never converts the array. Thresholds beyond the dtype's range give all-True/all-False.
    """
    threshold_hu = check_threshold(threshold_hu)
    if np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        t = math.floor(threshold_hu)
        if t < info.min:
            return np.ones(values.shape, dtype=bool)
        if t >= info.max:
            return np.zeros(values.shape, dtype=bool)
        return values > values.dtype.type(t)
    return values > values.dtype.type(threshold_hu)


def check_threshold(threshold_hu: float) -> float:
    """``threshold_hu`` as a float; :class:`ConfigError` unless it is a finite number of HU."""
    try:
        value = float(threshold_hu)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(
            f"Density threshold {threshold_hu!r} is not a finite number of HU; give e.g. "
            f"{DEFAULT_THRESHOLD_HU} (the SPEC default)."
        )
    return value


# ---------------------------------------------------------------------------------------------
# The reference rule
# ---------------------------------------------------------------------------------------------
def grow_radius(
    hu: np.ndarray, center_irc: Sequence[int], axis: int, threshold_hu: float
) -> tuple[int, list[GrowthStep]]:
    """Grow the SPEC radius along one axis of ``hu`` ``(index, row, col)`` from ``center_irc``.

    Returns the first radius (voxels) at which ``center - r`` or ``center + r`` is not dense
    (or outside the volume), starting from :data:`GROW_START_RADIUS`, and the steps tested.
    """
    c = [int(v) for v in center_irc]
    size = hu.shape[axis]
    index: list[int | slice] = list(c)
    index[axis] = slice(None)
    line = hu[tuple(index)]  # a 1-D view along the axis, no copy
    # The same test (and dtype) as the box mask's, so a voxel growth accepts is in the mask.
    line_dense = dense(line, threshold_hu)
    steps: list[GrowthStep] = []
    radius = GROW_START_RADIUS
    while True:
        lo, hi = c[axis] - radius, c[axis] + radius
        hu_minus = float(line[lo]) if lo >= 0 else None
        hu_plus = float(line[hi]) if hi < size else None
        if hu_minus is None or hu_plus is None:
            steps.append(GrowthStep(axis, radius, hu_minus, hu_plus, False, "edge"))
            return radius, steps
        ok_minus = bool(line_dense[lo])
        ok_plus = bool(line_dense[hi])
        if ok_minus and ok_plus:
            steps.append(GrowthStep(axis, radius, hu_minus, hu_plus, True))
            radius += 1
            continue
        side = "both" if not (ok_minus or ok_plus) else ("minus" if not ok_minus else "plus")
        steps.append(GrowthStep(axis, radius, hu_minus, hu_plus, False, side))
        return radius, steps


def box_around(
    center_irc: Sequence[int], radius_irc: Sequence[int], shape_irc: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The box ``center +- radius`` (inclusive) clipped to ``shape_irc``: ``(lo, hi exclusive)``."""
    lo = tuple(max(0, int(c) - int(r)) for c, r in zip(center_irc, radius_irc, strict=True))
    hi = tuple(
        min(int(n), int(c) + int(r) + 1)
        for c, r, n in zip(center_irc, radius_irc, shape_irc, strict=True)
    )
    return lo, hi  # type: ignore[return-value]


def _slices(lo: Sequence[int], hi: Sequence[int]) -> Slices3:
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def method_grow(
    hu: np.ndarray,
    geometry: Geometry,
    nodule: Nodule,
    center_irc: tuple[int, int, int],
    threshold_hu: float,
) -> MethodResult:
    """The SPEC's bounding-box growth (see the module docstring); ignores the diameter."""
    radii: list[int] = []
    steps: list[GrowthStep] = []
    for axis in range(3):
        radius, axis_steps = grow_radius(hu, center_irc, axis, threshold_hu)
        radii.append(radius)
        steps.extend(axis_steps)
    lo, hi = box_around(center_irc, radii, hu.shape)
    local = dense(hu[_slices(lo, hi)], threshold_hu)
    notes = [NOTE_EDGE] if any(s.stopped_by == "edge" for s in steps) else []
    return MethodResult(lo, hi, local, tuple(radii), steps, notes)  # type: ignore[arg-type]


register_method(
    REFERENCE_METHOD,
    method_grow,
    "SPEC reference: per-axis radius growth from the center, mask = box AND dense",
)


# ---------------------------------------------------------------------------------------------
# Diameter-aware methods
# ---------------------------------------------------------------------------------------------
def _diameter_or_none(nodule: Nodule) -> float | None:
    d = nodule.diameter_mm
    if d is None or not math.isfinite(d) or d <= 0:
        return None
    return float(d)


def _fallback_to_grow(
    hu: np.ndarray,
    geometry: Geometry,
    nodule: Nodule,
    center_irc: tuple[int, int, int],
    threshold_hu: float,
) -> MethodResult:
    result = method_grow(hu, geometry, nodule, center_irc, threshold_hu)
    result.notes.insert(0, f"{NOTE_NO_DIAMETER} (diameter_mm={nodule.diameter_mm!r})")
    result.method = REFERENCE_METHOD
    return result


def _crop_around(
    center_irc: Sequence[int], radius_mm: float, geometry: Geometry
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Box ``(lo, hi exclusive)`` holding the ball of ``radius_mm`` around the center."""
    half = [math.ceil(radius_mm / s) for s in geometry.spacing_irc_mm]
    return box_around(center_irc, half, geometry.shape_irc)


def _distance_mm(
    shape: Sequence[int], center_local: Sequence[int], spacing_irc_mm: Sequence[float]
) -> np.ndarray:
    """Physical distance (mm) of each voxel of a ``shape`` crop from ``center_local``."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(
        ((g - c) * float(s)) ** 2
        for g, c, s in zip(grids, center_local, spacing_irc_mm, strict=True)
    )
    return np.sqrt(d2, dtype=np.float32)


def _tight(
    lo: Sequence[int], local: np.ndarray, center_irc: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int], np.ndarray, tuple[int, int, int]]:
    """Shrink a crop and its mask to the mask's bounding box; radius = half extent in voxels."""
    if not local.any():
        c_lo = tuple(int(c) for c in center_irc)
        c_hi = tuple(int(c) + 1 for c in center_irc)
        return c_lo, c_hi, np.zeros((1, 1, 1), dtype=bool), (0, 0, 0)  # type: ignore[return-value]
    lo_t, hi_t, radius = [], [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(local.any(axis=other))
        a, b = int(idx[0]), int(idx[-1]) + 1
        lo_t.append(int(lo[axis]) + a)
        hi_t.append(int(lo[axis]) + b)
        c = int(center_irc[axis])
        radius.append(max(c - lo_t[-1], hi_t[-1] - 1 - c, 0))
    local_t = local[
        _slices(
            [v - int(o) for v, o in zip(lo_t, lo, strict=True)],
            [v - int(o) for v, o in zip(hi_t, lo, strict=True)],
        )
    ]
    return tuple(lo_t), tuple(hi_t), local_t, tuple(radius)  # type: ignore[return-value]


def method_ball(
    hu: np.ndarray,
    geometry: Geometry,
    nodule: Nodule,
    center_irc: tuple[int, int, int],
    threshold_hu: float,
    *,
    ball_scale: float = 1.0,
    ball_margin_mm: float = 0.5,
) -> MethodResult:
    """Dense voxels within ``ball_scale * diameter_mm / 2 + ball_margin_mm`` (mm) of the center.

    A baseline that uses the diameter and nothing else (no connectivity): distances are
    physical, so anisotropic voxels are handled. No diameter: the reference rule, noted.
    """
    d = _diameter_or_none(nodule)
    if d is None:
        return _fallback_to_grow(hu, geometry, nodule, center_irc, threshold_hu)
    radius_mm = ball_scale * d / 2 + ball_margin_mm
    lo, hi = _crop_around(center_irc, radius_mm, geometry)
    center_local = [c - o for c, o in zip(center_irc, lo, strict=True)]
    shape = [b - a for a, b in zip(lo, hi, strict=True)]
    inside = _distance_mm(shape, center_local, geometry.spacing_irc_mm) <= radius_mm
    local = dense(hu[_slices(lo, hi)], threshold_hu) & inside
    lo_t, hi_t, local_t, radius = _tight(lo, local, center_irc)
    return MethodResult(lo_t, hi_t, local_t, radius)


register_method(
    "ball",
    method_ball,
    "dense voxels inside a ball of the annotated diameter (mm); no connectivity",
)


def _erode_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Erosion by a ball of ``radius_mm`` (physical, anisotropic) via a distance transform."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(mask, sampling=spacing) > radius_mm


def _dilate_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Dilation by a ball of ``radius_mm`` (physical, anisotropic) via a distance transform."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def _components_near(mask: np.ndarray, dist_mm: np.ndarray, max_distance_mm: float) -> np.ndarray:
    """The connected components (26-connected) of ``mask`` that come within
    ``max_distance_mm`` of the center; if none does, the single nearest component."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return mask
    keep = np.unique(labels[(dist_mm <= max_distance_mm) & mask])
    if keep.size == 0:
        masked = np.where(mask, dist_mm, np.inf)
        keep = np.array([labels.flat[int(np.argmin(masked))]])
    lut = np.zeros(n + 1, dtype=bool)
    lut[keep] = True
    return lut[labels]


def _local_levels(
    crop: np.ndarray,
    dist: np.ndarray,
    radius_mm: float,
    threshold_hu: float,
    lung_hu: float | None,
    air_hu: float,
    min_spacing_mm: float,
    nodule_percentile: float,
) -> tuple[float, float]:
    """HU of the nodule (``nodule_percentile`` of the dense voxels within ``radius_mm``, else
    the median of its core) and of the lung around it (median of the non-dense voxels of the
    crop above ``air_hu``)."""
    inside = dist <= radius_mm
    values = crop[inside]
    dense_values = values[dense(values, threshold_hu)]
    if dense_values.size >= SOLID_DENSE_FRACTION * values.size:
        nodule_hu = float(np.percentile(dense_values, nodule_percentile))
    else:  # faint: most of the ball is below the threshold; trust the core
        nodule_hu = float(np.median(crop[dist <= max(radius_mm / 2, min_spacing_mm)]))
    if lung_hu is None:
        background = crop[~dense(crop, threshold_hu) & (crop > air_hu)]
        lung_hu = float(np.median(background)) if background.size else DEFAULT_LUNG_HU
    return nodule_hu, float(lung_hu)


def _reaches_beyond(
    is_dense: np.ndarray, dist: np.ndarray, radius_mm: float, ball_mm: float
) -> bool:
    """True when dense voxels connected to the nodule's core leave the search ball: only then
    can a large structure be attached (this skips the costly wall test for free nodules)."""
    labels, n = ndimage.label(is_dense, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return False
    core = np.unique(labels[(dist <= radius_mm / 2) & is_dense])
    outside = np.unique(labels[dist > ball_mm])
    return bool(np.intersect1d(core[core > 0], outside[outside > 0]).size)


def method_region(
    hu: np.ndarray,
    geometry: Geometry,
    nodule: Nodule,
    center_irc: tuple[int, int, int],
    threshold_hu: float,
    *,
    ball_scale: float = 1.25,
    ball_margin_mm: float = 0.5,
    core_fraction: float = 0.6,
    opening_fraction: float = 0.25,
    wall_fraction: float = 1.5,
    wall_min_mm: float = 3.0,
    boundary_fraction: float = 0.5,
    nodule_percentile: float = 50.0,
    lung_hu: float | None = None,
    air_hu: float = -950.0,
) -> MethodResult:
    """Connected dense region around the center, bounded and cleaned using ``diameter_mm``.

    With ``R = diameter_mm / 2`` (every distance is physical, in mm, so anisotropic spacing is
    handled: morphology runs on distance transforms with the voxel spacing):

    1. Crop around the center. Boundary level: ``lung + boundary_fraction * (nodule - lung)``
       from the local median HU of the nodule and of the lung (``lung_hu`` when given), i.e.
       the half-maximum partial-volume edge by default. Dense = above
       ``max(threshold_hu, level)``; when the nodule itself is below ``threshold_hu``
       (ground glass) the level alone is used and a note says so. ``boundary_fraction=0``
       keeps exactly ``threshold_hu``.
    2. Large structures (chest wall, mediastinum): dense voxels and outside-body air (below
       ``air_hu``) are opened with a ball of ``max(wall_fraction * R, wall_min_mm)``; what
       survives is thicker than the nodule and is removed.
    3. Keep voxels within ``ball_scale * R + ball_margin_mm`` of the center.
    4. Vessels: erode by ``opening_fraction * R``, keep the pieces within ``core_fraction * R``
       of the center (lobes survive, thin vessels do not), dilate back, intersect with step 3.
    5. Keep the component(s) near the center, fill holes.

    No usable diameter: the reference rule, noted in the record.
    """
    d = _diameter_or_none(nodule)
    if d is None:
        return _fallback_to_grow(hu, geometry, nodule, center_irc, threshold_hu)
    spacing = geometry.spacing_irc_mm
    radius_mm = d / 2
    ball_mm = ball_scale * radius_mm + ball_margin_mm
    wall_mm = max(wall_fraction * radius_mm, wall_min_mm)
    lo, hi = _crop_around(center_irc, ball_mm + wall_mm, geometry)
    center_local = [c - o for c, o in zip(center_irc, lo, strict=True)]
    crop = hu[_slices(lo, hi)]
    dist = _distance_mm(crop.shape, center_local, spacing)
    notes: list[str] = []

    nodule_hu, lung_ref = _local_levels(
        crop, dist, radius_mm, threshold_hu, lung_hu, air_hu, min(spacing), nodule_percentile
    )
    level = lung_ref + boundary_fraction * (nodule_hu - lung_ref)
    threshold = float(threshold_hu)
    if nodule_hu > threshold:
        threshold = max(threshold, level)
    else:
        faint_level = lung_ref + (boundary_fraction or 0.5) * (nodule_hu - lung_ref)
        if lung_ref < faint_level < threshold:
            notes.append(
                f"faint (ground-glass) nodule: median {nodule_hu:.0f} HU, threshold lowered "
                f"from {threshold:.0f} to {faint_level:.0f} HU"
            )
            threshold = faint_level
    is_dense = dense(crop, threshold)

    near = dist <= ball_mm
    big = np.zeros(crop.shape, dtype=bool)
    if _reaches_beyond(is_dense, dist, radius_mm, ball_mm):
        solid_or_air = is_dense | ~dense(crop, air_hu)
        big = _dilate_mm(_erode_mm(solid_or_air, wall_mm, spacing), wall_mm, spacing) & is_dense
        if big[tuple(center_local)]:
            notes.append(
                "center inside a structure thicker than the diameter suggests: "
                "nothing excluded as chest wall (check diameter_mm)"
            )
            big[...] = False
    big_near = int(np.count_nonzero(big & near))
    if big_near:
        notes.append(f"large structure (chest wall?) excluded: {big_near} voxels")
    # The vessel stage only needs the search ball: work on its box within the crop.
    ball_lo, ball_hi = box_around(
        center_local, [math.ceil(ball_mm / sp) for sp in spacing], crop.shape
    )
    inner = _slices(ball_lo, ball_hi)
    candidate = (is_dense & near & ~big)[inner]
    dist = dist[inner]

    open_mm = opening_fraction * radius_mm
    cores = _erode_mm(candidate, open_mm, spacing)
    if not cores.any():
        cores, open_mm = candidate, 0.0
    cores = _components_near(cores, dist, core_fraction * radius_mm)
    region = _dilate_mm(cores, open_mm + min(spacing), spacing) & candidate
    region = _components_near(region, dist, core_fraction * radius_mm)
    region = ndimage.binary_fill_holes(region)
    origin = [a + b for a, b in zip(lo, ball_lo, strict=True)]
    lo_t, hi_t, local_t, radius = _tight(origin, region, center_irc)
    return MethodResult(lo_t, hi_t, local_t, radius, notes=notes)


register_method(
    "region",
    method_region,
    "connected dense region in a diameter-sized ball; chest wall and vessels cut off (mm)",
)


# ---------------------------------------------------------------------------------------------
# Building masks
# ---------------------------------------------------------------------------------------------
def _outside_message(ct: CtVolume, nodule: Nodule, center_irc: np.ndarray) -> str:
    corners = np.array(
        [
            [i, r, c]
            for i in (0, ct.shape_irc[0] - 1)
            for r in (0, ct.shape_irc[1] - 1)
            for c in (0, ct.shape_irc[2] - 1)
        ],
        dtype=np.float64,
    )
    xyz = ct.geometry.irc_to_xyz(corners)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    extent = ", ".join(f"{a} {lo[k]:.1f}..{hi[k]:.1f}" for k, a in enumerate("xyz"))
    cx, cy, cz = nodule.center_xyz_mm
    source = f" ({ct.path})" if ct.path is not None else ""
    row = f" (annotation line {nodule.row})" if nodule.row else ""
    return (
        f"Series {ct.series_uid!r}{source}: nodule{row} center ({cx:.1f}, {cy:.1f}, {cz:.1f}) mm "
        f"(voxel irc {tuple(int(v) for v in center_irc)}) lies outside the volume "
        f"(shape irc {ct.shape_irc}; world extent {extent} mm). Check that the annotation "
        "belongs to this series, or skip such nodules (on the command line "
        "'lunaseg mask --skip-outside'; in Python on_outside='skip')."
    )


def mask_nodule(
    ct: CtVolume,
    nodule: Nodule,
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    method: str = REFERENCE_METHOD,
    *,
    on_outside: OutsidePolicy = "raise",
    **params: Any,
) -> NoduleMask:
    """Mask one nodule of ``ct`` (``(index, row, col)`` HU) with ``method``.

    A center outside the volume raises :class:`GeometryError` (naming the series, the center in
    mm and the volume's extent) unless ``on_outside="skip"``: then the record is flagged
    ``skipped`` with an empty box and a warning is logged.
    """
    check_threshold(threshold_hu)
    info = method_info(method)
    full_params = _check_params(info, params)
    center_irc_arr = ct.geometry.xyz_to_irc_index(nodule.center_xyz_mm)
    center_irc: tuple[int, int, int] = tuple(int(v) for v in center_irc_arr)  # type: ignore[assignment]
    center_xyz = tuple(float(v) for v in nodule.center_xyz_mm)
    if not bool(ct.geometry.contains_irc(center_irc_arr)):
        message = _outside_message(ct, nodule, center_irc_arr)
        if on_outside != "skip":
            raise GeometryError(message)
        log.warning("%s Skipped.", message)
        return NoduleMask(
            nodule=nodule,
            method=method,
            threshold_hu=threshold_hu,
            center_xyz_mm=center_xyz,  # type: ignore[arg-type]
            center_irc=center_irc,
            radius_irc=(0, 0, 0),
            box_lo_irc=(0, 0, 0),
            box_hi_irc=(0, 0, 0),
            voxel_count=0,
            notes=[NOTE_OUTSIDE],
            skipped=True,
        )
    result = info.func(ct.hu, ct.geometry, nodule, center_irc, threshold_hu, **full_params)
    notes = list(result.notes)
    if not bool(dense(ct.hu[center_irc], threshold_hu)):
        notes.insert(0, NOTE_CENTER_BELOW)
    count = int(np.count_nonzero(result.local_mask))
    if count == 0:
        notes.append(NOTE_EMPTY)
    if NOTE_CENTER_BELOW in notes or count == 0:
        log.info(
            "Series %s nodule at %s mm (%s): %s",
            ct.series_uid,
            tuple(round(v, 1) for v in center_xyz),
            result.method or method,
            "; ".join(notes),
        )
    return NoduleMask(
        nodule=nodule,
        method=result.method or method,
        threshold_hu=threshold_hu,
        center_xyz_mm=center_xyz,  # type: ignore[arg-type]
        center_irc=center_irc,
        radius_irc=tuple(int(r) for r in result.radius_irc),  # type: ignore[arg-type]
        box_lo_irc=tuple(int(v) for v in result.box_lo_irc),  # type: ignore[arg-type]
        box_hi_irc=tuple(int(v) for v in result.box_hi_irc),  # type: ignore[arg-type]
        voxel_count=count,
        steps=list(result.steps),
        notes=notes,
        local_mask=result.local_mask,
    )


def build_masks(
    ct: CtVolume,
    nodules: Sequence[Nodule],
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    method: str = REFERENCE_METHOD,
    *,
    on_outside: OutsidePolicy = "raise",
    **params: Any,
) -> tuple[np.ndarray, list[NoduleMask]]:
    """Masks of all ``nodules`` of ``ct``.

    Returns a bool volume ``(index, row, col)`` of ``ct``'s shape, the OR of every nodule's mask
    (for ``"grow"``: "inside some box AND denser than ``threshold_hu``"), and one
    :class:`NoduleMask` per nodule in input order. ``params`` go to the method
    (see :func:`method_info`); ``on_outside`` as in :func:`mask_nodule`.
    """
    mask = np.zeros(ct.shape_irc, dtype=bool)
    records = [
        mask_nodule(ct, n, threshold_hu, method, on_outside=on_outside, **params) for n in nodules
    ]
    for rec in records:
        if not rec.skipped:
            mask[rec.box_slices] |= rec.local_mask
    return mask, records


# ---------------------------------------------------------------------------------------------
# Interactive thresholds
# ---------------------------------------------------------------------------------------------
def _union_region(boxes: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Slices3 | None:
    boxes = [(lo, hi) for lo, hi in boxes if all(b > a for a, b in zip(lo, hi, strict=True))]
    if not boxes:
        return None
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return _slices(lo.tolist(), hi.tolist())


class MaskState:
    """Masks of one series that follow an interactive threshold or method.

    ``mask`` is a bool volume ``(index, row, col)`` that is updated in place, so a viewer layer
    holding it only needs a refresh. Changing the threshold recomputes every nodule but only
    touches the voxels of the nodules' old and new boxes, never the whole volume.
    """

    def __init__(
        self,
        ct: CtVolume,
        nodules: Sequence[Nodule],
        method: str = REFERENCE_METHOD,
        threshold_hu: float = DEFAULT_THRESHOLD_HU,
        *,
        on_outside: OutsidePolicy = "raise",
        **params: Any,
    ) -> None:
        method_info(method)
        self.ct = ct
        self.nodules = list(nodules)
        self.method = method
        self.params = dict(params)
        self.threshold_hu = threshold_hu
        self.on_outside: OutsidePolicy = on_outside
        self.mask, self.records = build_masks(
            ct, self.nodules, threshold_hu, method, on_outside=on_outside, **params
        )

    def _recompute(self) -> Slices3 | None:
        new = [
            mask_nodule(
                self.ct,
                n,
                self.threshold_hu,
                self.method,
                on_outside=self.on_outside,
                **self.params,
            )
            for n in self.nodules
        ]
        old = self.records
        unchanged = all(
            o.box_lo_irc == n.box_lo_irc
            and o.box_hi_irc == n.box_hi_irc
            and np.array_equal(o.local_mask, n.local_mask)
            for o, n in zip(old, new, strict=True)
        )
        self.records = new
        if unchanged:
            return None
        # Every mask voxel lies in some old box: clearing them all and OR-ing every new nodule
        # gives exactly the from-scratch mask, overlapping boxes included.
        for rec in old:
            if not rec.skipped:
                self.mask[rec.box_slices] = False
        for rec in new:
            if not rec.skipped:
                self.mask[rec.box_slices] |= rec.local_mask
        return _union_region([(r.box_lo_irc, r.box_hi_irc) for r in (*old, *new)])

    def set_threshold(self, threshold_hu: float) -> Slices3 | None:
        """Recompute all nodules at ``threshold_hu`` (HU); return the changed region or None.

        The region is the bounding box ``(index, row, col)`` of all old and new boxes; ``None``
        means no voxel changed. A non-finite threshold raises :class:`ConfigError` and leaves
        the state as it was.
        """
        check_threshold(threshold_hu)
        self.threshold_hu = threshold_hu
        return self._recompute()

    def set_method(self, method: str, **params: Any) -> Slices3 | None:
        """Switch to another registered method (with its ``params``); as :meth:`set_threshold`."""
        _check_params(method_info(method), params)
        self.method = method
        self.params = dict(params)
        return self._recompute()


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------
def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice ``2|a & b| / (|a| + |b|)`` of two bool arrays of one shape; 1.0 when both empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise GeometryError(f"dice: shapes differ, {a.shape} vs {b.shape}.")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


# ---------------------------------------------------------------------------------------------
# Writing masks for a data folder
# ---------------------------------------------------------------------------------------------
#: Name of the per-nodule table written beside the masks.
MASK_TABLE = "nodules.csv"

#: Ending of a written mask's file name: ``<seriesuid>_mask.mhd``.
MASK_SUFFIX = "_mask.mhd"


def mask_file_name(series_uid: str) -> str:
    """File name of a series' mask in a :func:`write_masks` folder: ``<seriesuid>_mask.mhd``."""
    return f"{series_uid}{MASK_SUFFIX}"


#: Its columns (also written when there is no nodule at all).
_EMPTY_ROW_COLUMNS = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "method",
    "threshold_hu",
    "center_irc",
    "radius_irc",
    "box_lo_irc",
    "box_hi_irc",
    "voxel_count",
    "skipped",
    "notes",
)

Progress = Callable[[int, int, str], None]
ShouldStop = Callable[[], bool]


def _write_csv_atomic(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` as CSV through a temporary file renamed into place."""
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _check_stop(should_stop: ShouldStop | None, what: str) -> None:
    if should_stop is not None and should_stop():
        raise CancelledError(f"{what} stopped on request.")


def _refuse_data_folder(folder: LunaFolder, out: Path) -> None:
    """:class:`OutputExistsError` when ``out`` is (inside) a folder of the data set itself.

    Written into a ``subset*`` folder, masks (``<uid>_mask.mhd``) would be found as series; into
    ``truth/`` the table ``nodules.csv`` would replace the true shapes' table, with or without
    ``overwrite``.
    """
    target = out.resolve()
    protected = {folder.series_path(uid).parent.resolve() for uid in folder.series_uids}
    protected.add((folder.root / TRUTH_DIR).resolve())
    if any(target == p or p in target.parents for p in protected):
        raise OutputExistsError(
            f"{out} is (inside) a folder of the data set's own series or true shapes; masks "
            "written there would replace them or be found as series. Choose another folder "
            f"(default: {folder.root / 'masks'})."
        )


def write_masks(
    folder: LunaFolder,
    out_dir: str | os.PathLike[str],
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    method: str = REFERENCE_METHOD,
    *,
    overwrite: bool = False,
    on_outside: OutsidePolicy = "raise",
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    series: Sequence[str] | None = None,
    on_series: Callable[[CtVolume, list[NoduleMask]], None] | None = None,
    **params: Any,
) -> list[NoduleMask]:
    """Write a mask :func:`mask_file_name` (``<uid>_mask.mhd``: uint8, 1 = nodule, compressed,
    the CT's geometry) for every series on disk, or only for the UIDs in ``series``.

    Series without nodules get an all-zero mask. A per-nodule table :data:`MASK_TABLE`
    (center in mm and IRC, diameter, method, radii, box, voxel count, notes) is written last.
    A UID of ``series`` that is not on disk raises :class:`SeriesNotFoundError`, and existing
    outputs :class:`OutputExistsError` unless ``overwrite``, both before any work; a folder of
    the data set itself (``subset*/``, ``truth/``) is always refused. ``on_series(ct,
    records)`` is called after each series is written (e.g. to score it with
    :func:`score_against_truth` while the CT is in memory). Stops between series when
    ``should_stop()`` is true (:class:`CancelledError`; masks written so far are kept).
    """
    out = Path(out_dir)
    method_info(method)
    check_threshold(threshold_hu)
    uids = folder.series_uids
    if series is not None:
        wanted, on_disk = list(dict.fromkeys(series)), set(uids)
        unknown = [u for u in wanted if u not in on_disk]
        if unknown:
            raise SeriesNotFoundError(
                f"Series {', '.join(unknown)} not found under {folder.root}/subset*/ "
                f"({len(uids)} series there); give the UIDs of series on disk (their file "
                "names without .mhd)."
            )
        uids = wanted
    _refuse_data_folder(folder, out)
    table = out / MASK_TABLE
    if not overwrite:
        targets = [table, *(out / mask_file_name(u) for u in uids)]
        existing = [p for p in targets if p.exists()]
        if existing:
            raise OutputExistsError(
                f"{existing[0]} already exists ({len(existing)} output file(s) in {out}); "
                "choose another folder or ask to overwrite (--overwrite)."
            )
    records: list[NoduleMask] = []
    for done, uid in enumerate(uids):
        _check_stop(should_stop, "Writing masks")
        if progress is not None:
            progress(done, len(uids), f"masking {uid}")
        ct = folder.load(uid)
        mask, recs = build_masks(
            ct, folder.nodules(uid), threshold_hu, method, on_outside=on_outside, **params
        )
        save_volume(
            mask.astype(np.uint8),
            ct.geometry,
            out / mask_file_name(uid),
            compress=True,
            overwrite=True,
        )
        records.extend(recs)
        log.debug("%s: %d nodules, %d mask voxels", uid, len(recs), int(mask.sum()))
        if on_series is not None:
            on_series(ct, recs)
    rows = [r.to_row() for r in records]
    columns = list(rows[0]) if rows else list(_EMPTY_ROW_COLUMNS)
    _write_csv_atomic(table, rows, columns)
    if progress is not None:
        progress(len(uids), len(uids), "masks written")
    return records


# ---------------------------------------------------------------------------------------------
# Mask report: every method against the true shapes
# ---------------------------------------------------------------------------------------------
#: Size bands of the report: (label, lower mm inclusive, upper mm exclusive).
SIZE_BANDS_MM: tuple[tuple[str, float, float], ...] = (
    ("<6 mm", 0.0, 6.0),
    ("6-10 mm", 6.0, 10.0),
    ("10-20 mm", 10.0, 20.0),
    (">=20 mm", 20.0, math.inf),
)


def size_band(diameter_mm: float) -> str:
    """The :data:`SIZE_BANDS_MM` label of a diameter in mm."""
    for label, lo, hi in SIZE_BANDS_MM:
        if lo <= diameter_mm < hi:
            return label
    return SIZE_BANDS_MM[-1][0]


@dataclass(frozen=True)
class NoduleScore:
    """Dice of one method's mask of one true nodule (mask vs the nodule's true label)."""

    series_uid: str
    label: int
    kind: str
    diameter_mm: float
    method: str
    dice: float
    voxel_count: int
    true_voxel_count: int
    notes: str

    @property
    def size_band(self) -> str:
        """Size band of the true diameter (see :data:`SIZE_BANDS_MM`)."""
        return size_band(self.diameter_mm)

    @property
    def flagged(self) -> bool:
        """True when the record carries a flag that explains a poor mask."""
        return NOTE_CENTER_BELOW in self.notes or NOTE_OUTSIDE in self.notes


@dataclass(frozen=True)
class ScanScore:
    """Dice of one method's whole-scan mask against all true nodules of the scan."""

    series_uid: str
    method: str
    dice: float


@dataclass
class MaskReport:
    """Per-nodule and per-scan Dice of every method on a data set with true shapes."""

    threshold_hu: float
    methods: list[str]
    nodules: list[NoduleScore]
    scans: list[ScanScore]
    unmatched: list[str] = field(default_factory=list)

    def groups(self) -> list[tuple[str, str]]:
        """Row keys of the summary: ``("scan", "all")``, ``("nodule", "all")``, bands, kinds."""
        keys = [("scan", "all"), ("nodule", "all")]
        present_bands = {s.size_band for s in self.nodules}
        keys += [("size", b) for b, _, _ in SIZE_BANDS_MM if b in present_bands]
        kinds = sorted({s.kind for s in self.nodules})
        keys += [("kind", k) for k in kinds]
        return keys

    def _scores(self, group: tuple[str, str], method: str) -> list[float]:
        what, value = group
        if what == "scan":
            return [s.dice for s in self.scans if s.method == method]
        chosen = [s for s in self.nodules if s.method == method]
        if what == "size":
            chosen = [s for s in chosen if s.size_band == value]
        elif what == "kind":
            chosen = [s for s in chosen if s.kind == value]
        return [s.dice for s in chosen]

    def summary(self) -> list[dict[str, Any]]:
        """One row per group: ``group``, ``n`` and the mean Dice per method."""
        rows = []
        for group in self.groups():
            row: dict[str, Any] = {"group": _group_label(group)}
            for method in self.methods:
                scores = self._scores(group, method)
                row["n"] = len(scores)
                row[method] = float(np.mean(scores)) if scores else float("nan")
            rows.append(row)
        empty: dict[str, Any] = {"group": "empty masks (unflagged)", "n": ""}
        for method in self.methods:
            empty[method] = sum(
                1
                for s in self.nodules
                if s.method == method and s.voxel_count == 0 and not s.flagged
            )
        rows.append(empty)
        return rows

    def best_method(self) -> str:
        """The method with the highest mean per-scan Dice."""
        means = {m: np.mean(self._scores(("scan", "all"), m) or [0.0]) for m in self.methods}
        return max(self.methods, key=lambda m: means[m])

    def to_markdown(self) -> str:
        """The summary as a Markdown table (mean Dice; the last row counts empty masks)."""
        head = ["group", "n", *self.methods]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.summary():
            cells = [str(row["group"]), str(row["n"])]
            for method in self.methods:
                value = row[method]
                cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write_csv(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``mask_report_nodules.csv`` (one row per nodule and method) and
        ``mask_report_summary.csv`` (the summary table) into ``out_dir``."""
        out = Path(out_dir)
        nodule_rows = [
            {
                "seriesuid": s.series_uid,
                "label": s.label,
                "kind": s.kind,
                "diameter_mm": round(s.diameter_mm, 2),
                "size_band": s.size_band,
                "method": s.method,
                "dice": round(s.dice, 4),
                "voxel_count": s.voxel_count,
                "true_voxel_count": s.true_voxel_count,
                "notes": s.notes,
            }
            for s in self.nodules
        ]
        columns = list(nodule_rows[0]) if nodule_rows else ["seriesuid"]
        a = _write_csv_atomic(out / "mask_report_nodules.csv", nodule_rows, columns)
        summary = self.summary()
        b = _write_csv_atomic(
            out / "mask_report_summary.csv", summary, ["group", "n", *self.methods]
        )
        return a, b


def _group_label(group: tuple[str, str]) -> str:
    what, value = group
    if what == "scan":
        return "per scan (mean)"
    if what == "nodule" and value == "all":
        return "per nodule (mean)"
    return f"{what}: {value}"


def _match_true(
    annotations: Sequence[Nodule], truths: Sequence[TrueNodule]
) -> list[tuple[TrueNodule, Nodule | None]]:
    """Pair each true nodule with the nearest annotation within its diameter (world mm)."""
    pairs: list[tuple[TrueNodule, Nodule | None]] = []
    if not annotations:
        return [(t, None) for t in truths]
    centers = np.asarray([a.center_xyz_mm for a in annotations], dtype=np.float64)
    for truth in truths:
        dist = np.linalg.norm(centers - np.asarray(truth.center_xyz_mm), axis=1)
        k = int(np.argmin(dist))
        near = dist[k] <= max(truth.diameter_mm, MATCH_MIN_DISTANCE_MM)
        pairs.append((truth, annotations[k] if near else None))
    return pairs


@dataclass
class SeriesTruth:
    """The true shapes of one series, each paired with its annotation.

    Attributes:
        series_uid: the series.
        labels: the truth volume ``(index, row, col)``, 0 = background, ``k`` = true nodule k.
        label_boxes: per label ``k``, its bounding slices (``label_boxes[k - 1]``) or None.
        pairs: every true nodule with the nearest annotation within its diameter (or None).
    """

    series_uid: str
    labels: np.ndarray
    label_boxes: list[Slices3 | None]
    pairs: list[tuple[TrueNodule, Nodule | None]]

    @property
    def annotated(self) -> list[Nodule]:
        """The annotations paired with a true nodule, in truth-label order."""
        return [a for _, a in self.pairs if a is not None]

    @property
    def unmatched(self) -> list[str]:
        """``"<uid> label <k>"`` for each true nodule without an annotation."""
        return [f"{self.series_uid} label {t.label}" for t, a in self.pairs if a is None]

    def score(self, method: str, records: Sequence[NoduleMask]) -> list[NoduleScore]:
        """Dice of each true nodule against the record made from its annotation.

        ``records`` are matched to annotations by identity (``record.nodule is annotation``),
        as :func:`build_masks` keeps them; a true nodule without an annotation or record, or
        whose record was skipped, scores 0.
        """
        by_nodule = {id(r.nodule): r for r in records}
        return [
            _score_nodule(
                self.series_uid,
                method,
                truth,
                self.labels,
                self.label_boxes,
                None if ann is None else by_nodule.get(id(ann)),
            )
            for truth, ann in self.pairs
        ]


def load_series_truth(folder: LunaFolder, ct: CtVolume) -> SeriesTruth | None:
    """The true shapes of ``ct``'s series in ``folder`` (None when it has no truth volume).

    Raises:
        GeometryError: when the truth volume's shape differs from the series'.
    """
    truth_path = folder.truth_path(ct.series_uid)
    if truth_path is None:
        return None
    labels = load_ct(truth_path).hu
    if labels.shape != ct.hu.shape:
        raise GeometryError(
            f"{truth_path}: shape {labels.shape} differs from its series {ct.hu.shape}; "
            "regenerate the data set."
        )
    label_boxes = ndimage.find_objects(labels.astype(np.int32, copy=False))
    pairs = _match_true(folder.nodules(ct.series_uid), folder.true_nodules(ct.series_uid))
    return SeriesTruth(ct.series_uid, labels, list(label_boxes), pairs)


def score_against_truth(
    folder: LunaFolder, ct: CtVolume, records: Sequence[NoduleMask], method: str
) -> list[NoduleScore]:
    """Per-true-nodule Dice of ``records`` (made by ``method`` from ``folder``'s annotations of
    ``ct``, e.g. by :func:`write_masks`) against the series' true shapes; ``[]`` without truth.

    The same scoring as :func:`mask_report` (see :meth:`SeriesTruth.score`).
    """
    truth = load_series_truth(folder, ct)
    return [] if truth is None else truth.score(method, records)


def mask_report(
    folder: LunaFolder,
    methods: Sequence[str] | None = None,
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> MaskReport:
    """Score every method (default: all registered) against the true shapes of ``folder``.

    For each series with a truth volume, the annotations are masked by each method; a nodule's
    Dice compares its own mask with its true label, a scan's Dice compares the OR of all masks
    with all true labels. A true nodule without an annotation scores 0 and is listed in
    ``unmatched``. Nodules whose center is outside the volume are skipped and flagged.
    """
    chosen = list(methods) if methods else available_methods()
    for name in chosen:
        method_info(name)
    with_truth = [(u, folder.truth_path(u)) for u in folder.series_uids]
    series = [(u, p) for u, p in with_truth if p is not None]
    if not series:
        raise SeriesNotFoundError(
            f"{folder.root} has no series with a true shape (truth/<uid>.mhd); the mask report "
            "needs synthetic data (lunaseg synth DIR) or another folder with truth volumes."
        )
    nodule_scores: list[NoduleScore] = []
    scan_scores: list[ScanScore] = []
    unmatched: list[str] = []
    for done, (uid, truth_path) in enumerate(series):
        _check_stop(should_stop, "The mask report")
        if progress is not None:
            progress(done, len(series), f"scoring {uid}")
        ct = folder.load(uid)
        truth = load_series_truth(folder, ct)
        if truth is None:  # removed since the listing above
            raise SeriesNotFoundError(f"{truth_path} disappeared while the report ran.")
        truth_any = truth.labels > 0
        unmatched += truth.unmatched
        annotated = truth.annotated
        for name in chosen:
            mask, recs = build_masks(ct, annotated, threshold_hu, name, on_outside="skip")
            scan_scores.append(ScanScore(uid, name, dice(mask, truth_any)))
            nodule_scores += truth.score(name, recs)
    if progress is not None:
        progress(len(series), len(series), "report done")
    return MaskReport(threshold_hu, chosen, nodule_scores, scan_scores, unmatched)


def _score_nodule(
    uid: str,
    method: str,
    truth: TrueNodule,
    labels: np.ndarray,
    label_boxes: Sequence[Slices3 | None],
    rec: NoduleMask | None,
) -> NoduleScore:
    """Dice of one record against one true label, computed in the union of their boxes."""
    true_box = label_boxes[truth.label - 1] if 0 < truth.label <= len(label_boxes) else None
    boxes = [] if true_box is None else [([s.start for s in true_box], [s.stop for s in true_box])]
    if rec is not None and not rec.skipped:
        boxes.append((list(rec.box_lo_irc), list(rec.box_hi_irc)))
    region = _union_region(boxes)
    true_count = 0
    score = 0.0
    if region is not None:
        true_local = labels[region] == truth.label
        true_count = int(np.count_nonzero(true_local))
        pred_local = np.zeros(true_local.shape, dtype=bool)
        if rec is not None and not rec.skipped:
            offset = [r.start for r in region]
            inner = _slices(
                [lo - o for lo, o in zip(rec.box_lo_irc, offset, strict=True)],
                [hi - o for hi, o in zip(rec.box_hi_irc, offset, strict=True)],
            )
            pred_local[inner] = rec.local_mask
        score = dice(pred_local, true_local)
    notes = "no annotation" if rec is None else "; ".join(rec.notes)
    return NoduleScore(
        uid,
        truth.label,
        truth.kind,
        truth.diameter_mm,
        method,
        score if rec is not None and not rec.skipped else 0.0,
        0 if rec is None else rec.voxel_count,
        true_count,
        notes,
    )


def plot_mask_report(report: MaskReport, path: str | os.PathLike[str]) -> Path:
    """Bar chart of mean Dice per method, per scan / size band / kind (PNG, Agg, no GUI)."""
    from matplotlib.figure import Figure  # local: only the report needs matplotlib

    summary = [r for r in report.summary() if r["group"] != "empty masks (unflagged)"]
    groups = [f"{r['group']}\n(n={r['n']})" for r in summary]
    fig = Figure(figsize=(max(8.0, 1.2 * len(groups)), 4.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(report.methods))
    x = np.arange(len(groups))
    for k, method in enumerate(report.methods):
        values = [r[method] for r in summary]
        bars = ax.bar(x + (k - (len(report.methods) - 1) / 2) * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(x, groups, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("mean Dice vs true shape")
    ax.set_title(f"Mask methods against true nodule shapes (threshold {report.threshold_hu:g} HU)")
    ax.legend(loc="upper center", ncols=len(report.methods), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=120)
    return dest


def _pick_case(report: MaskReport) -> NoduleScore | None:
    """The best method's nodule that loses most against ``grow``; if none loses, its worst."""
    best = report.best_method()
    scores = {(s.series_uid, s.label): s for s in report.nodules if s.method == best}
    if not scores:
        return None
    reference = {
        (s.series_uid, s.label): s.dice for s in report.nodules if s.method == REFERENCE_METHOD
    }
    worst_vs_grow = min(
        scores.values(), key=lambda s: s.dice - reference.get((s.series_uid, s.label), 0.0)
    )
    if worst_vs_grow.dice < reference.get((worst_vs_grow.series_uid, worst_vs_grow.label), 0.0):
        return worst_vs_grow
    return min(scores.values(), key=lambda s: s.dice)


def plot_report_case(
    folder: LunaFolder,
    report: MaskReport,
    path: str | os.PathLike[str],
    case: NoduleScore | None = None,
    margin_mm: float = 8.0,
) -> Path | None:
    """PNG of one nodule (default: where the best method loses most against ``grow``).

    One panel per method of the report: the slice ``(row, col)`` through the nodule's true
    center, lung window, with TP green, FN orange, FP red (the project's colour code).
    Returns None when the report has no nodule.
    """
    from matplotlib.figure import Figure

    case = case or _pick_case(report)
    if case is None:
        return None
    ct = folder.load(case.series_uid)
    truth_path = folder.truth_path(case.series_uid)
    if truth_path is None:
        return None
    truth = load_ct(truth_path).hu == case.label
    true_nodule = next(t for t in folder.true_nodules(case.series_uid) if t.label == case.label)
    center = ct.geometry.xyz_to_irc_index(true_nodule.center_xyz_mm)
    center = np.clip(center, 0, np.asarray(ct.shape_irc) - 1)
    half = [math.ceil((case.diameter_mm / 2 + margin_mm) / s) for s in ct.geometry.spacing_irc_mm]
    lo, hi = box_around(center, half, ct.shape_irc)
    k = int(center[0])
    rows, cols = slice(lo[1], hi[1]), slice(lo[2], hi[2])
    pairs = _match_true(folder.nodules(case.series_uid), [true_nodule])
    annotation = pairs[0][1]
    low, high = LUNG_WINDOW_HU
    grey = np.clip((ct.hu[k, rows, cols].astype(np.float32) - low) / (high - low), 0, 1)
    true_slice = truth[k, rows, cols]
    fig = Figure(figsize=(3.2 * len(report.methods), 3.6), layout="constrained")
    for n, method in enumerate(report.methods):
        ax = fig.add_subplot(1, len(report.methods), n + 1)
        pred = np.zeros(true_slice.shape, dtype=bool)
        title = f"{method}: no annotation"
        if annotation is not None:
            rec = mask_nodule(ct, annotation, report.threshold_hu, method, on_outside="skip")
            full = np.zeros(ct.shape_irc, dtype=bool)
            if not rec.skipped:
                full[rec.box_slices] = rec.local_mask
            pred = full[k, rows, cols]
            title = f"{method}: Dice {dice(full, truth):.2f}"
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        for where, colour in (
            (pred & true_slice, TP_RGB),
            (~pred & true_slice, FN_RGB),
            (pred & ~true_slice, FP_RGB),
        ):
            rgb[where] = 0.45 * rgb[where] + 0.55 * np.asarray(colour) / 255
        sy, sx = ct.geometry.spacing_irc_mm[1:]
        ax.imshow(rgb, interpolation="nearest", aspect=sy / sx)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(
        f"{case.kind} nodule, {case.diameter_mm:.1f} mm, slice {k} of {case.series_uid[-12:]} "
        "(TP green, FN orange, FP red)",
        fontsize=9,
    )
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=130)
    return dest
