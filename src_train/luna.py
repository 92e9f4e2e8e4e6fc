"""The LUNA16 folder layout: find series, parse annotation and candidate CSVs.

Layout (the synthetic default uses exactly the same)::

    DATA/subset0..subset9/<seriesuid>.mhd (+ .raw or .zraw); also .mha, .nii, .nii.gz, .nrrd,
                                            .nhdr files and DICOM series folders
    DATA/annotations.csv                    seriesuid,coordX,coordY,coordZ,diameter_mm
    DATA/annotations_with_malignancy.csv    (optional; preferred for nodules when present)
    DATA/candidates.csv                     seriesuid,coordX,coordY,coordZ,class
    DATA/truth/<seriesuid>.mhd              (synthetic data only) uint8 true nodule labels
    DATA/truth/true_nodules.csv             (synthetic data only) one row per true nodule
                                            (``truth/nodules.csv`` in folders of older versions)

Coordinates in these files are world ``(x, y, z)`` millimetres.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from src_train.ct import (
    SERIES_SUFFIXES,
    CtVolume,
    is_series_path,
    load_ct,
    series_uid_of,
)
from src_train.errors import AnnotationError, ConfigError, SeriesNotFoundError, SeriesReadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Nodule:
    """One annotated nodule (or candidate) of a series.

    Attributes:
        series_uid: the series it belongs to.
        center_xyz_mm: center in world ``(x, y, z)`` mm.
        diameter_mm: annotated diameter in mm; ``None`` when the file gives none (candidates).
        is_nodule: True for annotations and class-1 candidates.
        malignant: the malignancy flag when the malignancy file provides one.
        row: 1-based line number in its CSV file (for error messages and stable ordering).
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    diameter_mm: float | None = None
    is_nodule: bool = True
    malignant: bool | None = None
    row: int = 0


@dataclass(frozen=True)
class TrueNodule:
    """A nodule of a synthetic scan whose true shape is known.

    Attributes:
        series_uid: the series it belongs to.
        label: its value in the truth volume ``truth/<uid>.mhd`` (1-based, in annotation order).
        center_xyz_mm: center of mass of the true shape, world ``(x, y, z)`` mm.
        diameter_mm: equivalent-sphere diameter of the true shape inside the scan, mm.
        kind: one of :data:`TRUE_NODULE_KINDS`.
        volume_mm3: volume of the true shape inside the scan, cubic mm.
    """

    series_uid: str
    label: int
    center_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    kind: str
    volume_mm3: float


#: Kinds of synthetic nodules (``TrueNodule.kind``).
TRUE_NODULE_KINDS = ("solid", "juxtapleural", "edge", "ground-glass", "part-solid")

ANNOTATIONS_FILE = "annotations.csv"
MALIGNANCY_FILE = "annotations_with_malignancy.csv"
CANDIDATES_FILES = ("candidates.csv", "candidates_V2.csv")
TRUTH_DIR = "truth"
#: The true nodules' table in ``truth/`` (not to be confused with ``masks/nodules.csv``, the
#: table ``lunaseg mask`` writes beside generated masks).
TRUTH_TABLE = "true_nodules.csv"
#: The same table's name in folders written before it was renamed; still read.
LEGACY_TRUTH_TABLE = "nodules.csv"

_COORD_COLUMNS = ("coordX", "coordY", "coordZ")
_TRUE_VALUES = {"true", "1", "yes", "y", "t"}
_FALSE_VALUES = {"false", "0", "no", "n", "f"}
_MISSING_VALUES = {"", "nan", "na", "none", "null"}


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


def _skip_or_raise(error: AnnotationError, skipped: list[CsvProblem] | None, path: Path) -> None:
    """Lenient reading (``skipped`` given) records the problem; strict reading raises it."""
    if skipped is None:
        raise error
    problem = error.problem if isinstance(error, RowError) else CsvProblem(path, None, str(error))
    log.debug("skipped: %s", problem)  # the caller reports its list (the viewer: a warning)
    skipped.append(problem)


class _CsvTable:
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
        self._xyz = tuple(self.index[c] for c in _COORD_COLUMNS if c in self.index)

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
                            _skip_or_raise(exc, self.skipped, self.path)
                            continue
                    yield line, fields
            except csv.Error as exc:  # the rest of the file cannot be read
                error = RowError(self.path, reader.line_num, f"not valid CSV ({exc}).")
                _skip_or_raise(error, self.skipped, self.path)
            except UnicodeDecodeError as exc:
                _skip_or_raise(_not_text(self.path, exc), self.skipped, self.path)

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
        """A finite float from a required column."""
        text = self.get(line, fields, column) or ""
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
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
        x, y, z = (self.number(line, fields, c) for c in _COORD_COLUMNS)
        return (x, y, z)


def _optional_diameter(table: _CsvTable, line: int, fields: list[str]) -> float | None:
    if "diameter_mm" not in table.index:
        return None
    # A row too short to hold the column is malformed (table.get says so); an empty field is not.
    text = table.get(line, fields, "diameter_mm") or ""
    if text.lower() in _MISSING_VALUES:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise RowError(
            table.path,
            line,
            f"diameter_mm is {text!r}; give a non-negative number "
            "of millimetres or leave it empty.",
        )
    return value if value > 0 else None


def _optional_bool(table: _CsvTable, line: int, fields: list[str], column: str) -> bool | None:
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


def read_annotations(
    path: str | os.PathLike[str], *, skipped: list[CsvProblem] | None = None
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

    Raises:
        AnnotationError: naming the file and line of a malformed row.
    """
    table = _CsvTable(Path(path), ("seriesuid", *_COORD_COLUMNS), skipped)
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
            _skip_or_raise(exc, skipped, table.path)
            continue
        nodules.append(nodule)
    log.debug("read %d annotations from %s", len(nodules), path)
    return nodules


def read_candidates(path: str | os.PathLike[str]) -> list[Nodule]:
    """Parse ``candidates.csv`` (``seriesuid,coordX,coordY,coordZ,class``; world mm).

    ``class`` 1 -> ``is_nodule=True``, 0 -> False; ``diameter_mm`` is None unless the file has
    such a column.

    Raises:
        AnnotationError: naming the file and line of a malformed row.
    """
    table = _CsvTable(Path(path), ("seriesuid", *_COORD_COLUMNS, "class"))
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
    columns = ("seriesuid", "label", *_COORD_COLUMNS, "diameter_mm", "kind", "volume_mm3")
    table = _CsvTable(Path(path), columns)
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


#: How many UIDs :func:`list_uids` names before it says "and N more".
LISTED_UIDS = 3


def list_uids(uids: Sequence[str], limit: int = LISTED_UIDS) -> str:
    """The first ``limit`` UIDs joined by commas, then ``"and N more"`` for the rest."""
    shown = ", ".join(uids[:limit])
    rest = len(uids) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


#: Folders that hold series start with this, in any letter case (LUNA16: subset0..subset9).
SUBSET_PREFIX = "subset"


def _is_subset_dir(path: Path) -> bool:
    return path.name.lower().startswith(SUBSET_PREFIX)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """A folder's entries sorted by name, without hidden ones (``.lunaseg-*`` temporary
    folders, macOS ``._*`` files); empty when the folder cannot be listed."""
    try:
        with os.scandir(folder) as listing:
            return sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s (%s); its series are skipped", folder, exc.strerror)
        return []


def _series_in(
    folder: Path, nested: bool, found: list[tuple[str, Path]], ignored: list[Path]
) -> None:
    """Append ``(uid, path)`` of each series in ``folder`` (:func:`discover_series`'s rule)."""
    for entry in _entries(folder):
        if nested and entry.is_dir() and entry.name.lower().startswith(SUBSET_PREFIX):
            _series_in(folder / entry.name, False, found, ignored)
            continue
        uid = series_uid_of(entry)
        if uid is not None:
            found.append((uid, folder / entry.name))
        elif entry.is_dir():
            ignored.append(folder / entry.name)


def discover_series(root: Path) -> dict[str, Path]:
    """Every series of a LUNA16-layout folder, whatever its format: UID -> path, sorted by UID.

    The one rule every folder command uses (through :class:`LunaFolder`):

    * where: ``ROOT/subset*/`` and, as some archives extract, ``ROOT/subset*/subset*/``
      (``subset`` in any letter case); hidden entries are skipped;
    * what: a file ending in one of :data:`~src_train.ct.SERIES_SUFFIXES` (UID = its name
      without the ending), or a folder holding a DICOM series (UID = its SeriesInstanceUID,
      read from one file's header). Data files (``.raw``, ``.zraw``) are not series; ``truth/``
      and other folders outside ``subset*/`` are never looked at.

    No voxel data is read. A folder under ``subset*/`` that holds no series is named in one
    warning. A UID found twice (two formats of one scan, a subset extracted twice) keeps its
    first path in path order; one warning names the duplicates.
    """
    found: list[tuple[str, Path]] = []
    ignored: list[Path] = []
    for entry in _entries(root):
        if entry.is_dir() and _is_subset_dir(root / entry.name):
            _series_in(root / entry.name, True, found, ignored)
    paths: dict[str, Path] = {}
    duplicates: dict[str, list[Path]] = {}
    for uid, path in sorted(found, key=lambda pair: str(pair[1])):
        if uid in paths:
            duplicates.setdefault(uid, []).append(path)
        else:
            paths[uid] = path
    if duplicates:
        uids = sorted(duplicates)
        log.warning(
            "%s: %d series found more than once; each is read from its first path: %s",
            root,
            len(uids),
            list_uids(
                [
                    f"{uid} at {paths[uid]} (also {', '.join(map(str, duplicates[uid]))})"
                    for uid in uids
                ]
            ),
        )
    if ignored:
        log.warning(
            "%s: %d folder(s) under subset*/ hold no series (neither a DICOM series nor a "
            "nested subset folder) and are ignored: %s",
            root,
            len(ignored),
            list_uids([str(p) for p in ignored]),
        )
    return dict(sorted(paths.items()))


def _group(nodules: Sequence[Nodule]) -> dict[str, list[Nodule]]:
    grouped: dict[str, list[Nodule]] = {}
    for nodule in nodules:
        grouped.setdefault(nodule.series_uid, []).append(nodule)
    return grouped


class LunaFolder:
    """A data folder in LUNA16 layout (real or synthetic), possibly a partial download.

    Series are found by :func:`discover_series`: ``ROOT/subset*/<uid>.mhd`` and every other
    format LunaSeg reads, DICOM series folders included (also one ``subset*`` folder deeper, as
    some archives extract). CSV files are read on first use. Coordinates are world
    ``(x, y, z)`` mm. A malformed annotation row raises :class:`AnnotationError` (every
    command refuses such a file) unless ``lenient`` (the viewer shows the scan and lists the
    row in :attr:`problems`).
    """

    def __init__(self, root: str | os.PathLike[str], *, lenient: bool = False) -> None:
        self.root = Path(root)
        #: Lenient (the viewer): malformed annotation rows, or an unusable annotation or truth
        #: file, are passed over and listed in :attr:`problems` instead of raising.
        self.lenient = lenient
        self.problems: list[CsvProblem] = []
        if not self.root.is_dir():
            raise SeriesNotFoundError(
                f"Data folder {self.root} does not exist. Download LUNA16 there or run "
                "'lunaseg synth' to make a synthetic one."
            )
        self._paths = discover_series(self.root)
        self._nodules: dict[str, list[Nodule]] | None = None
        self._candidates: dict[str, list[Nodule]] | None = None
        self._truth: dict[str, list[TrueNodule]] | None = None
        if not self._paths:  # every command that needs series says so in its error
            log.debug(
                "%s: no series found under subset*/ (expected subset0/<uid>.mhd, or another of "
                "%s, or DICOM series folders)",
                self.root,
                ", ".join(SERIES_SUFFIXES),
            )
        # without an annotation file nothing is missing (nodules() says there are none)
        missing = self.missing_series if self.annotations_path is not None else []
        if missing:
            log.warning(
                "%s: %d of %d annotated series are not on disk (partial download?); "
                "they are skipped: %s",
                self.root,
                len(missing),
                len(missing) + len(set(self._annotations()) & set(self._paths)),
                list_uids(missing),
            )

    def __repr__(self) -> str:
        return f"LunaFolder({str(self.root)!r}, {len(self._paths)} series)"

    # -- series -----------------------------------------------------------------------------
    @property
    def series_uids(self) -> list[str]:
        """UIDs of the series present on disk, sorted."""
        return sorted(self._paths)

    def series_path(self, uid: str) -> Path:
        """Path of a series (file or DICOM folder); :class:`SeriesNotFoundError` if absent."""
        try:
            return self._paths[uid]
        except KeyError:
            raise SeriesNotFoundError(
                f"Series {uid} is not under {self.root}/subset*/. Download its subset or pick "
                "one of the series present."
            ) from None

    def load(self, uid: str) -> CtVolume:
        """Read a series (HU, IRC array order) with its geometry; its ``series_uid`` is ``uid``."""
        path = self.series_path(uid)
        return load_ct(path, series_uid=uid if path.is_dir() else None)

    # -- annotations ------------------------------------------------------------------------
    @property
    def annotations_path(self) -> Path | None:
        """The annotation file in use: the malignancy file if present, else annotations.csv."""
        for name in (MALIGNANCY_FILE, ANNOTATIONS_FILE):
            if (self.root / name).is_file():
                return self.root / name
        return None

    def _annotations(self) -> dict[str, list[Nodule]]:
        if self._nodules is None:
            path = self.annotations_path
            if path is None:
                log.warning("%s has no %s: no nodules known", self.root, ANNOTATIONS_FILE)
                self._nodules = {}
            elif not self.lenient:
                self._nodules = _group(read_annotations(path))
            else:
                try:
                    self._nodules = _group(read_annotations(path, skipped=self.problems))
                except AnnotationError as exc:  # the whole file is unusable
                    _skip_or_raise(exc, self.problems, path)
                    self._nodules = {}
        return self._nodules

    def nodules(self, uid: str) -> list[Nodule]:
        """Annotated nodules of a series (empty when it has none), in file order."""
        return list(self._annotations().get(uid, []))

    @property
    def nodules_by_series(self) -> dict[str, list[Nodule]]:
        """Every series on disk -> its annotated nodules (possibly empty), sorted by UID."""
        annotations = self._annotations()
        return {uid: list(annotations.get(uid, [])) for uid in self.series_uids}

    @property
    def missing_series(self) -> list[str]:
        """Annotated series that are not on disk (a partial download), sorted."""
        return sorted(set(self._annotations()) - set(self._paths))

    @property
    def candidates_path(self) -> Path | None:
        """``candidates.csv`` (or ``candidates_V2.csv``) if present."""
        for name in CANDIDATES_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def candidates(self, uid: str) -> list[Nodule]:
        """Candidates of a series (class 1 -> ``is_nodule``); empty without a candidates file."""
        if self._candidates is None:
            path = self.candidates_path
            self._candidates = _group(read_candidates(path)) if path else {}
        return list(self._candidates.get(uid, []))

    # -- synthetic truth --------------------------------------------------------------------
    @property
    def truth_table_path(self) -> Path | None:
        """``truth/true_nodules.csv``, else an older version's ``truth/nodules.csv``, else None."""
        for name in (TRUTH_TABLE, LEGACY_TRUTH_TABLE):
            path = self.root / TRUTH_DIR / name
            if path.is_file():
                return path
        return None

    @property
    def has_truth(self) -> bool:
        """True when the folder carries true nodule shapes (synthetic data)."""
        return self.truth_table_path is not None

    def truth_path(self, uid: str) -> Path | None:
        """``truth/<uid>.mhd`` (uint8 labels, same geometry as the series) or None."""
        path = self.root / TRUTH_DIR / f"{uid}.mhd"
        return path if path.is_file() else None

    def true_nodules(self, uid: str) -> list[TrueNodule]:
        """True nodules of a series from the truth table (empty without truth)."""
        if self._truth is None:
            self._truth = {}
            table = self.truth_table_path
            try:
                true_nodules = read_true_nodules(table) if table is not None else []
            except AnnotationError as exc:
                if not self.lenient or table is None:
                    raise
                _skip_or_raise(exc, self.problems, table)  # no true shapes shown
                true_nodules = []
            for nodule in true_nodules:
                self._truth.setdefault(nodule.series_uid, []).append(nodule)
        return list(self._truth.get(uid, []))


def check_annotated_folder(folder: LunaFolder) -> None:
    """Raise unless ``folder`` has series on disk and an annotation file.

    The rule of every command that makes masks from the annotations (``mask``, ``cache``,
    ``train``): checked before anything is written, so a wrong folder fails in a second with
    one line, not after hours of empty masks, and leaves no output behind.

    Raises:
        SeriesNotFoundError: no series under ``subset*/``.
        AnnotationError: no ``annotations.csv`` (nor the malignancy file).
    """
    if not folder.series_uids:
        raise SeriesNotFoundError(
            f"{folder.root} holds no series (expected {folder.root}/subset0/<seriesuid>.mhd). "
            "Point DATA_DIR at a LUNA16 folder or run 'lunaseg synth' to make one."
        )
    if folder.annotations_path is None:
        raise AnnotationError(
            f"{folder.root} has no {ANNOTATIONS_FILE}: without nodule annotations every mask "
            f"is empty. Put the LUNA16 {ANNOTATIONS_FILE} (seriesuid,coordX,coordY,coordZ,"
            "diameter_mm) in that folder."
        )


def find_luna_root(series_path: str | os.PathLike[str]) -> Path | None:
    """The LUNA root of a series (a file of any format or a DICOM folder), else None.

    The series must sit where :func:`discover_series` looks, ``ROOT/subset*/`` or
    ``ROOT/subset*/subset*/``, and the root is the folder above that holds ``annotations.csv``
    (or the malignancy file).
    """
    parent = Path(series_path).resolve().parent
    if not _is_subset_dir(parent):
        return None
    roots = [parent.parent]
    if _is_subset_dir(parent.parent):
        roots.append(parent.parent.parent)
    for root in roots:
        if any((root / name).is_file() for name in (ANNOTATIONS_FILE, MALIGNANCY_FILE)):
            return root
    return None


#: What :func:`series_to_open` opens, for its error messages.
_OPENS = (
    f"a CT series ({', '.join(SERIES_SUFFIXES)}), a DICOM series folder, or a LUNA16-layout "
    f"folder (subset*/<seriesuid>.mhd beside {ANNOTATIONS_FILE}) or one of its subset folders"
)


def _has_annotations(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (ANNOTATIONS_FILE, MALIGNANCY_FILE))


def _loose_series(folder: Path) -> list[Path]:
    """Series files directly in ``folder`` (not in the LUNA16 layout), sorted."""
    return [folder / e.name for e in _entries(folder) if e.is_file() and series_uid_of(e)]


def series_to_open(path: str | os.PathLike[str]) -> Path:
    """The series a path opens in the viewer (``lunaseg view PATH``, napari's File > Open).

    The one rule:

    * a series (a file with one of :data:`~src_train.ct.SERIES_SUFFIXES`, a DICOM series
      folder): that series;
    * a LUNA16-layout folder (series under ``subset*/``), or one of its ``subset*`` folders:
      its series with the most annotated nodules (ties: the first UID; a folder without an
      annotation file: its first series). The folder's annotations come with it, since
      :func:`find_luna_root` finds them from the series. Malformed annotation rows do not
      stop the choice (they are counted out, as the viewer passes over them);
    * anything else (a folder without series, a file of another type, a missing path):
      :class:`SeriesReadError`, one line saying what opens.
    """
    target = Path(path)
    if not target.exists():
        raise SeriesReadError(f"{target} does not exist; give {_OPENS}.")
    if is_series_path(target):
        return target
    if not target.is_dir():
        raise SeriesReadError(f"{target.name} is not a CT series LunaSeg reads; give {_OPENS}.")
    if _is_subset_dir(target):
        above = [target.parent, target.parent.parent] if _is_subset_dir(target.parent) else []
        root = next((p for p in [*above, target.parent] if _has_annotations(p)), target.parent)
        folder = LunaFolder(root, lenient=True)
        inside = target.resolve()
        uids = [
            uid for uid in folder.series_uids if inside in folder.series_path(uid).resolve().parents
        ]
    else:
        folder = LunaFolder(target, lenient=True)
        uids = folder.series_uids
    if not uids:
        loose = _loose_series(target)
        hint = f" It holds series files: open one of them, e.g. {loose[0]}." if loose else ""
        raise SeriesReadError(f"{target} holds no CT series to open; give {_OPENS}.{hint}")
    counts = {uid: len(folder.nodules(uid)) for uid in uids}
    best = max(uids, key=lambda uid: counts[uid])  # max keeps the first of equals
    log.info("%s: opening %s (%d annotated nodules)", target, best, counts[best])
    return folder.series_path(best)


def split_series(uids: Iterable[str], val_stride: int = 10) -> tuple[list[str], list[str]]:
    """Split series into (training, validation) by series.

    The UIDs are de-duplicated and sorted; position ``i`` goes to validation when
    ``i % val_stride == 0`` (so the first series always validates), the rest train. The lists
    are disjoint and together hold every UID.
    """
    if val_stride < 2:
        raise ConfigError(
            f"val_stride must be at least 2 (every n-th series validates); got {val_stride}."
        )
    ordered = sorted(set(uids))
    validation = ordered[::val_stride]
    held_out = set(validation)
    return [u for u in ordered if u not in held_out], validation
