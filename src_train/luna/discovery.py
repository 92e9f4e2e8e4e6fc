"""Which series a LUNA16-layout folder holds, whatever their format (no voxel data read)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from src_train.ct import series_uid_of
from src_train.luna.layout import SUBSET_PREFIX, is_subset_dir

log = logging.getLogger(__name__)

#: How many UIDs :func:`list_uids` names before it says "and N more".
LISTED_UIDS = 3


def list_uids(uids: Sequence[str], limit: int = LISTED_UIDS) -> str:
    """The first ``limit`` UIDs joined by commas, then ``"and N more"`` for the rest."""
    shown = ", ".join(uids[:limit])
    rest = len(uids) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def folder_entries(folder: Path) -> list[os.DirEntry[str]]:
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
    for entry in folder_entries(folder):
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
    for entry in folder_entries(root):
        if entry.is_dir() and is_subset_dir(root / entry.name):
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
