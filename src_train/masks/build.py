"""Masks of a series' nodules: one record per nodule, the volume mask, and interactive updates.

Arrays are ``(index, row, col)`` = ``(z, y, x)``; world centers are ``(x, y, z)`` mm; thresholds
are Hounsfield units (HU). :func:`mask_nodule` runs a registered method (see
:mod:`src_train.masks.registry`) on one nodule and keeps how it was made in a
:class:`NoduleMask`; :func:`build_masks` ORs them into a volume, which for ``"grow"`` equals
"inside some box AND dense". :class:`MaskState` follows a threshold slider by recomputing only
the nodules' boxes.

A center voxel that is not dense is flagged (:data:`NOTE_CENTER_BELOW`) but the rule is applied
as written; a mask that ends up empty is flagged too (:data:`NOTE_EMPTY`), never hidden.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from src_train.ct import CtVolume
from src_train.errors import GeometryError
from src_train.luna import Nodule
from src_train.masks.boxes import Slices3, box_slices, union_box
from src_train.masks.density import DEFAULT_THRESHOLD_HU, check_threshold, dense
from src_train.masks.registry import (
    NOTE_CENTER_BELOW,
    NOTE_EMPTY,
    NOTE_OUTSIDE,
    REFERENCE_METHOD,
    GrowthStep,
    check_params,
    method_info,
)

log = logging.getLogger(__name__)

#: What to do with a nodule whose center lies outside the volume.
OutsidePolicy = Literal["raise", "skip"]


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
        return box_slices(self.box_lo_irc, self.box_hi_irc)

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
    full_params = check_params(info, params)
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
        return union_box([(r.box_lo_irc, r.box_hi_irc) for r in (*old, *new)])

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
        check_params(method_info(method), params)
        self.method = method
        self.params = dict(params)
        return self._recompute()
