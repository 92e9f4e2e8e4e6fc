"""The reviewed annotations as a LUNA16-style CSV (what other tools and ``lunaseg eval`` read).

Columns ``seriesuid,coordX,coordY,coordZ,diameter_mm`` (world mm) as in LUNA16's
``annotations.csv``, plus a ``review`` column (the nodule's latest verdict, empty when
unreviewed) that LUNA16 readers ignore. Rejected annotations are left out; additions are
included with the diameter the reviewer set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from src_train.atomic import write_csv_atomic
from src_train.luna import Nodule
from src_train.reviews.apply import pair_reviews
from src_train.reviews.book import ReviewBook

#: Default file name of the export, in ``DATA/reviews/``.
EXPORT_CSV = "annotations_reviewed.csv"
#: Its columns.
EXPORT_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "review")


def reviewed_annotation_rows(
    book: ReviewBook, nodules_by_series: Mapping[str, Sequence[Nodule]]
) -> list[dict[str, object]]:
    """One row per nodule of the reviewed ground truth, series in UID order."""
    rows: list[dict[str, object]] = []
    for uid in sorted(nodules_by_series):
        items, _problems = pair_reviews(nodules_by_series[uid], book.histories(uid))
        for item in items:
            if not item.kept:
                continue
            x, y, z = item.nodule.center_xyz_mm
            diameter = item.nodule.diameter_mm
            rows.append(
                {
                    "seriesuid": uid,
                    "coordX": x,
                    "coordY": y,
                    "coordZ": z,
                    "diameter_mm": "" if diameter is None else diameter,
                    "review": item.status,
                }
            )
    return rows


def export_reviewed_annotations(
    book: ReviewBook,
    nodules_by_series: Mapping[str, Sequence[Nodule]],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> tuple[Path, int]:
    """Write the reviewed annotations to ``path`` atomically; returns it and the row count.

    Raises :class:`OutputExistsError` when ``path`` exists and ``overwrite`` is False.
    """
    rows = reviewed_annotation_rows(book, nodules_by_series)
    return write_csv_atomic(path, rows, EXPORT_COLUMNS, overwrite=overwrite), len(rows)
