"""What one annotation looks like in its scan, measured without any truth: the signals of QA.

Everything is computed on a box around the annotated center (never the whole volume), so a
folder of a thousand nodules is scored in seconds once its scans are read. Arrays are
``(index, row, col)`` HU; centers world ``(x, y, z)`` mm; lengths mm unless named ``_vox``.

* **growth** -- the SPEC's bounding-box growth (:func:`src_train.masks.grow.grow_radius`) run
  on the box: the mask's equivalent diameter against the annotated one, the axes where growth
  was stopped by the box (not by the volume's edge), and how much longer one axis grew than
  the shortest (a leak into the chest wall or along a vessel);
* **HU** -- the median HU at the center (3x3x3 voxels) and whether the center lies outside the
  body (a straight in-plane line from it reaches the volume's border without meeting tissue);
* **blob** -- the dense blob the growth starts from: the connected dense voxels at, or nearest
  to, the center; the distance to it, its centroid's offset from the center, its diameter;
* **bright** -- the connected bone-bright voxels (> :data:`BRIGHT_HU`) at the center: how far
  they reach and whether they run into the box. A calcified nodule is a compact bright blob
  about the annotated size in lung; a rib, a vertebra or the cortex of the chest wall is a
  bright structure far longer than any nodule, which leaves the box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from src_train.ct import Geometry
from src_train.masks.boxes import box_around, box_slices
from src_train.masks.density import DEFAULT_THRESHOLD_HU, dense
from src_train.masks.grow import grow_radius

#: The box QA grows in reaches at least this far from the center on each axis, mm (a 30 mm
#: nodule fits whatever diameter was annotated).
MIN_HALF_BOX_MM = 20.0
#: ... and at least this many annotated radii (a 40 mm annotation gets a 60 mm half box).
HALF_BOX_RADII = 1.5
#: Tissue: above this HU a voxel is body, for the outside-the-body test.
BODY_HU = -500.0
#: Bone-bright: above this HU a voxel is bone or calcium (above muscle, blood and organs at
#: 40-60 HU; below marrow-filled vertebrae at about 220 HU).
BRIGHT_HU = 150.0


@dataclass(frozen=True)
class NoduleSignals:
    """The truth-free measurements of one annotation (see the module docstring).

    Attributes:
        outside: the center lies outside the scan (every other value is then NaN).
        center_hu: median HU of the 3x3x3 voxels around the center.
        outside_body: a straight in-plane line from the center reaches the volume's border
            without meeting tissue (> :data:`BODY_HU`).
        mask_diameter_mm: equivalent-sphere diameter of the grown mask (box AND dense).
        diameter_ratio: ``mask_diameter_mm / annotated diameter`` (NaN without a diameter).
        capped_axes: axes on which growth ran into the QA box (not the volume's edge).
        elongation: longest over shortest growth radius, in mm.
        blob_distance_mm: center to the nearest voxel of its dense blob (0 when the center
            is dense; inf when the box holds no dense voxel).
        blob_offset_mm: center to the blob's centroid.
        blob_diameter_mm: equivalent-sphere diameter of the blob (inside the box).
        blob_capped: the blob reaches the QA box on a side that is not the volume's edge.
        fill: fraction of dense voxels inside the annotated sphere (center, radius = half the
            annotated diameter, at least one voxel): most of a nodule, little of a vessel,
            none of plain lung.
        shell_fill: fraction of dense voxels in the shell from that radius to twice it: little
            around a nodule in lung, most when the annotated diameter is far too small.
        fill_offset_mm: center to the centroid of the dense voxels inside the annotated sphere
            (an annotation at a nodule's center of mass: near 0; NaN when none is dense).
        linearity: how line-like the dense voxels within twice the annotated radius are
            (largest over middle eigenvalue of their covariance): high on a vessel, near 1 on
            a nodule, and on the chest wall (a plane).
        shell_balance: how one-sided the dense voxels of the shell are (0: a vessel passing
            through; 1: a vessel from one side, the chest wall, or an empty shell).
        bright_extent_mm: the longest side of the bounding box of the bright (>
            :data:`BRIGHT_HU`) voxels connected to the center, mm (0 when the center is not
            bright): about the diameter for a calcified nodule, far more for bone.
        bright_capped: those bright voxels reach the QA box on a side that is not the
            volume's edge (a rib or a spine passing through, never a nodule in lung).
    """

    outside: bool
    center_hu: float = math.nan
    outside_body: bool = False
    mask_diameter_mm: float = math.nan
    diameter_ratio: float = math.nan
    capped_axes: int = 0
    elongation: float = math.nan
    blob_distance_mm: float = math.nan
    blob_offset_mm: float = math.nan
    blob_diameter_mm: float = math.nan
    blob_capped: bool = False
    fill: float = math.nan
    shell_fill: float = math.nan
    fill_offset_mm: float = math.nan
    linearity: float = math.nan
    shell_balance: float = math.nan
    bright_extent_mm: float = math.nan
    bright_capped: bool = False


def _sphere_diameter(count: int, voxel_mm3: float) -> float:
    return float(np.cbrt(6.0 * count * voxel_mm3 / np.pi))


def qa_box(
    center_irc: Sequence[int],
    diameter_mm: float | None,
    spacing_irc_mm: Sequence[float] | np.ndarray,
    shape_irc: Sequence[int],
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The box QA measures in: ``(lo, hi exclusive)`` voxels ``(index, row, col)``, clipped."""
    radius_mm = 0.5 * diameter_mm if diameter_mm else 0.0
    half_mm = max(MIN_HALF_BOX_MM, HALF_BOX_RADII * radius_mm)
    half = [max(2, math.ceil(half_mm / s)) for s in spacing_irc_mm]
    return box_around(center_irc, half, shape_irc)


def outside_body(hu: np.ndarray, center_irc: Sequence[int]) -> bool:
    """True when a straight line along the row or the column axis, from ``center_irc`` to the
    border of its slice, meets no tissue (> :data:`BODY_HU`): the point is not enclosed by a
    body. Lungs are enclosed on every side, air beside the body is not."""
    k, r, c = (int(v) for v in center_irc)
    plane = hu[k]
    rays = (plane[:r, c], plane[r + 1 :, c], plane[r, :c], plane[r, c + 1 :])
    return any(not bool(np.any(ray > BODY_HU)) for ray in rays)


def _growth(
    crop: np.ndarray,
    local: Sequence[int],
    at_volume_edge: Sequence[tuple[bool, bool]],
    spacing: np.ndarray,
    threshold_hu: float,
) -> tuple[int, int, float]:
    """Grow in the crop: returns (mask voxel count, capped axes, elongation)."""
    radii: list[int] = []
    capped = 0
    for axis in range(3):
        radius, steps = grow_radius(crop, local, axis, threshold_hu)
        radii.append(radius)
        last = steps[-1]
        if last.stopped_by == "edge":
            low_edge, high_edge = at_volume_edge[axis]
            hit_low = last.hu_minus is None and not low_edge
            hit_high = last.hu_plus is None and not high_edge
            capped += int(hit_low or hit_high)
    lo, hi = box_around(local, radii, crop.shape)
    count = int(np.count_nonzero(dense(crop[box_slices(lo, hi)], threshold_hu)))
    radii_mm = np.asarray(radii, dtype=np.float64) * spacing
    return count, capped, float(radii_mm.max() / radii_mm.min())


def _sphere(
    dense_crop: np.ndarray,
    local: Sequence[int],
    sub_voxel: np.ndarray,
    spacing: np.ndarray,
    radius_mm: float,
) -> tuple[float, float, float, float, float]:
    """The annotated sphere around the exact center (``local`` + ``sub_voxel``, voxels):
    dense fraction of the ball of ``radius_mm`` (at least one voxel), dense fraction of the
    shell to twice that radius, distance (mm) from the center to the centroid of the ball's
    dense voxels, and how line-like the dense voxels within twice the radius are (the largest
    over the middle eigenvalue of their covariance: a vessel is a line, a nodule a ball, the
    chest wall a plane), and how one-sided the shell's dense voxels are (length of the mean of
    their unit directions from the center: near 0 when a vessel passes through, near 1 when
    one runs into a nodule from one side or the nodule touches the wall; 1 when the shell is
    empty)."""
    reach = max(radius_mm, float(spacing.max()))
    half = [max(1, math.ceil(2 * reach / s)) for s in spacing]
    lo, hi = box_around(local, half, dense_crop.shape)
    grids = [
        (g - d) * s
        for g, d, s in zip(
            np.ogrid[tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, local, strict=True))],
            sub_voxel,
            spacing,
            strict=True,
        )
    ]
    dist2 = sum(g**2 for g in grids)
    ball = dist2 <= reach**2
    near = dist2 <= 4 * reach**2
    hits = dense_crop[box_slices(lo, hi)]
    inside = hits & ball
    count = int(np.count_nonzero(inside))
    offset = math.nan
    if count:
        offset = math.hypot(*(float((g * inside).sum()) / count for g in grids))
    points = np.stack([np.broadcast_to(g, hits.shape)[hits & near] for g in grids], axis=1)
    in_shell = np.stack([np.broadcast_to(g, hits.shape)[hits & near & ~ball] for g in grids], 1)
    balance = 1.0
    if len(in_shell):
        units = in_shell / np.linalg.norm(in_shell, axis=1, keepdims=True)
        balance = float(np.linalg.norm(units.mean(axis=0)))
    linearity = 1.0
    if len(points) > 3:
        eig = np.sort(np.linalg.eigvalsh(np.cov(points, rowvar=False)))[::-1]
        linearity = float(eig[0] / max(eig[1], 1e-6))
    return (
        count / max(1, int(np.count_nonzero(ball))),
        float(np.count_nonzero(hits & near & ~ball)) / max(1, int(np.count_nonzero(near & ~ball))),
        offset,
        linearity,
        balance,
    )


def _blob(
    dense_crop: np.ndarray,
    local: Sequence[int],
    at_volume_edge: Sequence[tuple[bool, bool]],
    spacing: np.ndarray,
    voxel_mm3: float,
) -> tuple[float, float, float, bool]:
    """The dense blob at or nearest to the center: (distance, centroid offset, diameter,
    reaches the box)."""
    if not dense_crop.any():
        return math.inf, math.inf, 0.0, False
    labels, _ = ndimage.label(dense_crop)
    center = np.asarray(local, dtype=np.float64)
    label = int(labels[tuple(int(v) for v in local)])
    if label:
        distance = 0.0
    else:
        points = np.argwhere(labels > 0)
        gaps = np.linalg.norm((points - center) * spacing, axis=1)
        nearest = int(np.argmin(gaps))
        distance = float(gaps[nearest])
        label = int(labels[tuple(points[nearest])])
    where = np.argwhere(labels == label)
    offset = float(np.linalg.norm((where.mean(axis=0) - center) * spacing))
    capped = _touches_box(where, dense_crop.shape, at_volume_edge)
    return distance, offset, _sphere_diameter(len(where), voxel_mm3), capped


def _touches_box(
    where: np.ndarray, shape: Sequence[int], at_volume_edge: Sequence[tuple[bool, bool]]
) -> bool:
    """True when voxels ``where`` (``(n, 3)``) reach a side of a crop of ``shape`` that is
    not the volume's edge."""
    for axis in range(3):
        low_edge, high_edge = at_volume_edge[axis]
        if where[:, axis].min() == 0 and not low_edge:
            return True
        if where[:, axis].max() == shape[axis] - 1 and not high_edge:
            return True
    return False


def _bright(
    crop: np.ndarray,
    local: Sequence[int],
    at_volume_edge: Sequence[tuple[bool, bool]],
    spacing: np.ndarray,
) -> tuple[float, bool]:
    """The bright (> :data:`BRIGHT_HU`) structure at the center: (extent mm, reaches box).
    Its label is the most common one among the 3x3x3 voxels at the center (0, False when
    none of them is bright)."""
    labels, _ = ndimage.label(crop > BRIGHT_HU)
    near = labels[box_slices(*box_around(local, (1, 1, 1), crop.shape))]
    found = np.bincount(near.ravel())
    found[0] = 0
    if not found.any():
        return 0.0, False
    where = np.argwhere(labels == int(np.argmax(found)))
    span = (where.max(axis=0) - where.min(axis=0) + 1) * spacing
    return float(span.max()), _touches_box(where, crop.shape, at_volume_edge)


def nodule_signals(
    hu: np.ndarray,
    geometry: Geometry,
    center_xyz_mm: Sequence[float],
    diameter_mm: float | None,
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
) -> NoduleSignals:
    """Measure one annotation (center world ``(x, y, z)`` mm, diameter mm or None) in ``hu``
    (``(index, row, col)`` HU, in ``geometry``). See :class:`NoduleSignals`."""
    center_irc = geometry.xyz_to_irc_index(center_xyz_mm)
    if not bool(geometry.contains_irc(center_irc)):
        return NoduleSignals(outside=True)
    center = tuple(int(v) for v in center_irc)
    spacing = np.asarray(geometry.spacing_irc_mm, dtype=np.float64)
    lo, hi = qa_box(center, diameter_mm, spacing, hu.shape)
    crop = hu[box_slices(lo, hi)]
    local = tuple(c - a for c, a in zip(center, lo, strict=True))
    at_edge = [(lo[a] == 0, hi[a] == hu.shape[a]) for a in range(3)]
    near = crop[box_slices(*box_around(local, (1, 1, 1), crop.shape))]
    count, capped, elongation = _growth(crop, local, at_edge, spacing, threshold_hu)
    mask_d = _sphere_diameter(count, geometry.voxel_volume_mm3)
    ratio = mask_d / diameter_mm if diameter_mm else math.nan
    dense_crop = dense(crop, threshold_hu)
    blob = _blob(dense_crop, local, at_edge, spacing, geometry.voxel_volume_mm3)
    sub_voxel = geometry.xyz_to_irc(center_xyz_mm) - np.asarray(center, dtype=np.float64)
    fill, shell, offset, linearity, balance = _sphere(
        dense_crop, local, sub_voxel, spacing, 0.5 * (diameter_mm or 0.0)
    )
    bright_extent, bright_capped = _bright(crop, local, at_edge, spacing)
    return NoduleSignals(
        outside=False,
        center_hu=float(np.median(near)),
        outside_body=outside_body(hu, center),
        mask_diameter_mm=mask_d,
        diameter_ratio=ratio,
        capped_axes=capped,
        elongation=elongation,
        blob_distance_mm=blob[0],
        blob_offset_mm=blob[1],
        blob_diameter_mm=blob[2],
        blob_capped=blob[3],
        fill=fill,
        shell_fill=shell,
        fill_offset_mm=offset,
        linearity=linearity,
        shell_balance=balance,
        bright_extent_mm=bright_extent,
        bright_capped=bright_capped,
    )


def duplicate_of(
    centers_xyz_mm: np.ndarray, diameters_mm: np.ndarray, badness: np.ndarray
) -> np.ndarray:
    """For each annotation of one series, the index of the annotation it duplicates, or -1.

    Two annotations are a pair when their centers lie within one radius (the larger of the
    two, world mm) of each other. Of a pair, the one that fits its image worse (higher
    ``badness``; on a tie the later row) is called the duplicate, so the better copy stays
    unsuspected. ``centers_xyz_mm`` is ``(n, 3)``; missing diameters are NaN (never paired
    by size, only when the centers coincide within a millimetre).
    """
    n = len(centers_xyz_mm)
    out = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return out
    gaps = np.linalg.norm(centers_xyz_mm[:, None, :] - centers_xyz_mm[None, :, :], axis=2)
    radii = np.nan_to_num(0.5 * np.asarray(diameters_mm, dtype=np.float64), nan=1.0)
    reach = np.maximum(radii[:, None], radii[None, :])
    pairs = (gaps <= reach) & ~np.eye(n, dtype=bool)
    for i, j in zip(*np.nonzero(np.triu(pairs)), strict=True):
        worse = j if (badness[j], j) >= (badness[i], i) else i
        better = i if worse == j else j
        if out[worse] < 0:
            out[worse] = better
    return out
