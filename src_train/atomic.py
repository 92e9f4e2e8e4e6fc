"""Writes that never leave a half-written file: a temporary file beside the target, renamed.

Every file LunaSeg writes that matters (checkpoints, caches, CSVs, reports) goes through
:func:`atomic_write`: readers see the old file or the new one, never a partial one, and a
failure removes the temporary file. Volumes use :func:`src_train.ct.save_volume`, which applies
the same idea to SimpleITK's multi-file formats. A command whose output is a whole folder
(``lunaseg mask``, ``mask-report``) builds it with :func:`staged_folder`: the folder holds one
complete run or is left as it was.
"""

from __future__ import annotations

import csv
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from src_train.errors import OutputExistsError, OutputWriteError

log = logging.getLogger(__name__)

#: A new file for writing only, failing if the name exists (binary on Windows too).
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
#: Permissions of a new file before the umask, as ``open()`` uses (mkstemp's would be 0600,
#: unreadable to the team on a shared machine).
_NEW_FILE_MODE = 0o666


@contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", *, overwrite: bool = True
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` when the block ends.

    Args:
        path: the file to (re)place; missing parent folders are created.
        mode: ``"w"`` (text: UTF-8, lines written as given) or ``"wb"`` (bytes).
        overwrite: when False, an existing ``path`` raises :class:`OutputExistsError` first.

    The data is flushed to disk before the rename. If the block raises, the temporary file is
    removed and ``path`` is left as it was. A folder that cannot be written raises
    :class:`OutputWriteError` naming it.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes 'w' or 'wb', not {mode!r}")
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest} already exists; remove it or pass --overwrite.")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, _NEW_FILE_FLAGS, _NEW_FILE_MODE)
    except OSError as exc:
        raise OutputWriteError(
            f"Cannot write {dest} ({exc.strerror}); choose a writable folder."
        ) from exc
    try:
        if mode == "wb":
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8, lines as given) to ``path`` atomically; see :func:`atomic_write`.

    Raises :class:`OutputExistsError` when ``path`` exists and ``overwrite`` is False.
    """
    with atomic_write(path, "w", overwrite=overwrite) as handle:
        handle.write(text)
    return Path(path)


def write_csv_atomic(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    overwrite: bool = True,
) -> Path:
    """Write ``rows`` (dicts keyed by ``columns``) as a CSV file with a header, atomically."""
    with atomic_write(path, "w", overwrite=overwrite) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


#: Start of the temporary folders :func:`staged_folder` makes beside its target. Hidden, so
#: folder listings (``luna.discover_series``) pass over them.
STAGING_PREFIX = ".lunaseg-"
#: Entries of an existing output folder named in an error message before "and N more".
_NAMED_ENTRIES = 3


def _names(entries: Sequence[str]) -> str:
    shown = ", ".join(entries[:_NAMED_ENTRIES])
    rest = len(entries) - _NAMED_ENTRIES
    return f"{shown} and {rest} more" if rest > 0 else shown


def _check_output_folder(
    dest: Path, overwrite: bool, owns: Callable[[str], bool] | None, what: str
) -> None:
    """:class:`OutputExistsError` unless ``dest`` may receive a new run (see staged_folder)."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise OutputExistsError(f"{dest} is a file; give a folder for {what}.")
    entries = sorted(entry.name for entry in dest.iterdir())
    if not entries:
        return
    foreign = [name for name in entries if owns is not None and not owns(name)]
    if foreign:
        raise OutputExistsError(
            f"{dest} holds files that {what} does not write ({_names(foreign)}); it is left "
            "alone. Choose an empty or new folder."
        )
    if not overwrite:
        raise OutputExistsError(
            f"{dest} already holds {what} ({len(entries)} file(s)); choose another folder or "
            "replace it as a whole (--overwrite)."
        )


def _make_folders(dest: Path) -> list[Path]:
    """Create ``dest``'s missing parent folders; return those created, outermost first."""
    created = []
    for folder in reversed(dest.parents):
        if not folder.exists():
            folder.mkdir()
            created.append(folder)
    return created


def _move_entries(source: Path, target: Path) -> None:
    for entry in sorted(source.iterdir()):
        os.replace(entry, target / entry.name)


def _publish(stage: Path, dest: Path) -> None:
    """Make ``stage``'s entries the whole content of ``dest`` (which keeps its identity)."""
    if not dest.exists():
        os.replace(stage, dest)
        return
    old = dest.parent / f"{STAGING_PREFIX}{dest.name}-old-{secrets.token_hex(4)}"
    old.mkdir()
    _move_entries(dest, old)
    try:
        _move_entries(stage, dest)
    except OSError:
        _move_entries(dest, stage)
        _move_entries(old, dest)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
    stage.rmdir()


@contextmanager
def staged_folder(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    owns: Callable[[str], bool] | None = None,
    what: str = "the output",
) -> Iterator[Path]:
    """Build an output folder in a temporary folder beside it and publish it whole at the end.

    Yields the temporary folder (hidden, ``.lunaseg-<name>-<random>`` in ``path``'s parent) to
    write every output into. When the block ends normally, its entries become the whole content
    of ``path`` (created if missing; an earlier run's files are replaced, none is left beside
    the new ones). When the block raises (an error, Ctrl-C, a stop request), the temporary
    folder is removed and ``path`` is left exactly as it was: a failed command creates no
    output folder and never leaves a half-written one.

    Args:
        path: the output folder.
        overwrite: replace an output folder that holds an earlier run; without it a folder
            with entries raises :class:`OutputExistsError` (an empty one is used).
        owns: True for the names of entries the command itself writes. A folder holding any
            other entry is refused even with ``overwrite``: a user's folder is never replaced.
        what: what the folder holds, for error messages (e.g. ``"lunaseg mask's output"``).

    Raises:
        OutputExistsError: before anything is created (see ``overwrite`` and ``owns``).
        OutputWriteError: the folder beside which the temporary folder goes is not writable.
    """
    dest = Path(path).absolute()
    _check_output_folder(dest, overwrite, owns, what)
    created: list[Path] = []
    try:
        created = _make_folders(dest)
        stage = dest.parent / f"{STAGING_PREFIX}{dest.name}-{secrets.token_hex(4)}"
        stage.mkdir()
    except OSError as exc:
        for folder in reversed(created):
            folder.rmdir()
        raise OutputWriteError(
            f"Cannot write {dest} ({exc.strerror}); choose a writable folder."
        ) from exc
    try:
        yield stage
        _publish(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:  # something else was written there meanwhile: keep it
                break
        raise
    log.debug("published %s", dest)


def make_folder(path: str | os.PathLike[str], what: str) -> Path:
    """Create the folder ``path`` (and its parents) unless it exists.

    Raises:
        OutputWriteError: it cannot be created; the message names ``what`` and ``path``.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(
            f"Cannot create {what} {folder} ({exc.strerror}); choose a writable place."
        ) from exc
    return folder


def _any_entry(entry: Path) -> bool:
    return True


def check_generated_folder(
    out: Path,
    *,
    overwrite: bool,
    marker: str,
    command: str,
    what: str,
    foreign: Callable[[Path], bool] = _any_entry,
    earlier: str | None = None,
) -> bool:
    """May ``out`` receive what ``command`` generates? (A generator that writes its folder in
    place and leaves the file ``marker`` in it, e.g. ``lunaseg synth``.)

    Returns False when ``out`` is missing or empty, or, with ``overwrite``, holds no marker and
    no entry that ``foreign`` refuses: the caller writes into it. Returns True when it holds an
    earlier output of ``command`` (its marker) and ``overwrite``: the caller removes what that
    output wrote, then writes.

    Args:
        out: the folder.
        overwrite: replace an earlier output (``--overwrite``).
        marker: the name of the file ``command`` leaves in every folder it writes.
        command: the command, for messages (``"lunaseg synth"``).
        what: what the folder holds, for messages (``"synthetic data set"``).
        foreign: True for an entry of an unmarked folder that ``command`` must never mix with
            or replace (default: any entry).
        earlier: a description of the earlier output in ``out``, named in the refusal.

    Raises:
        OutputExistsError: ``out`` is a file; it has entries and ``overwrite`` is False; it has
            no marker and entries that ``foreign`` refuses (even with ``overwrite``: a folder
            that ``command`` did not write is never replaced).
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; choose a folder for the {what}.")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not overwrite:
        if earlier is not None:
            raise OutputExistsError(
                f"{out} holds another {what} ({earlier}); replace it (--overwrite) or choose "
                "another folder."
            )
        raise OutputExistsError(
            f"{out} is not empty; choose another folder or overwrite it (--overwrite)."
        )
    if not (out / marker).is_file():
        refused = sorted(child.name for child in out.iterdir() if foreign(child))
        if refused:
            raise OutputExistsError(
                f"{out} holds files that '{command}' did not write (no {marker}; found "
                f"{_names(refused)}); it is left alone. Choose another folder."
            )
        return False
    log.info("replacing the %s in %s", what, out)
    return True
