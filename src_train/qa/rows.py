"""Which rows QA scores, with their columns exactly as the annotation file gives them.

Without reviews: every row of the annotation file (``annotations.csv``, or the malignancy file
when present) whose series is on disk. With reviews (``DATA/reviews/reviews.csv`` holds rows):
the reviewed list, as ``lunaseg review`` exports it -- rejected annotations left out, the
reviewers' additions in (their columns made from their center and diameter, other columns
empty). Centers are world ``(x, y, z)`` mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src_train.luna import LunaFolder, Nodule, check_annotated_folder
from src_train.luna.table import CsvTable
from src_train.reviews import ReviewBook, pair_reviews

#: The columns every annotation file has (LUNA16's), in order.
LUNA_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


@dataclass(frozen=True)
class AnnotationRow:
    """One row QA scores.

    Attributes:
        nodule: the annotation as a record (``row`` = its line in the file; 0 for an addition).
        values: the row's values by column, exactly as the file gives them.
        review: its latest verdict (``""``: unreviewed or no reviews).
        added: True for a reviewer's addition (no row of the annotation file).
    """

    nodule: Nodule
    values: dict[str, str]
    review: str = ""
    added: bool = False


@dataclass
class AnnotationList:
    """The rows QA scores and where they came from.

    Attributes:
        columns: the annotation file's header, in order.
        rows: the rows, in file order (additions after the annotations of their series).
        source: what was read (``annotations.csv``, or it and ``reviews.csv``).
        not_on_disk: rows left out because their series is not on disk.
        rejected: annotations left out because a reviewer rejected them.
    """

    columns: list[str]
    rows: list[AnnotationRow]
    source: str
    not_on_disk: int = 0
    rejected: int = 0


def _raw_rows(folder: LunaFolder) -> tuple[list[str], dict[int, dict[str, str]]]:
    check_annotated_folder(folder)  # series on disk and an annotation file, or one error
    table = CsvTable(Path(str(folder.annotations_path)), LUNA_COLUMNS[:4])
    raw = {}
    for line, fields in table:
        padded = list(fields) + [""] * (len(table.header) - len(fields))
        raw[line] = dict(zip(table.header, padded, strict=False))
    return table.header, raw


def _addition_values(columns: list[str], nodule: Nodule) -> dict[str, str]:
    x, y, z = nodule.center_xyz_mm
    d = nodule.diameter_mm
    known = {
        "seriesuid": nodule.series_uid,
        "coordX": f"{x:.4f}",
        "coordY": f"{y:.4f}",
        "coordZ": f"{z:.4f}",
        "diameter_mm": "" if d is None else f"{d:.3f}",
    }
    return {c: known.get(c, "") for c in columns}


def annotation_rows(folder: LunaFolder, book: ReviewBook | None = None) -> AnnotationList:
    """The rows QA scores (see the module docstring); ``book`` None or empty: no reviews.

    Raises :class:`SeriesNotFoundError` (no series on disk) or :class:`AnnotationError` (no
    annotation file, or a malformed row) naming what is missing.
    """
    columns, raw = _raw_rows(folder)
    by_series = folder.nodules_by_series
    on_disk = sum(len(v) for v in by_series.values())
    total = len(raw)
    reviewed = book is not None and bool(book.rows)
    source = str(folder.annotations_path)
    rows: list[AnnotationRow] = []
    rejected = 0
    for uid in sorted(by_series):
        if not reviewed or book is None:
            rows += [AnnotationRow(n, raw[n.row]) for n in by_series[uid]]
            continue
        items, _problems = pair_reviews(by_series[uid], book.histories(uid))
        for item in items:
            if not item.kept:
                rejected += int(not item.added)
                continue
            values = _addition_values(columns, item.nodule) if item.added else raw[item.nodule.row]
            rows.append(AnnotationRow(item.nodule, values, item.status, item.added))
    if reviewed and book is not None:
        source += f" with the verdicts of {book.csv_path}"
    return AnnotationList(columns, rows, source, total - on_disk, rejected)
