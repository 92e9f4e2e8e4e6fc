"""Masks for a whole data folder: ``<uid>_mask.mhd`` volumes and the per-nodule table.

The masks are the reviewed ground truth by default: the verdicts in ``DATA/reviews/`` are
applied (:func:`src_train.reviews.apply_book`): rejected nodules dropped, corrected ones taken
voxel for voxel, added ones grown like annotations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src_train.atomic import staged_folder, write_csv_atomic
from src_train.ct import CtVolume, save_volume
from src_train.errors import OutputExistsError, SeriesNotFoundError, SeriesReadError
from src_train.luna import TRUTH_DIR, LunaFolder, check_annotated_folder
from src_train.masks.build import NoduleMask, OutsidePolicy
from src_train.masks.density import DEFAULT_THRESHOLD_HU, check_threshold
from src_train.masks.registry import REFERENCE_METHOD, method_info
from src_train.masks.table import NODULE_TABLE_COLUMNS
from src_train.progress import Progress, ShouldStop, check_stop, emit
from src_train.reviews import ReviewBook, ReviewedSeries, apply_book

log = logging.getLogger(__name__)

#: Name of the per-nodule table written beside the masks.
MASK_TABLE = "nodules.csv"

#: Ending of a written mask's file name: ``<seriesuid>_mask.mhd``.
MASK_SUFFIX = "_mask.mhd"


def mask_file_name(series_uid: str) -> str:
    """File name of a series' mask in a :func:`write_masks` folder: ``<seriesuid>_mask.mhd``."""
    return f"{series_uid}{MASK_SUFFIX}"


def _is_mask_output(name: str) -> bool:
    """True for the files :func:`write_masks` writes (table, ``<uid>_mask.mhd`` + data file)."""
    stem = name.removesuffix(".zraw").removesuffix(".raw").removesuffix(".mhd")
    return name == MASK_TABLE or stem.endswith(MASK_SUFFIX.removesuffix(".mhd"))


def _refuse_data_folder(folder: LunaFolder, out: Path) -> None:
    """:class:`OutputExistsError` when ``out`` is (inside) a folder of the data set itself.

    Written into a ``subset*`` folder, masks (``<uid>_mask.mhd``) would be found as series; into
    ``truth/`` the table ``nodules.csv`` would replace the true shapes' table, with or without
    ``overwrite``.
    """
    target = out.resolve()
    protected = {folder.series_path(uid).parent.resolve() for uid in folder.series_uids}
    protected.add((folder.root / TRUTH_DIR).resolve())
    if any(target == p or p in target.parents for p in protected):
        raise OutputExistsError(
            f"{out} is (inside) a folder of the data set's own series or true shapes; masks "
            "written there would replace them or be found as series. Choose another folder "
            f"(default: {folder.root / 'masks'})."
        )


@dataclass
class MaskRun:
    """What :func:`write_masks` did.

    Attributes:
        records: every nodule's record, in series order.
        failures: series that could not be read -> the reason, in one line; the other
            series' masks were written.
    """

    records: list[NoduleMask] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


#: Errors of one series that do not stop the others (it cannot be read). A nodule outside its
#: scan stops the run before anything is published (``--skip-outside`` is its fix).
SERIES_ERRORS = (SeriesReadError,)


def write_masks(
    folder: LunaFolder,
    out_dir: str | os.PathLike[str],
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    method: str = REFERENCE_METHOD,
    *,
    overwrite: bool = False,
    on_outside: OutsidePolicy = "raise",
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    series: Sequence[str] | None = None,
    on_series: Callable[[CtVolume, list[NoduleMask]], None] | None = None,
    reviews: bool | ReviewBook = True,
    on_reviewed: Callable[[CtVolume, ReviewedSeries], None] | None = None,
    **params: Any,
) -> MaskRun:
    """Write a mask :func:`mask_file_name` (``<uid>_mask.mhd``: uint8, 1 = nodule, compressed,
    the CT's geometry) for every series on disk, or only for the UIDs in ``series``.

    A series that cannot be masked (:data:`SERIES_ERRORS`) does not stop the others: it is
    logged, gets no mask, and is listed in :attr:`MaskRun.failures` (the folder is written with
    the others). Series without nodules get an all-zero mask. A per-nodule table :data:`MASK_TABLE`
    (center in mm and IRC, diameter, method, radii, box, voxel count, notes, review verdict)
    is written last; rejected nodules have a row with no voxel. ``reviews``: True applies the
    folder's reviews (``DATA/reviews/``), False ignores them, a :class:`ReviewBook` is used as
    given; ``on_reviewed(ct, reviewed)`` sees each series' verdicts applied and problems.
    ``out_dir`` is always one consistent run: it is built beside the target and appears whole
    at the end (:func:`~src_train.atomic.staged_folder`); with ``overwrite`` it replaces an
    earlier run's folder as a whole (masks of series not asked for this time included); a
    failure or a stop leaves no folder, or the earlier one untouched.

    Refused before any work: a folder without series or without an annotation file
    (:func:`~src_train.luna.check_annotated_folder`), a UID of ``series`` that is not on disk
    (:class:`SeriesNotFoundError`), an ``out_dir`` holding outputs (unless ``overwrite``) or
    other files (:class:`OutputExistsError`), and a folder of the data set itself
    (``subset*/``, ``truth/``). ``on_series(ct, records)`` is called after each series is
    built (e.g. to score it with :func:`score_against_truth` while the CT is in memory). Stops
    between series when ``should_stop()`` is true (:class:`CancelledError`).
    """
    out = Path(out_dir)
    method_info(method)
    check_threshold(threshold_hu)
    check_annotated_folder(folder)
    uids = folder.series_uids
    if series is not None:
        wanted, on_disk = list(dict.fromkeys(series)), set(uids)
        unknown = [u for u in wanted if u not in on_disk]
        if unknown:
            raise SeriesNotFoundError(
                f"Series {', '.join(unknown)} not found under {folder.root}/subset*/ "
                f"({len(uids)} series there); give the UIDs of series on disk (their file "
                "names without .mhd)."
            )
        uids = wanted
    _refuse_data_folder(folder, out)
    book = ReviewBook.for_folder(folder) if reviews is True else reviews if reviews else None
    run = MaskRun()
    rows: list[dict[str, Any]] = []
    staged = staged_folder(
        out, overwrite=overwrite, owns=_is_mask_output, what="lunaseg mask's output"
    )
    with staged as stage:
        for done, uid in enumerate(uids):
            check_stop(should_stop, "Writing masks")
            emit(progress, done, len(uids), f"masking {uid}")
            try:
                ct = folder.load(uid)
                reviewed = apply_book(
                    book,
                    ct,
                    folder.nodules(uid),
                    threshold_hu,
                    method,
                    on_outside=on_outside,
                    **params,
                )
            except SERIES_ERRORS as exc:
                log.error("%s: no mask: %s", uid, exc)
                run.failures[uid] = str(exc)
                continue
            mask, recs = reviewed.mask, reviewed.records
            save_volume(
                mask.astype(np.uint8),
                ct.geometry,
                stage / mask_file_name(uid),
                compress=True,
                overwrite=True,
            )
            run.records.extend(recs)
            rows.extend(reviewed.table_rows())
            log.debug("%s: %d nodules, %d mask voxels", uid, len(recs), int(mask.sum()))
            if on_series is not None:
                on_series(ct, recs)
            if on_reviewed is not None:
                on_reviewed(ct, reviewed)
        write_csv_atomic(stage / MASK_TABLE, rows, list(NODULE_TABLE_COLUMNS))
    emit(progress, len(uids), len(uids), "masks written")
    return run
