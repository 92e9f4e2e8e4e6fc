"""A LUNA16 CSV file read row by row: the header checked, each row's values by column, and a
malformed row either raised (commands) or passed over and listed (the viewer, leniently)."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from src_train.errors import AnnotationError

log = logging.getLogger(__name__)

#: The columns of a world ``(x, y, z)`` mm point.
COORD_COLUMNS = ("coordX", "coordY", "coordZ")


def finite_number(text: str) -> float | None:
    """The finite float a CSV field spells, or None (empty, not a number, NaN or infinite):
    the one number rule of LunaSeg's CSV files (:meth:`CsvTable.number`, ``reviews.csv``)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _fix_hint(columns: Sequence[str]) -> str:
    return f"expected columns {','.join(columns)}; fix or delete that row"


def _not_text(path: Path, exc: UnicodeDecodeError) -> AnnotationError:
    # Text is decoded in blocks, so no reliable line number is known here.
    return AnnotationError(
        f"{path} is not UTF-8 text ({exc.reason}); is it a spreadsheet or a binary file? "
        "Save it as a UTF-8 CSV file."
    )


@dataclass(frozen=True)
class CsvProblem:
    """A malformed row (or a whole unreadable file) that lenient reading passed over.

    Attributes:
        path: the CSV file.
        line: 1-based line of the row; None when the whole file was unusable.
        reason: what is wrong and how to fix it (without the file and line).
    """

    path: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}, line {self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.reason}"


class RowError(AnnotationError):
    """A malformed CSV row; ``problem`` holds its file, line and reason apart."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.problem = CsvProblem(path, line, reason)
        super().__init__(str(self.problem))


def skip_or_raise(error: AnnotationError, skipped: list[CsvProblem] | None, path: Path) -> None:
    """Lenient reading (``skipped`` given) records the problem; strict reading raises it."""
    if skipped is None:
        raise error
    problem = error.problem if isinstance(error, RowError) else CsvProblem(path, None, str(error))
    log.debug("skipped: %s", problem)  # the caller reports its list (the viewer: a warning)
    skipped.append(problem)


class CsvTable:
    """A CSV file with a header; iterating yields ``(line, fields)`` per non-blank row.

    ``line`` is the 1-based line number where the row starts. Rows are streamed, so a
    551,065-row ``candidates.csv`` is never held as text in memory. A row with more non-empty
    values than the header has columns is an :class:`AnnotationError` (values are read by
    position, so they would shift).
    """

    def __init__(
        self, path: Path, required: Sequence[str], skipped: list[CsvProblem] | None = None
    ) -> None:
        self.path = path
        self.required = tuple(required)
        self.skipped = skipped
        self._uids: dict[str, str] = {}
        with self._open() as handle:
            reader = csv.reader(handle, skipinitialspace=True)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise RowError(path, 1, f"not valid CSV ({exc}).") from exc
            except UnicodeDecodeError as exc:
                raise _not_text(path, exc) from exc
        if header is None:
            raise AnnotationError(
                f"{path} is empty; it needs a header line {','.join(self.required)}."
            )
        self.header = [name.strip() for name in header]
        missing = [c for c in self.required if c not in self.header]
        if missing:
            raise RowError(
                path,
                1,
                f"header lacks column(s) {', '.join(missing)} ({_fix_hint(self.required)}).",
            )
        self.index = {name: i for i, name in enumerate(self.header)}
        self._xyz = tuple(self.index[c] for c in COORD_COLUMNS if c in self.index)

    def _open(self) -> io.TextIOWrapper:
        if not self.path.is_file():
            raise AnnotationError(f"{self.path} does not exist. Check the data folder.")
        try:
            return self.path.open(newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise AnnotationError(f"Cannot read {self.path}: {exc.strerror}.") from exc

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        with self._open() as handle:
            reader = csv.reader(handle, skipinitialspace=True)
            try:
                next(reader, None)  # the header
                start = reader.line_num + 1
                for fields in reader:
                    line, start = start, reader.line_num + 1
                    if not fields or all(not f.strip() for f in fields):
                        continue
                    if len(fields) > len(self.header):
                        try:
                            self._check_extra(line, fields)
                        except RowError as exc:
                            skip_or_raise(exc, self.skipped, self.path)
                            continue
                    yield line, fields
            except csv.Error as exc:  # the rest of the file cannot be read
                error = RowError(self.path, reader.line_num, f"not valid CSV ({exc}).")
                skip_or_raise(error, self.skipped, self.path)
            except UnicodeDecodeError as exc:
                skip_or_raise(_not_text(self.path, exc), self.skipped, self.path)

    def _check_extra(self, line: int, fields: list[str]) -> None:
        """Refuse a row with more values than the header has columns.

        Every value is read by its column's position, so one comma too many (a decimal comma,
        ``8,4`` for 8.4, or an unquoted comma inside a value) would silently shift the values
        after it: the row is an error, not a guess. Empty trailing fields (the trailing commas
        some spreadsheets write) hold no value and are accepted.
        """
        extra = [f.strip() for f in fields[len(self.header) :]]
        if not any(extra):
            return
        raise RowError(
            self.path,
            line,
            f"{len(fields)} values where the header has "
            f"{len(self.header)} columns ({','.join(self.header)}); the extra value(s) "
            f"{','.join(repr(v) for v in extra if v)} would be lost or shift other columns. "
            "A decimal comma (8,4 for 8.4) or an unquoted comma inside a value splits it in two: "
            "write decimals with a dot and put values holding commas in double quotes.",
        )

    def get(self, line: int, fields: list[str], column: str) -> str | None:
        """The stripped value of ``column`` in a row, None if the file has no such column."""
        position = self.index.get(column)
        if position is None:
            return None
        if position >= len(fields):
            raise RowError(
                self.path,
                line,
                f"{len(fields)} field(s) where the header has "
                f"{len(self.header)}; column {column!r} is missing ({_fix_hint(self.required)}).",
            )
        return fields[position].strip()

    def number(self, line: int, fields: list[str], column: str) -> float:
        """A finite float from a required column: the one way LunaSeg reads a number from a
        CSV file (an empty, non-numeric or non-finite field is a :class:`RowError` naming the
        file, the line and the column)."""
        text = self.get(line, fields, column) or ""
        if not text:
            raise RowError(
                self.path,
                line,
                f"{column} is empty; give a finite number ({_fix_hint(self.required)}).",
            )
        value = finite_number(text)
        if value is None:
            raise RowError(
                self.path,
                line,
                f"{column} is {text!r}, not a finite number ({_fix_hint(self.required)}).",
            )
        return value

    def uid(self, line: int, fields: list[str]) -> str:
        """The row's series UID (one shared string object per UID)."""
        text = self.get(line, fields, "seriesuid") or ""
        if not text:
            raise RowError(self.path, line, f"empty seriesuid ({_fix_hint(self.required)}).")
        return self._uids.setdefault(text, text)

    def center(self, line: int, fields: list[str]) -> tuple[float, float, float]:
        """``(coordX, coordY, coordZ)`` in mm; the slow path names the bad field."""
        try:
            x, y, z = (float(fields[i]) for i in self._xyz)
        except (ValueError, IndexError):
            x = y = z = math.nan
        if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
            return (x, y, z)
        x, y, z = (self.number(line, fields, c) for c in COORD_COLUMNS)
        return (x, y, z)
