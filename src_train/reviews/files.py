"""``DATA/reviews/reviews.csv``: read it row by row (tolerant), append to it safely.

Reading is streamed and tolerant: a row with an unknown status, a non-numeric coordinate or a
bad label is skipped with a problem line naming the file and the line, and every other row is
still used (:func:`read_reviews`).

Writing keeps three promises at once (:func:`append_reviews`):

* **append-only**: the rows already in the file are copied byte for byte, new rows go after
  them, nothing is ever rewritten or dropped;
* **atomic**: the new file is written beside the old one and renamed over it
  (:func:`~src_train.atomic.atomic_write`), so a reader (or a crash) never sees half a row;
* **two windows**: read-copy-append-rename runs under an exclusive lock on
  ``reviews/.reviews.lock`` (a file that is never renamed), so two processes appending at the
  same moment both land: the second one copies the first one's rows.

O_APPEND with one ``write`` per row would also keep rows from two processes, but a crash in the
middle of a write could leave half a row, and its atomicity is not promised on network file
systems; the lock + rename costs one copy of a small file per verdict.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from src_train.atomic import atomic_write
from src_train.errors import AnnotationError, OutputWriteError
from src_train.luna.table import finite_number
from src_train.reviews.rows import CORRECTED, REVIEW_COLUMNS, STATUSES, Review

log = logging.getLogger(__name__)

#: Folder of a data set that holds its reviews: ``DATA/reviews/``.
REVIEWS_DIR = "reviews"
#: The verdicts, one row each.
REVIEWS_CSV = "reviews.csv"
#: Ending of a series' label volume: ``<seriesuid>_labels.mhd``.
LABELS_SUFFIX = "_labels.mhd"
#: The lock file beside ``reviews.csv`` (never renamed, so every process locks the same file).
LOCK_FILE = ".reviews.lock"
#: How long a writer waits for another one to release the lock, s.
LOCK_TIMEOUT_S = 30.0
#: Pause between two tries to take the lock, s.
LOCK_POLL_S = 0.02

#: The largest label a uint16 label volume holds.
LABEL_MAX = 65535

_REQUIRED = ("seriesuid", "coordX", "coordY", "coordZ", "status")
_MISSING = {"", "nan", "na", "none", "null"}


def reviews_dir(data_root: str | os.PathLike[str]) -> Path:
    """The reviews folder of a data set: ``DATA/reviews``."""
    return Path(data_root) / REVIEWS_DIR


def labels_file_name(series_uid: str) -> str:
    """File name of a series' label volume: ``<seriesuid>_labels.mhd``."""
    return f"{series_uid}{LABELS_SUFFIX}"


#: Folder of ``DATA/reviews/`` holding each reviewer's own corrections (for agreement).
BY_REVIEWER_DIR = "by_reviewer"


def reviewer_labels_path(folder: str | os.PathLike[str], reviewer: str, series_uid: str) -> Path:
    """One reviewer's own label volume of a series:
    ``reviews/by_reviewer/<name>/<seriesuid>_labels.mhd`` (characters other than letters,
    digits, ``.``, ``_`` and ``-`` in the name become ``_``). Written beside the shared one by
    every correction, so two reviewers' masks of one nodule can be compared; older data
    folders have none (agreement then says which Dice it cannot compute)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", reviewer.strip()).strip(".") or "_"
    return Path(folder) / BY_REVIEWER_DIR / name / labels_file_name(series_uid)


@dataclass
class ReviewsRead:
    """What :func:`read_reviews` found.

    Attributes:
        path: the file read.
        rows: the valid rows, in file order.
        problems: one line per skipped row, naming the file, the line and the fix.
    """

    path: Path
    rows: list[Review] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _RowError(ValueError):
    """One bad field of one row (the row is skipped)."""


def _number(text: str, column: str) -> float:
    value = finite_number(text)
    if value is None:
        raise _RowError(f"{column} is {text!r}, not a finite number of mm")
    return value


def _diameter(text: str) -> float | None:
    if text.lower() in _MISSING:
        return None
    value = _number(text, "diameter_mm")
    if value < 0:
        raise _RowError(f"diameter_mm is {text!r}; give a non-negative number of mm or nothing")
    return value if value > 0 else None


def _label(text: str, status: str) -> int:
    if text.lower() in _MISSING:
        value = 0
    else:
        try:
            value = int(text)
        except ValueError:
            raise _RowError(f"label is {text!r}, not a whole number") from None
        if not 0 <= value <= LABEL_MAX:
            raise _RowError(f"label is {value}; labels are 1..{LABEL_MAX} (uint16)")
    if status == CORRECTED and value < 1:
        raise _RowError("a corrected row needs its label (the value of its voxels, >= 1)")
    return value


def _parse_row(values: dict[str, str], line: int) -> Review:
    uid = values["seriesuid"]
    if not uid:
        raise _RowError("seriesuid is empty")
    status = values["status"].lower()
    if status not in STATUSES:
        raise _RowError(f"status is {values['status']!r}; use one of {', '.join(STATUSES)}")
    center = tuple(_number(values[c], c) for c in ("coordX", "coordY", "coordZ"))
    return Review(
        series_uid=uid,
        center_xyz_mm=center,  # type: ignore[arg-type]
        diameter_mm=_diameter(values.get("diameter_mm", "")),
        status=status,
        label=_label(values.get("label", ""), status),
        reviewer=values.get("reviewer", ""),
        time_utc=values.get("time_utc", ""),
        note=values.get("note", ""),
        line=line,
    )


def parse_reviews(handle: io.TextIOBase | io.StringIO, path: Path) -> ReviewsRead:
    """Parse a ``reviews.csv`` text stream (see :func:`read_reviews`); ``path`` names it."""
    result = ReviewsRead(path)
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise AnnotationError(f"{path}, line 1: not valid CSV ({exc}).") from exc
    if header is None:
        return result  # an empty file holds no review yet
    names = [h.strip() for h in header]
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise AnnotationError(
            f"{path}, line 1: header lacks column(s) {', '.join(missing)}; the file must start "
            f"with {','.join(REVIEW_COLUMNS)}. Fix the header (rows are kept as they are)."
        )
    start = reader.line_num + 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(names):
                result.problems.append(
                    f"{path}, line {line}: {len(fields)} field(s) where the header has "
                    f"{len(names)} ({','.join(REVIEW_COLUMNS)}); row skipped, fix or delete it."
                )
                continue
            values = {n: f.strip() for n, f in zip(names, fields, strict=True)}
            try:
                result.rows.append(_parse_row(values, line))
            except _RowError as exc:
                result.problems.append(f"{path}, line {line}: {exc}; row skipped, fix it.")
    except csv.Error as exc:
        raise AnnotationError(f"{path}, line {reader.line_num}: not valid CSV ({exc}).") from exc
    return result


def read_reviews(path: str | os.PathLike[str]) -> ReviewsRead:
    """Read ``reviews.csv`` row by row; a missing file holds no review.

    Rows that cannot be used (unknown status, a coordinate that is not a number, a corrected
    row without label, a row with too few fields) are skipped and described in
    ``problems`` (and logged); the other rows are returned in file order. A header without the
    columns ``seriesuid,coordX,coordY,coordZ,status`` or a file that is not CSV text raises
    :class:`AnnotationError`.
    """
    src = Path(path)
    if not src.is_file():
        return ReviewsRead(src)
    try:
        with src.open(newline="", encoding="utf-8-sig") as handle:
            result = parse_reviews(handle, src)
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{src} is not UTF-8 text ({exc.reason}); save it as a UTF-8 CSV file."
        ) from exc
    except OSError as exc:
        raise AnnotationError(f"Cannot read {src}: {exc.strerror}.") from exc
    for problem in result.problems:
        log.warning("%s", problem)
    return result


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
@contextmanager
def reviews_lock(
    folder: str | os.PathLike[str], timeout_s: float = LOCK_TIMEOUT_S
) -> Iterator[None]:
    """Hold the exclusive lock of a reviews folder (``.reviews.lock``) for the block.

    Every writer of ``reviews.csv`` and the label volumes takes it, in any process. Waits up to
    ``timeout_s``, then raises :class:`OutputWriteError` naming the lock file.
    """
    lock_path = Path(folder) / LOCK_FILE
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputWriteError(
            f"Cannot write in {lock_path.parent} ({exc.strerror}); reviews need a writable folder."
        ) from exc
    try:
        deadline = time.monotonic() + timeout_s
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise OutputWriteError(
                    f"{lock_path} stayed locked for {timeout_s:.0f} s: another LunaSeg window "
                    "is writing reviews. Try again; if no other window is open, the lock is "
                    "released already and this is a file-system problem."
                )
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _csv_lines(rows: Sequence[Review], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writerows(r.to_row() for r in rows)
    return out.getvalue()


def append_reviews(path: str | os.PathLike[str], rows: Sequence[Review]) -> ReviewsRead:
    """Append ``rows`` to ``reviews.csv`` (made with its header if missing); see the module.

    Call it inside :func:`reviews_lock` of the file's folder (the lock is not taken here, so a
    caller can also update a label volume under the same lock). Returns the whole file as read
    back, the new rows last. A file whose header lacks a required column raises
    :class:`AnnotationError` before anything is written.
    """
    dest = Path(path)
    try:
        old = dest.read_bytes() if dest.is_file() else b""
    except OSError as exc:
        raise OutputWriteError(f"Cannot read {dest} ({exc.strerror}).") from exc
    try:
        text = old.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{dest} is not UTF-8 text ({exc.reason}); save it as a UTF-8 CSV file."
        ) from exc
    if text.strip():
        parse_reviews(io.StringIO(text), dest)  # a bad header raises before anything is written
        columns = [h.strip() for h in next(csv.reader(io.StringIO(text)))]
    else:
        columns = list(REVIEW_COLUMNS)
        old = (",".join(REVIEW_COLUMNS) + "\r\n").encode()
    if old and not old.endswith(b"\n"):
        old += b"\r\n"
    added = _csv_lines(rows, columns).encode("utf-8")
    with atomic_write(dest, "wb") as handle:
        handle.write(old)
        handle.write(added)
    return parse_reviews(io.StringIO((old + added).decode("utf-8-sig")), dest)
