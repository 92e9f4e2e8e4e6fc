"""The reviews of one data set, read once: rows per series, label volumes, fingerprints.

:class:`ReviewBook` is what masks, the training cache, scoring and the viewer ask about reviews.
It reads ``DATA/reviews/reviews.csv`` (tolerant: bad rows become :attr:`ReviewBook.problems`),
drops rows of series that are not on disk (a problem line each), groups the rest per nodule
(:func:`~src_train.reviews.rows.nodule_histories`) and loads label volumes on demand, checked
against the CT's geometry.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from src_train.ct import Geometry
from src_train.luna import LunaFolder
from src_train.reviews.files import (
    REVIEWS_CSV,
    ReviewsRead,
    labels_file_name,
    read_reviews,
    reviews_dir,
)
from src_train.reviews.labels import load_labels
from src_train.reviews.rows import CORRECTED, NoduleHistory, Review, nodule_histories


class ReviewBook:
    """The verdicts and corrected voxels of one data set (``DATA/reviews/``).

    Args:
        folder: the reviews folder (``DATA/reviews``); it may not exist yet (no review).
        series_on_disk: UIDs of the series present; rows of other series are dropped with a
            problem line. None: no such check (e.g. scoring an annotation file alone).
    """

    def __init__(
        self, folder: str | os.PathLike[str], series_on_disk: Iterable[str] | None = None
    ) -> None:
        self.dir = Path(folder)
        self._on_disk = None if series_on_disk is None else set(series_on_disk)
        self._labels: dict[str, tuple[tuple[tuple[int, int], Geometry], np.ndarray | None]] = {}
        self.rows: list[Review] = []
        self.problems: list[str] = []
        self._histories: dict[str, list[NoduleHistory]] = {}
        self.reload()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes re-read label volumes when they need them; never pickle voxels.
        state = self.__dict__.copy()
        state["_labels"] = {}
        return state

    @classmethod
    def for_folder(cls, folder: LunaFolder) -> ReviewBook:
        """The book of a data folder (``folder.root/reviews``), checked against its series."""
        return cls(reviews_dir(folder.root), folder.series_uids)

    @property
    def csv_path(self) -> Path:
        """``reviews.csv`` of this book."""
        return self.dir / REVIEWS_CSV

    def labels_path(self, series_uid: str) -> Path:
        """The label volume of a series: ``<seriesuid>_labels.mhd``."""
        return self.dir / labels_file_name(series_uid)

    # -- rows ---------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read ``reviews.csv`` again (other windows may have appended to it)."""
        self.set_rows(read_reviews(self.csv_path))

    def set_rows(self, read: ReviewsRead) -> None:
        """Use the rows of a file just read (e.g. what an append returned)."""
        rows, problems = list(read.rows), list(read.problems)
        if self._on_disk is not None:
            unknown = [r for r in rows if r.series_uid not in self._on_disk]
            for row in unknown:
                problems.append(
                    f"{read.path}, {row.where()}: series {row.series_uid} is not on disk "
                    "(no subset*/<uid>.mhd); row not applied. Add the series or delete the row."
                )
            rows = [r for r in rows if r.series_uid in self._on_disk]
        self.rows, self.problems = rows, problems
        self._histories = nodule_histories(rows)

    @property
    def series_uids(self) -> list[str]:
        """Series with at least one review row, sorted."""
        return sorted(self._histories)

    def histories(self, series_uid: str) -> list[NoduleHistory]:
        """Every reviewed nodule of a series (latest row last in each), in first-row order."""
        return list(self._histories.get(series_uid, []))

    # -- label volumes ------------------------------------------------------------------------
    def labels(self, series_uid: str, geometry: Geometry) -> np.ndarray | None:
        """The series' label volume (uint16 ``(index, row, col)``) or None when it has none.

        Re-read only when the file changed. Raises :class:`GeometryError` when its geometry is
        not ``geometry`` (the CT's).
        """
        path = self.labels_path(series_uid)
        key = (_stamp(path), geometry)
        cached = self._labels.get(series_uid)
        if cached is not None and cached[0] == key:
            return cached[1]
        volume = load_labels(path, geometry)
        self._labels[series_uid] = (key, volume)
        return volume

    def fingerprint(self, series_uid: str) -> dict[str, Any]:
        """What a series' reviewed masks depend on: each nodule's latest verdict and, when one
        is corrected, the label volume's size and modification time. Other series' reviews do
        not enter, so a changed review invalidates exactly its series."""
        histories = self.histories(series_uid)
        latest = [
            [list(h.center_xyz_mm), h.latest.status, h.latest.label, h.latest.diameter_mm]
            for h in histories
        ]
        corrected = any(h.latest.status == CORRECTED for h in histories)
        return {
            "reviews": latest,
            "labels": list(_stamp(self.labels_path(series_uid))) if corrected else None,
        }


def _stamp(path: Path) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a file (``.mhd`` header and its data), ``(0, 0)`` when absent."""
    size = mtime = 0
    for part in (path, path.with_suffix(".zraw"), path.with_suffix(".raw")):
        try:
            info = part.stat()
        except OSError:
            continue
        size += info.st_size
        mtime = max(mtime, info.st_mtime_ns)
    return size, mtime
