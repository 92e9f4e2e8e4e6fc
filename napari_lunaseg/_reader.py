"""Reader contribution: CT series (``.mhd``, NIfTI, NRRD, DICOM folder) with their annotations,
and LUNA16-layout folders (their most-annotated series)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from napari.utils.notifications import show_error, show_warning

from napari_lunaseg._layers import LayerDataTuple
from napari_lunaseg._scan import bundle_from_path, bundle_layers
from napari_lunaseg._screen import watch_opening_viewer
from src_train.ct import SERIES_SUFFIXES
from src_train.errors import LunaSegError
from src_train.luna import CsvProblem, series_to_open

log = logging.getLogger(__name__)

ReaderFunction = Callable[[str | list[str]], list]


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return :func:`read_series` for a path LunaSeg opens, else None (napari tries others).

    What a path opens is the core's rule (:func:`~src_train.luna.series_to_open`): a series
    file, a DICOM folder, or a LUNA16-layout or ``subset*`` folder (its most-annotated series).
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    candidate = Path(path)
    if candidate.is_dir():
        try:
            series_to_open(candidate)
        except (LunaSegError, OSError):
            from napari_lunaseg._images2d import image_set_reader  # a 2-D image set, or None

            return image_set_reader(candidate)
        return read_series
    if candidate.name.lower().endswith(SERIES_SUFFIXES):
        return read_series
    return None


#: Problems named one by one in a notification before "and N more".
NOTIFIED_PROBLEMS = 5


def problems_text(problems: Sequence[CsvProblem]) -> tuple[str, str]:
    """A notification for skipped annotation rows: its first line (what napari shows before
    the user expands it: the reason first, short) and the full text (each row's file, line and
    reason)."""
    first = problems[0]
    where = f"{first.path.name} line {first.line}" if first.line else first.path.name
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    headline = f"{where} skipped{more}: {first.reason}"
    lines = [f"{p.path.name}, line {p.line}: {p.reason}" if p.line else str(p) for p in problems]
    rest = len(lines) - NOTIFIED_PROBLEMS
    shown = lines[:NOTIFIED_PROBLEMS] + ([f"... and {rest} more"] if rest > 0 else [])
    files = sorted({str(p.path) for p in problems})
    detail = "\n".join(
        [
            "The scan is shown without these rows (the commands refuse the file until it is "
            "fixed):",
            *shown,
            *(f"file: {name}" for name in files),
        ]
    )
    return headline, f"{headline}\n{detail}"


def _what_went_wrong(exc: BaseException) -> str:
    """A short first line for a notification (napari shows one line until it is expanded): the
    kind of problem, from the error class's docstring; the details, long paths included, follow
    on the next lines."""
    doc = (type(exc).__doc__ or "").strip().splitlines()
    if doc and isinstance(exc, LunaSegError):
        return doc[0]
    return f"LunaSeg cannot open this ({type(exc).__name__})."


def read_series(path: str | list[str]) -> list[LayerDataTuple] | list[tuple[None]]:
    """Read what ``path`` opens as layers (CT, true shapes, generated mask, nodule points).

    An unreadable or corrupt file is reported as a napari notification giving the reason first
    and the path after, and no layer is added (napari's "empty file" sentinel ``[(None,)]``).
    Malformed annotation rows do not stop the scan: it opens without them and a warning names
    each row (file, line, reason); the full text also stays in the CT layer's metadata.
    """
    src = Path(path[0] if isinstance(path, list) else path)
    try:
        bundle = bundle_from_path(src)
    except (LunaSegError, OSError) as exc:
        log.info("cannot open %s: %s", src, exc)
        show_error(f"{_what_went_wrong(exc)}\n{exc}")
        return [(None,)]
    if bundle.problems:
        _headline, text = problems_text(bundle.problems)
        show_warning(text)
    watch_opening_viewer()  # the slice slider and caption of lunaseg view, also via File > Open
    return bundle_layers(bundle)
