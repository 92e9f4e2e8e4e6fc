"""Reader contribution: CT series (``.mhd``, NIfTI, NRRD, DICOM folder) with their annotations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_error

from napari_lunaseg._layers import LayerDataTuple
from napari_lunaseg._scan import bundle_from_path, bundle_layers
from src_train.ct import SERIES_SUFFIXES
from src_train.errors import LunaSegError

log = logging.getLogger(__name__)

ReaderFunction = Callable[[str | list[str]], list]


def _looks_like_dicom_folder(path: Path) -> bool:
    """A folder holding at least one file that may be DICOM (``.dcm`` or no ending)."""
    try:
        return any(
            child.is_file() and child.suffix.lower() in ("", ".dcm") for child in path.iterdir()
        )
    except OSError:
        return False


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return :func:`read_series` for a path LunaSeg can read, else None (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    candidate = Path(path)
    if candidate.is_dir():
        if _looks_like_dicom_folder(candidate):
            return read_series
        from napari_lunaseg._images2d import image_set_reader  # a 2-D image set, or None

        return image_set_reader(candidate)
    if candidate.name.lower().endswith(SERIES_SUFFIXES):
        return read_series
    return None


def read_series(path: str | list[str]) -> list[LayerDataTuple] | list[tuple[None]]:
    """Read one series as layers (CT, true shapes, generated mask, nodule points).

    An unreadable or corrupt file is reported as a napari notification naming the file and the
    reason, and no layer is added (napari's "empty file" sentinel ``[(None,)]``).
    """
    src = Path(path[0] if isinstance(path, list) else path)
    try:
        return bundle_layers(bundle_from_path(src))
    except (LunaSegError, OSError) as exc:
        log.info("cannot open %s: %s", src, exc)
        show_error(f"LunaSeg cannot open {src.name}: {exc}")
        return [(None,)]
