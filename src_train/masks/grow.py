"""The SPEC's reference rule (method ``"grow"``): bounding-box growth from the annotated center.

From the nodule's center voxel, grow a radius along each axis separately (index, then row, then
column). The radius starts at :data:`GROW_START_RADIUS` and increases while the voxels at
``center + r`` and ``center - r`` along that axis are both dense (strictly above the threshold,
see :mod:`.density`); it stops at the first radius where either side is not. The box is
``center +- radius`` on each axis (inclusive) and the nodule's mask is "inside its box and dense".

Volume edges: a voxel outside the volume counts as *not dense*, so growth stops at the edge
(recorded as ``stopped_by="edge"``) and the box is clipped to the volume. No index ever wraps
around, so a nodule on the first or last slice gets a correct, non-empty box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src_train.ct import Geometry
from src_train.luna import Nodule
from src_train.masks.boxes import box_around, box_slices
from src_train.masks.density import dense
from src_train.masks.registry import (
    NOTE_EDGE,
    REFERENCE_METHOD,
    GrowthStep,
    MethodResult,
    register_method,
)

#: The SPEC's first radius tested by bounding-box growth, in voxels.
GROW_START_RADIUS = 2

#: Axis names in array order, for logs, records and tables.
AXIS_NAMES = ("index", "row", "col")


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
    local = dense(hu[box_slices(lo, hi)], threshold_hu)
    notes = [NOTE_EDGE] if any(s.stopped_by == "edge" for s in steps) else []
    return MethodResult(lo, hi, local, tuple(radii), steps, notes)  # type: ignore[arg-type]


register_method(
    REFERENCE_METHOD,
    method_grow,
    "SPEC reference: per-axis radius growth from the center, mask = box AND dense",
)
