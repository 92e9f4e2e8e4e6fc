"""``lunaseg mask-report``'s job: score mask methods on a folder with true shapes and write the
report folder (two CSV tables and two plots) as one complete unit."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from src_train.atomic import staged_folder
from src_train.luna import LunaFolder
from src_train.masks.density import DEFAULT_THRESHOLD_HU
from src_train.masks.plots import plot_mask_report, plot_report_case
from src_train.masks.report import (
    REPORT_CASE_PLOT,
    REPORT_PLOT,
    REPORT_PREFIX,
    MaskReport,
    mask_report,
)
from src_train.progress import Progress, ShouldStop


def write_mask_report(
    folder: LunaFolder,
    out_dir: str | os.PathLike[str],
    methods: Sequence[str] | None = None,
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> tuple[MaskReport, list[Path]]:
    """:func:`~src_train.masks.report.mask_report` and its files in ``out_dir``: the two CSV
    tables (:meth:`~src_train.masks.report.MaskReport.write_csv`), ``REPORT_PLOT`` and
    ``REPORT_CASE_PLOT``.

    ``out_dir`` is checked before any scoring and is always one complete report
    (:func:`~src_train.atomic.staged_folder`): an earlier report there raises
    :class:`~src_train.errors.OutputExistsError` unless ``overwrite`` (then it is replaced as a
    whole), a folder holding other files is refused, and a failure or a stop leaves no folder
    (or the earlier report untouched). Returns the report and the paths written.
    """
    out = Path(out_dir)
    staged = staged_folder(
        out,
        overwrite=overwrite,
        owns=lambda name: name.startswith(REPORT_PREFIX),
        what="lunaseg mask-report's output",
    )
    with staged as stage:
        report = mask_report(
            folder, methods, threshold_hu, progress=progress, should_stop=should_stop
        )
        written = [*report.write_csv(stage), plot_mask_report(report, stage / REPORT_PLOT)]
        case = plot_report_case(folder, report, stage / REPORT_CASE_PLOT)
        if case is not None:
            written.append(case)
    return report, [out / path.name for path in written]
