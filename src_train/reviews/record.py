"""Recording verdicts: one appended row (and for a correction, the label volume), and undo.

Every write takes the reviews lock (:func:`~src_train.reviews.files.reviews_lock`), reads the
current file inside it (another window may have appended), writes, and returns the file as read
back with an :class:`UndoEntry`. Undo appends too: the nodule's previous row again, or an
``undone`` row when it had none; a correction's voxels are put back where nobody changed them
since. History in ``reviews.csv`` is never rewritten. A correction is also painted into the
reviewer's own label volume (``by_reviewer/<name>/``), which only agreement reads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from src_train.ct import Geometry
from src_train.errors import ConfigError, GeometryError
from src_train.reviews.files import (
    LABEL_MAX,
    REVIEWS_CSV,
    ReviewsRead,
    append_reviews,
    labels_file_name,
    read_reviews,
    reviewer_labels_path,
    reviews_lock,
)
from src_train.reviews.labels import (
    LABEL_DTYPE,
    LabelPatch,
    load_labels,
    paint_label,
    revert_patch,
    save_labels,
)
from src_train.reviews.rows import (
    CORRECTED,
    UNDONE,
    VERDICTS,
    Review,
    find_history,
    nodule_histories,
    utc_now,
)


@dataclass(frozen=True)
class UndoEntry:
    """What :func:`undo` needs to take one verdict back.

    Attributes:
        row: the row that was appended.
        previous: the nodule's latest row before it (None: it was unreviewed or new).
        patch: for a correction, what changed in the label volume (else None).
        geometry: the CT's geometry (for a correction).
        reviewer_patch: for a correction, what changed in the reviewer's own label volume.
    """

    row: Review
    previous: Review | None
    patch: LabelPatch | None = None
    geometry: Geometry | None = None
    reviewer_patch: LabelPatch | None = None


def _check(reviewer: str, center_xyz_mm: Sequence[float]) -> tuple[float, float, float]:
    if not reviewer.strip():
        raise ConfigError("Give the reviewer's name first: every verdict records who gave it.")
    center = tuple(float(v) for v in center_xyz_mm)
    if len(center) != 3 or not all(math.isfinite(v) for v in center):
        raise GeometryError(f"A nodule center needs 3 finite world mm values; got {center}.")
    return center  # type: ignore[return-value]


def _previous(rows: Sequence[Review], series_uid: str, center: Sequence[float]) -> Review | None:
    history = find_history(nodule_histories(rows).get(series_uid, []), center)
    return None if history is None else history.latest


def record_verdict(
    folder: str | os.PathLike[str],
    series_uid: str,
    center_xyz_mm: Sequence[float],
    diameter_mm: float | None,
    status: str,
    reviewer: str,
    note: str = "",
) -> tuple[UndoEntry, ReviewsRead]:
    """Append one verdict (``accepted``, ``rejected`` or ``added``) to ``folder/reviews.csv``.

    ``center_xyz_mm`` is the nodule's annotated center (for ``added``: the spot the reviewer
    chose), world ``(x, y, z)`` mm; ``diameter_mm`` its diameter (for ``added``: the diameter
    to grow it with). Corrections go through :func:`record_correction`.
    """
    if status not in VERDICTS or status == CORRECTED:
        raise ConfigError(
            f"Unknown verdict {status!r}; record one of accepted, rejected, added here "
            "(a correction with record_correction)."
        )
    center = _check(reviewer, center_xyz_mm)
    row = Review(series_uid, center, diameter_mm, status, 0, reviewer.strip(), utc_now(), note)
    path = Path(folder) / REVIEWS_CSV
    with reviews_lock(folder):
        previous = _previous(read_reviews(path).rows, series_uid, center)
        read = append_reviews(path, [row])
    return UndoEntry(row, previous), read


def record_correction(
    folder: str | os.PathLike[str],
    geometry: Geometry,
    series_uid: str,
    center_xyz_mm: Sequence[float],
    diameter_mm: float | None,
    voxels: np.ndarray,
    reviewer: str,
    note: str = "",
) -> tuple[UndoEntry, ReviewsRead]:
    """Save a nodule's corrected voxels and append its ``corrected`` row.

    ``voxels`` is a bool volume ``(index, row, col)`` in ``geometry`` (the CT's): exactly the
    nodule's voxels. The nodule keeps the label of its earlier corrections, or gets the next
    free one; its old voxels are replaced in ``<seriesuid>_labels.mhd`` (made in ``geometry``
    if missing; one that does not match ``geometry`` raises :class:`GeometryError` and nothing
    is written). The volume is written before the row, so no row names voxels not on disk.
    """
    center = _check(reviewer, center_xyz_mm)
    mask = np.asarray(voxels, dtype=bool)
    if mask.shape != geometry.shape_irc:
        raise GeometryError(
            f"The corrected voxels have shape {mask.shape}; the CT's is {geometry.shape_irc}."
        )
    if not mask.any():
        raise ConfigError(
            "The correction has no voxel: paint the nodule's voxels, or reject the nodule if "
            "it is none."
        )
    path = Path(folder) / REVIEWS_CSV
    labels_path = Path(folder) / labels_file_name(series_uid)
    with reviews_lock(folder):
        rows = read_reviews(path).rows
        history = find_history(nodule_histories(rows).get(series_uid, []), center)
        volume = load_labels(labels_path, geometry)
        if volume is None:
            volume = np.zeros(geometry.shape_irc, dtype=LABEL_DTYPE)
        label = history.label if history is not None and history.label else 0
        if not label:
            used = [r.label for r in rows if r.series_uid == series_uid]
            label = max([int(volume.max()), *used]) + 1
            if label > LABEL_MAX:
                raise ConfigError(
                    f"{labels_path} has used all {LABEL_MAX} labels of a uint16 volume."
                )
        patch = paint_label(volume, label, mask)
        if patch is not None:
            save_labels(volume, geometry, labels_path)
        own_path = reviewer_labels_path(folder, reviewer, series_uid)
        own = load_labels(own_path, geometry)
        own = np.zeros(geometry.shape_irc, dtype=LABEL_DTYPE) if own is None else own
        own_patch = paint_label(own, label, mask)
        if own_patch is not None:
            save_labels(own, geometry, own_path)
        row = Review(
            series_uid, center, diameter_mm, CORRECTED, label, reviewer.strip(), utc_now(), note
        )
        read = append_reviews(path, [row])
    previous = None if history is None else history.latest
    return UndoEntry(row, previous, patch, geometry, own_patch), read


def undo(folder: str | os.PathLike[str], entry: UndoEntry) -> ReviewsRead:
    """Take back the verdict of ``entry``: append the nodule's previous row again (or an
    ``undone`` row when it had none) and, for a correction, restore the label volume's voxels
    that nobody changed since."""
    path = Path(folder) / REVIEWS_CSV
    row = entry.row
    with reviews_lock(folder):
        if entry.patch is not None and entry.geometry is not None:
            labels_path = Path(folder) / labels_file_name(row.series_uid)
            volume = load_labels(labels_path, entry.geometry)
            if volume is not None:
                revert_patch(volume, entry.patch)
                save_labels(volume, entry.geometry, labels_path)
        if entry.reviewer_patch is not None and entry.geometry is not None:
            own_path = reviewer_labels_path(folder, row.reviewer, row.series_uid)
            own = load_labels(own_path, entry.geometry)
            if own is not None:
                revert_patch(own, entry.reviewer_patch)
                save_labels(own, entry.geometry, own_path)
        if entry.previous is not None:
            restored = replace(entry.previous, time_utc=utc_now(), line=0)
        else:
            restored = replace(row, status=UNDONE, label=0, time_utc=utc_now(), note="undo", line=0)
        return append_reviews(path, [restored])
