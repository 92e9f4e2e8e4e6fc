"""What a path opens in the viewer (a series, a LUNA16 folder or one of its subset folders),
and the LUNA16 root a series belongs to."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from src_train.ct import SERIES_SUFFIXES, is_series_path, series_uid_of
from src_train.errors import SeriesReadError
from src_train.luna.discovery import folder_entries
from src_train.luna.folder import LunaFolder
from src_train.luna.layout import ANNOTATIONS_FILE, has_annotations, is_subset_dir

log = logging.getLogger(__name__)


def find_luna_root(series_path: str | os.PathLike[str]) -> Path | None:
    """The LUNA root of a series (a file of any format or a DICOM folder), else None.

    The series must sit where :func:`discover_series` looks, ``ROOT/subset*/`` or
    ``ROOT/subset*/subset*/``, and the root is the folder above that holds ``annotations.csv``
    (or the malignancy file).
    """
    parent = Path(series_path).resolve().parent
    if not is_subset_dir(parent):
        return None
    roots = [parent.parent]
    if is_subset_dir(parent.parent):
        roots.append(parent.parent.parent)
    for root in roots:
        if has_annotations(root):
            return root
    return None


#: What :func:`series_to_open` opens, for its error messages.
_OPENS = (
    f"a CT series ({', '.join(SERIES_SUFFIXES)}), a DICOM series folder, or a LUNA16-layout "
    f"folder (subset*/<seriesuid>.mhd beside {ANNOTATIONS_FILE}) or one of its subset folders"
)


def _loose_series(folder: Path) -> list[Path]:
    """Series files directly in ``folder`` (not in the LUNA16 layout), sorted."""
    return [folder / e.name for e in folder_entries(folder) if e.is_file() and series_uid_of(e)]


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
    if is_subset_dir(target):
        above = [target.parent, target.parent.parent] if is_subset_dir(target.parent) else []
        root = next((p for p in [*above, target.parent] if has_annotations(p)), target.parent)
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
