"""The Mask QA widget's state and actions, without Qt or napari (tests drive it headless).

:class:`MaskQAModel` holds one series (CT, annotated nodules, true shapes when known) and its
:class:`~src_train.masks.MaskState` (masks at a method and threshold); it answers what the
widget shows (the nodule table with each method's Dice against the true shapes) and writes
the mask and the table (``nodules.csv`` in the core's format,
:func:`src_train.masks.table.write_nodule_table`). The widget
(:mod:`napari_lunaseg._mask_qa`) turns this into layers, a table and a growth replay.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src_train.ct import CtVolume, save_volume
from src_train.errors import LunaSegError
from src_train.luna import Nodule
from src_train.masks import (
    DEFAULT_THRESHOLD_HU,
    REFERENCE_METHOD,
    MaskState,
    NoduleMask,
    SeriesTruth,
    available_methods,
    build_masks,
)
from src_train.masks.boxes import Slices3
from src_train.masks.table import write_nodule_table
from src_train.reviews import same_nodule_index

#: Nodule table columns before the per-method Dice columns (the rest follow them).
TABLE_HEADERS_FIRST = ("#", "diameter (mm)", "voxels")
TABLE_HEADERS_LAST = (
    "radius i,r,c",
    "center i,r,c (voxel)",
    "center x,y,z (mm)",
    "box lo..hi (i,r,c)",
    "notes",
)


class MaskQAModel:
    """One series' masks, their method and threshold, and each method's Dice."""

    def __init__(
        self, method: str = REFERENCE_METHOD, threshold_hu: float = DEFAULT_THRESHOLD_HU
    ) -> None:
        self.method = method
        self.threshold_hu = float(threshold_hu)
        self.ct: CtVolume | None = None
        self.state: MaskState | None = None
        self.truth: SeriesTruth | None = None
        #: Per method, each nodule's Dice against its true shape (None: no true shape).
        self.dice: dict[str, list[float | None]] = {}

    def load(
        self,
        ct: CtVolume | None,
        nodules: Sequence[Nodule] = (),
        truth: SeriesTruth | None = None,
    ) -> None:
        """Show ``ct`` with masks grown from ``nodules`` (none: no masks); raises
        :class:`LunaSegError` when they cannot be grown (the series stays without masks)."""
        self.ct, self.truth, self.state, self.dice = ct, truth, None, {}
        if ct is None or not nodules:
            return
        self.state = MaskState(
            ct,
            list(nodules),
            method=self.method,
            threshold_hu=self.threshold_hu,
            on_outside="skip",
        )

    @property
    def records(self) -> list[NoduleMask]:
        """The nodules' masks (empty without a series)."""
        return list(self.state.records) if self.state is not None else []

    def set_threshold(self, threshold_hu: float) -> tuple[list[Slices3], bool]:
        """Regrow the masks at ``threshold_hu`` (HU). Returns the boxes whose voxels may have
        changed (before and after) and whether anything changed."""
        self.threshold_hu = float(threshold_hu)
        if self.state is None:
            return [], False
        old = [rec.box_slices for rec in self.state.records if not rec.skipped]
        region = self.state.set_threshold(self.threshold_hu)
        new = [rec.box_slices for rec in self.state.records if not rec.skipped]
        return old + new, region is not None

    def set_method(self, method: str) -> None:
        """Grow the masks with ``method`` (one of ``available_methods()``)."""
        if self.state is not None:
            self.state.set_method(method)
        self.method = method

    def update_dice(self) -> dict[str, list[float | None]]:
        """Each method's Dice per nodule against the true shapes (the core's pairing and
        Dice, the numbers ``lunaseg mask-report`` prints); empty without true shapes."""
        self.dice = {}
        if self.truth is None or self.state is None or self.ct is None:
            return self.dice
        for name in available_methods():
            if name == self.state.method:
                records = self.state.records
            else:
                _, records = build_masks(
                    self.ct, self.state.nodules, self.state.threshold_hu, name, on_outside="skip"
                )
            self.dice[name] = [self.truth.record_dice(rec) for rec in records]
        return self.dice

    def table_headers(self) -> list[str]:
        """Column names of :meth:`table_rows`."""
        return [*TABLE_HEADERS_FIRST, *(f"Dice {n}" for n in self.dice), *TABLE_HEADERS_LAST]

    def table_rows(self) -> list[list[Any]]:
        """The nodule table as rows of values (one per nodule)."""
        rows = []
        for k, rec in enumerate(self.records):
            x, y, z = rec.center_xyz_mm
            diameter = rec.nodule.diameter_mm
            row: list[Any] = [k + 1, "" if diameter is None else f"{diameter:.1f}", rec.voxel_count]
            for name in self.dice:
                value = self.dice[name][k]
                row.append("" if value is None else f"{value:.3f}")
            row += [
                ", ".join(map(str, rec.radius_irc)),
                ", ".join(map(str, rec.center_irc)),
                f"{x:.1f}, {y:.1f}, {z:.1f}",
                f"{','.join(map(str, rec.box_lo_irc))}..{','.join(map(str, rec.box_hi_irc))}",
                "; ".join(rec.notes),
            ]
            rows.append(row)
        return rows

    def index_of(self, center_xyz_mm: Sequence[float]) -> int | None:
        """The table row of the nodule at ``center_xyz_mm`` (world mm); None: none of them."""
        return same_nodule_index([r.nodule.center_xyz_mm for r in self.records], center_xyz_mm)

    def status_line(self) -> str:
        """E.g. ``3 nodule(s), 1,234 mask voxels at -700 HU (grow)``."""
        if self.state is None:
            return ""
        voxels = int(np.count_nonzero(self.state.mask))
        return (
            f"{len(self.state.records)} nodule(s), {voxels:,} mask voxels at "
            f"{self.state.threshold_hu:.0f} HU ({self.state.method})"
        )

    def export_mask(self, path: str | os.PathLike[str]) -> Path:
        """Write the mask (uint8, the CT's geometry) to ``.mhd``/``.nii.gz``/..."""
        if self.state is None or self.ct is None:
            raise LunaSegError("No mask to save: open a series with annotations first.")
        dest = Path(path)
        return save_volume(
            self.state.mask.view(np.uint8),
            self.ct.geometry,
            dest,
            compress=dest.name.lower().endswith(".gz"),
            overwrite=True,
        )

    def export_table(self, path: str | os.PathLike[str]) -> Path:
        """Write the nodule table as ``nodules.csv`` (the format ``lunaseg mask`` writes),
        with one ``dice_<method>`` column per method when true shapes are known."""
        if self.state is None:
            raise LunaSegError("No nodule table to save: open a series with annotations first.")
        extra = {f"dice_{name}": values for name, values in self.dice.items()}
        return write_nodule_table(path, self.state.records, extra)
