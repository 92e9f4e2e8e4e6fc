"""``DATA/reviews/<seriesuid>_labels.mhd``: the voxels of corrected nodules.

One uint16 volume per series in the CT's geometry; a ``corrected`` row's nodule is exactly the
voxels equal to its ``label``. A nodule keeps its label across corrections (a new correction
replaces its voxels); a new nodule gets the next free label. Writes go through
:func:`~src_train.ct.save_volume` (atomic) and are made under the reviews lock by
:mod:`src_train.reviews.record`, which also keeps what a correction replaced so an undo can put
it back (:class:`LabelPatch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from src_train.ct import Geometry, load_ct, save_volume
from src_train.errors import GeometryError, SeriesReadError
from src_train.masks.boxes import Slices3, box_slices, union_box

#: Pixel type of label volumes.
LABEL_DTYPE = np.uint16


def load_labels(path: str | os.PathLike[str], geometry: Geometry) -> np.ndarray | None:
    """The label volume at ``path`` (uint16, ``(index, row, col)``), None when there is none.

    Raises:
        GeometryError: when its geometry differs from ``geometry`` (the CT's): nothing of it
            may be applied, the message names both and the fix.
        SeriesReadError: when it cannot be read.
    """
    src = Path(path)
    if not src.is_file():
        return None
    volume = load_ct(src)
    if volume.geometry != geometry:
        raise GeometryError(
            f"{src}: its geometry (shape irc {volume.geometry.shape_irc}, origin "
            f"{volume.geometry.origin_xyz_mm} mm, spacing {volume.geometry.spacing_xyz_mm} mm, "
            f"direction {volume.geometry.direction}) does not match its CT (shape irc "
            f"{geometry.shape_irc}, origin {geometry.origin_xyz_mm} mm, spacing "
            f"{geometry.spacing_xyz_mm} mm, direction {geometry.direction}); none of this "
            "series' reviews are applied. Move the file away (its corrections are lost) or "
            "write it again in the CT's geometry."
        )
    if np.any(volume.hu < 0):
        raise SeriesReadError(f"{src} holds negative values; label volumes are uint16.")
    return volume.hu.astype(LABEL_DTYPE, copy=False)


def label_boxes(labels: np.ndarray) -> dict[int, Slices3]:
    """Bounding slices ``(index, row, col)`` of every label present in a label volume."""
    found = ndimage.find_objects(np.asarray(labels).astype(np.int32, copy=False))
    return {k + 1: box for k, box in enumerate(found) if box is not None}


@dataclass(frozen=True)
class LabelPatch:
    """What one correction changed in a label volume: enough to take it back.

    Attributes:
        lo_irc: first voxel of the changed box (inclusive), ``(index, row, col)``.
        before: the box's values before the change (uint16).
        after: the box's values after it.
    """

    lo_irc: tuple[int, int, int]
    before: np.ndarray
    after: np.ndarray

    @property
    def slices(self) -> Slices3:
        """The changed box as array slices."""
        hi = tuple(a + n for a, n in zip(self.lo_irc, self.before.shape, strict=True))
        return box_slices(self.lo_irc, hi)


def paint_label(volume: np.ndarray, label: int, voxels: np.ndarray) -> LabelPatch | None:
    """Make ``label``'s voxels exactly ``voxels`` (bool, the volume's shape), in place.

    The label's old voxels are cleared; the new ones take ``label`` even where another label
    was (the reviewer painted them as this nodule). Returns the patch (None: no voxel changed).
    """
    boxes = []
    old = label_boxes(volume == label).get(1)
    new = label_boxes(voxels).get(1)
    for box in (old, new):
        if box is not None:
            boxes.append(([s.start for s in box], [s.stop for s in box]))
    region = union_box(boxes)
    if region is None:
        return None
    before = volume[region].copy()
    part = volume[region]
    part[part == label] = 0
    part[voxels[region]] = label
    if np.array_equal(before, part):
        return None
    return LabelPatch(tuple(s.start for s in region), before, part.copy())  # type: ignore[arg-type]


def revert_patch(volume: np.ndarray, patch: LabelPatch) -> None:
    """Undo ``patch`` in place where the volume still holds what the patch wrote.

    Voxels changed since (by another window) keep their newer value.
    """
    part = volume[patch.slices]
    ours = (part == patch.after) & (patch.before != patch.after)
    part[ours] = patch.before[ours]


def save_labels(volume: np.ndarray, geometry: Geometry, path: str | os.PathLike[str]) -> Path:
    """Write a label volume (uint16, compressed, ``geometry``) atomically."""
    return save_volume(
        np.asarray(volume, dtype=LABEL_DTYPE), geometry, path, compress=True, overwrite=True
    )
