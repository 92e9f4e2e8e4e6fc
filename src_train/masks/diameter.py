"""Diameter-aware mask methods: ``ball`` and ``region`` (the annotated ``diameter_mm`` in use).

Distances are physical (mm), so anisotropic voxels are handled; morphology runs on distance
transforms with the voxel spacing. A nodule without a usable diameter falls back to the
reference rule ``grow`` and says so in its notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from src_train.ct import Geometry
from src_train.luna import Nodule
from src_train.masks.boxes import box_around, box_slices
from src_train.masks.density import dense
from src_train.masks.grow import method_grow
from src_train.masks.registry import (
    NOTE_NO_DIAMETER,
    REFERENCE_METHOD,
    MethodResult,
    register_method,
)

#: Typical lung parenchyma, HU (used when a crop has no lung voxel to measure).
DEFAULT_LUNG_HU = -850.0

#: ``region``: a nodule is solid enough to take its level from its dense voxels when at least
#: this fraction of its ball is dense; fainter ones use the median of their core.
SOLID_DENSE_FRACTION = 0.25


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
        box_slices(
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
    local = dense(hu[box_slices(lo, hi)], threshold_hu) & inside
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


def _boundary_threshold(
    nodule_hu: float,
    lung_ref: float,
    threshold_hu: float,
    boundary_fraction: float,
    notes: list[str],
) -> float:
    """Step 1 of :func:`method_region`: the HU above which a voxel is dense (a faint nodule
    below ``threshold_hu`` lowers it, noted in ``notes``)."""
    level = lung_ref + boundary_fraction * (nodule_hu - lung_ref)
    threshold = float(threshold_hu)
    if nodule_hu > threshold:
        return max(threshold, level)
    faint_level = lung_ref + (boundary_fraction or 0.5) * (nodule_hu - lung_ref)
    if lung_ref < faint_level < threshold:
        notes.append(
            f"faint (ground-glass) nodule: median {nodule_hu:.0f} HU, threshold lowered "
            f"from {threshold:.0f} to {faint_level:.0f} HU"
        )
        return faint_level
    return threshold


def _large_structures(
    crop: np.ndarray,
    is_dense: np.ndarray,
    air_hu: float,
    wall_mm: float,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """Step 2 of :func:`method_region`: dense voxels of structures thicker than ``wall_mm``
    (dense voxels and outside-body air opened with a ball of that radius, mm)."""
    solid_or_air = is_dense | ~dense(crop, air_hu)
    return _dilate_mm(_erode_mm(solid_or_air, wall_mm, spacing), wall_mm, spacing) & is_dense


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
    crop = hu[box_slices(lo, hi)]
    dist = _distance_mm(crop.shape, center_local, spacing)
    notes: list[str] = []

    nodule_hu, lung_ref = _local_levels(
        crop, dist, radius_mm, threshold_hu, lung_hu, air_hu, min(spacing), nodule_percentile
    )
    threshold = _boundary_threshold(nodule_hu, lung_ref, threshold_hu, boundary_fraction, notes)
    is_dense = dense(crop, threshold)

    near = dist <= ball_mm
    big = np.zeros(crop.shape, dtype=bool)
    if _reaches_beyond(is_dense, dist, radius_mm, ball_mm):
        big = _large_structures(crop, is_dense, air_hu, wall_mm, spacing)
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
    inner = box_slices(ball_lo, ball_hi)
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
