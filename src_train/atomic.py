"""Writes that never leave a half-written file: a temporary file beside the target, renamed.

Every file LunaSeg writes that matters (checkpoints, caches, CSVs, reports) goes through
:func:`atomic_write`: readers see the old file or the new one, never a partial one, and a
failure removes the temporary file. Volumes use :func:`src_train.ct.save_volume`, which applies
the same idea to SimpleITK's multi-file formats.
"""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from src_train.errors import OutputExistsError, OutputWriteError

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
