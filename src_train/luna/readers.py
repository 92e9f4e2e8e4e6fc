"""The LUNA16 CSV files as records: ``annotations.csv`` (or the malignancy file),
``annotations_excluded.csv``, ``candidates.csv`` and a synthetic data set's
``truth/true_nodules.csv``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from src_train.errors import AnnotationError
from src_train.luna.records import TRUE_NODULE_KINDS, UNKNOWN_DIAMETER_MM, Nodule, TrueNodule
from src_train.luna.table import COORD_COLUMNS, CsvProblem, CsvTable, RowError, skip_or_raise

log = logging.getLogger(__name__)

_TRUE_VALUES = {"true", "1", "yes", "y", "t"}
_FALSE_VALUES = {"false", "0", "no", "n", "f"}
_MISSING_VALUES = {"", "nan", "na", "none", "null"}


def _optional_diameter(table: CsvTable, line: int, fields: list[str]) -> float | None:
    if "diameter_mm" not in table.index:
        return None
    # A row too short to hold the column is malformed (table.get says so); an empty field is not.
    text = table.get(line, fields, "diameter_mm") or ""
    if text.lower() in _MISSING_VALUES:
        return None
    value = table.number(line, fields, "diameter_mm")
    if value < 0:
        raise RowError(
            table.path,
            line,
            f"diameter_mm is {text!r}; give a non-negative number "
            "of millimetres or leave it empty.",
        )
    return value if value > 0 else None


def _optional_bool(table: CsvTable, line: int, fields: list[str], column: str) -> bool | None:
    if column not in table.index:
        return None
    text = (table.get(line, fields, column) or "").lower()
    if text in _MISSING_VALUES:
        return None
    if text in _TRUE_VALUES:
        return True
    if text in _FALSE_VALUES:
        return False
    raise RowError(table.path, line, f"{column} is {text!r}; use True or False.")


def _refuse_without_diameter(table: CsvTable) -> None:
    if "diameter_mm" not in table.index:
        raise AnnotationError(
            f"{table.path} has no diameter_mm column, which scoring needs: a mark hits a "
            "nodule within its radius. Add the column (mm); a nodule whose field is empty is "
            f"scored as {UNKNOWN_DIAMETER_MM:g} mm, as LUNA16 scores an unknown size."
        )


def require_diameter_column(path: str | os.PathLike[str]) -> None:
    """Refuse (:class:`AnnotationError`) an annotation file without a ``diameter_mm`` column,
    reading its header only: scoring needs every nodule's size or LUNA16's unknown-size rule."""
    _refuse_without_diameter(CsvTable(Path(path), ("seriesuid", *COORD_COLUMNS)))


def warn_unknown_diameters(path: Path, nodules: Sequence[Nodule]) -> None:
    """One warning line counting the nodules of ``path`` scored at the unknown-size rule."""
    unknown = sum(n.diameter_mm is None for n in nodules)
    if unknown:
        log.warning(
            "%s: %d of %d nodules have no diameter; scored as %g mm (LUNA16's rule)",
            path,
            unknown,
            len(nodules),
            UNKNOWN_DIAMETER_MM,
        )


def read_annotations(
    path: str | os.PathLike[str],
    *,
    skipped: list[CsvProblem] | None = None,
    require_diameter: bool = False,
) -> list[Nodule]:
    """Parse ``annotations.csv`` or ``annotations_with_malignancy.csv``.

    Needs the columns ``seriesuid,coordX,coordY,coordZ`` (world ``(x, y, z)`` mm);
    ``diameter_mm`` (mm) and ``mal_bool`` are optional (missing or empty -> None). Extra
    columns (``mal_details``, bounding boxes) are ignored. Rows keep file order.

    Args:
        path: the CSV file.
        skipped: lenient reading (the viewer's): a malformed row is passed over and its
            :class:`CsvProblem` (file, line, reason) appended here. Without it (every
            command), the first malformed row raises. A file without the needed header
            raises either way.
        require_diameter: reading for scoring: a file without a ``diameter_mm`` column is
            refused (every nodule's hit radius would be a guess); an empty field in the
            column is a nodule of unknown size (:data:`UNKNOWN_DIAMETER_MM`, counted in a
            warning).

    Raises:
        AnnotationError: naming the file and line of a malformed row.
    """
    table = CsvTable(Path(path), ("seriesuid", *COORD_COLUMNS), skipped)
    if require_diameter:
        _refuse_without_diameter(table)
    if "diameter_mm" not in table.index:
        log.warning(
            "%s has no diameter_mm column: every nodule's size is unknown, so the mask methods "
            "that use it (ball, region) fall back to the reference rule (grow). Add the column "
            "(mm) if the sizes are known.",
            table.path,
        )
    nodules = []
    for line, fields in table:
        try:
            nodule = Nodule(
                series_uid=table.uid(line, fields),
                center_xyz_mm=table.center(line, fields),
                diameter_mm=_optional_diameter(table, line, fields),
                is_nodule=True,
                malignant=_optional_bool(table, line, fields, "mal_bool"),
                row=line,
            )
        except RowError as exc:
            skip_or_raise(exc, skipped, table.path)
            continue
        nodules.append(nodule)
    if require_diameter:
        warn_unknown_diameters(table.path, nodules)
    log.debug("read %d annotations from %s", len(nodules), path)
    return nodules


def read_candidates(path: str | os.PathLike[str]) -> list[Nodule]:
    """Parse ``candidates.csv`` (``seriesuid,coordX,coordY,coordZ,class``; world mm).

    ``class`` 1 -> ``is_nodule=True``, 0 -> False; ``diameter_mm`` is None unless the file has
    such a column.

    Raises:
        AnnotationError: naming the file and line of a malformed row.
    """
    table = CsvTable(Path(path), ("seriesuid", *COORD_COLUMNS, "class"))
    candidates = []
    for line, fields in table:
        label = table.get(line, fields, "class") or ""
        if label not in ("0", "1"):
            raise RowError(table.path, line, f"class is {label!r}; use 1 (nodule) or 0 (not).")
        candidates.append(
            Nodule(
                series_uid=table.uid(line, fields),
                center_xyz_mm=table.center(line, fields),
                diameter_mm=_optional_diameter(table, line, fields),
                is_nodule=label == "1",
                row=line,
            )
        )
    log.debug("read %d candidates from %s", len(candidates), path)
    return candidates


def read_true_nodules(path: str | os.PathLike[str]) -> list[TrueNodule]:
    """Parse a synthetic data set's ``truth/true_nodules.csv`` (see :data:`TRUTH_TABLE`).

    Columns ``seriesuid,label,coordX,coordY,coordZ,diameter_mm,kind,volume_mm3`` (world mm).
    """
    columns = ("seriesuid", "label", *COORD_COLUMNS, "diameter_mm", "kind", "volume_mm3")
    table = CsvTable(Path(path), columns)
    out = []
    for line, fields in table:
        label = table.number(line, fields, "label")
        kind = table.get(line, fields, "kind") or ""
        if label < 1 or label != int(label) or kind not in TRUE_NODULE_KINDS:
            raise RowError(
                table.path,
                line,
                f"label {label!r} / kind {kind!r} invalid; labels are "
                f"1, 2, ... and kinds one of {', '.join(TRUE_NODULE_KINDS)}.",
            )
        out.append(
            TrueNodule(
                series_uid=table.uid(line, fields),
                label=int(label),
                center_xyz_mm=table.center(line, fields),
                diameter_mm=table.number(line, fields, "diameter_mm"),
                kind=kind,
                volume_mm3=table.number(line, fields, "volume_mm3"),
            )
        )
    return out


def read_excluded(path: str | os.PathLike[str]) -> list[Nodule]:
    """Parse ``annotations_excluded.csv`` (``seriesuid,coordX,coordY,coordZ[,diameter_mm]``;
    world mm) as findings with ``is_nodule=False``.

    A negative diameter (LUNA16 writes ``-1``) or an empty one becomes None, which scoring
    treats as :data:`UNKNOWN_DIAMETER_MM` (the official script does so for negative
    diameters and cannot read empty ones, so a warning counts them). A diameter of 0 stays 0
    (hit by nothing, as in the script).

    Raises:
        AnnotationError: naming the file and line of a malformed row.
    """
    table = CsvTable(Path(path), ("seriesuid", *COORD_COLUMNS))
    out: list[Nodule] = []
    n_empty = 0
    for line, fields in table:
        text = table.get(line, fields, "diameter_mm") or ""
        diameter = table.number(line, fields, "diameter_mm") if text else None
        n_empty += text == ""
        out.append(
            Nodule(
                series_uid=table.uid(line, fields),
                center_xyz_mm=table.center(line, fields),
                diameter_mm=None if diameter is None or diameter < 0 else diameter,
                is_nodule=False,
                row=line,
            )
        )
    if n_empty:
        log.warning(
            "%s: %d excluded findings have no diameter; scored like LUNA16's -1 (10 mm)",
            table.path,
            n_empty,
        )
    return out
