"""LUNA16's files for scoring: read submissions and series lists. Excluded findings are read
by :func:`src_train.luna.read_excluded`; the FROC curve is written by :mod:`.report`.

Every center is in world ``(x, y, z)`` millimetres. Bad rows raise :class:`AnnotationError`
naming the file, the line and the column. Scoring itself is :mod:`src_train.evaluate`, which
re-exports everything public here.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from src_train.errors import AnnotationError
from src_train.luna.table import CsvTable
from src_train.records.infer_files import SERIES_LIST_NAME

log = logging.getLogger(__name__)

#: Columns a LUNA16 submission file must name (in any order; more columns may follow).
SUBMISSION_COLUMNS: tuple[str, ...] = ("seriesuid", "coordX", "coordY", "coordZ", "probability")


@dataclass(frozen=True)
class Candidate:
    """One candidate mark of a submission.

    Attributes:
        series_uid: the scan it belongs to.
        center_xyz_mm: center in world ``(x, y, z)`` mm.
        probability: score used for ranking (higher = more likely a nodule).
        row: 1-based line in its CSV file (0 when made in memory).
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    probability: float
    row: int = 0


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_submission(path: str | os.PathLike[str]) -> list[Candidate]:
    """Read a LUNA16 submission CSV (``seriesuid,coordX,coordY,coordZ,probability``).

    Columns are found by header name, in any order, as the official script does; extra columns
    are ignored. A missing, empty or non-finite coordinate or probability raises
    :class:`AnnotationError` naming the file, the line and the column
    (:class:`~src_train.luna.table.CsvTable`, as every LUNA16 CSV is read).
    """
    src = Path(path)
    if not src.is_file():
        raise AnnotationError(
            f"{src} does not exist; pass the candidates CSV 'lunaseg infer' wrote."
        )
    table = CsvTable(src, SUBMISSION_COLUMNS)
    return [
        Candidate(
            table.uid(line, fields),
            table.center(line, fields),
            table.number(line, fields, "probability"),
            line,
        )
        for line, fields in table
    ]


def read_series_list(path: str | os.PathLike[str]) -> list[str]:
    """Series UIDs, one per line (first column; a ``seriesuid`` header line is skipped)."""
    src = Path(path)
    if not src.is_file():
        raise AnnotationError(f"{src} does not exist; pass a file with one series UID per line.")
    uids: list[str] = []
    with src.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if row and row[0].strip() and row[0].strip().lower() != "seriesuid":
                uids.append(row[0].strip())
    if len(set(uids)) < len(uids):
        log.warning(
            "%s lists %d series more than once; each is scored once",
            src,
            len(uids) - len(set(uids)),
        )
    return uids


def find_series_list(candidates_path: str | os.PathLike[str]) -> Path | None:
    """The series list ``lunaseg infer`` writes beside its candidates, when present."""
    path = Path(candidates_path).parent / SERIES_LIST_NAME
    return path if path.is_file() else None
