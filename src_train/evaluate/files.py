"""LUNA16's files for scoring: read submissions and series lists; write the FROC curve (CSV)
and its plot (PNG). Excluded findings are read by :func:`src_train.luna.read_excluded`.

Every center is in world ``(x, y, z)`` millimetres. Bad rows raise :class:`AnnotationError`
naming the file, the line and the column. Scoring itself is :mod:`src_train.evaluate`, which
re-exports everything public here.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from src_train.atomic import atomic_write, write_text_atomic
from src_train.errors import AnnotationError, OutputExistsError
from src_train.evaluate.froc import (
    FROC_GRID_MAX_FP_PER_SCAN,
    FROC_GRID_MIN_FP_PER_SCAN,
    FROC_GRID_POINTS,
    FrocCurve,
    sensitivity_at,
)
from src_train.luna.table import CsvTable
from src_train.records.infer_files import SERIES_LIST_NAME

if TYPE_CHECKING:
    from src_train.evaluate import FrocResult

log = logging.getLogger(__name__)

#: Columns a LUNA16 submission file must name (in any order; more columns may follow).
SUBMISSION_COLUMNS: tuple[str, ...] = ("seriesuid", "coordX", "coordY", "coordZ", "probability")


@dataclass(frozen=True)
class Candidate:
    """One candidate mark of a submission.

    Attributes:
        series_uid: the scan it belongs to.
        center_xyz_mm: center in world ``(x, y, z)`` mm.
        probability: score used for ranking (higher = more likely a nodule).
        row: 1-based line in its CSV file (0 when made in memory).
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    probability: float
    row: int = 0


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_submission(path: str | os.PathLike[str]) -> list[Candidate]:
    """Read a LUNA16 submission CSV (``seriesuid,coordX,coordY,coordZ,probability``).

    Columns are found by header name, in any order, as the official script does; extra columns
    are ignored. A missing, empty or non-finite coordinate or probability raises
    :class:`AnnotationError` naming the file, the line and the column
    (:class:`~src_train.luna.table.CsvTable`, as every LUNA16 CSV is read).
    """
    src = Path(path)
    if not src.is_file():
        raise AnnotationError(
            f"{src} does not exist; pass the candidates CSV 'lunaseg infer' wrote."
        )
    table = CsvTable(src, SUBMISSION_COLUMNS)
    return [
        Candidate(
            table.uid(line, fields),
            table.center(line, fields),
            table.number(line, fields, "probability"),
            line,
        )
        for line, fields in table
    ]


def read_series_list(path: str | os.PathLike[str]) -> list[str]:
    """Series UIDs, one per line (first column; a ``seriesuid`` header line is skipped)."""
    src = Path(path)
    if not src.is_file():
        raise AnnotationError(f"{src} does not exist; pass a file with one series UID per line.")
    uids: list[str] = []
    with src.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if row and row[0].strip() and row[0].strip().lower() != "seriesuid":
                uids.append(row[0].strip())
    if len(set(uids)) < len(uids):
        log.warning(
            "%s lists %d series more than once; each is scored once",
            src,
            len(uids) - len(set(uids)),
        )
    return uids


def find_series_list(candidates_path: str | os.PathLike[str]) -> Path | None:
    """The series list ``lunaseg infer`` writes beside its candidates, when present."""
    path = Path(candidates_path).parent / SERIES_LIST_NAME
    return path if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _check_new(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; remove it or pass --overwrite.")


def write_froc_csv(
    result: FrocResult, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write the FROC points (``threshold,fps_per_scan,sensitivity``) atomically."""
    rows = ["threshold,fps_per_scan,sensitivity"]
    rows += [
        f"{t:.9g},{f:.9g},{s:.9g}"
        for t, f, s in zip(result.thresholds, result.fps_per_scan, result.sensitivity, strict=True)
    ]
    return write_text_atomic(path, "\n".join(rows) + "\n", overwrite=overwrite)


def plot_froc(
    result: FrocResult, path: str | os.PathLike[str], *, overwrite: bool = False, title: str = ""
) -> Path:
    """Draw the interpolated FROC curve (log FP axis, CPM points marked) to a PNG, atomically.

    The line is the curve the CPM reads (linear interpolation on the official grid); with a
    bootstrap, error bars show each rate's interval.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dest = Path(path)
    _check_new(dest, overwrite)
    fig = Figure(figsize=(6, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    grid = np.linspace(FROC_GRID_MIN_FP_PER_SCAN, FROC_GRID_MAX_FP_PER_SCAN, FROC_GRID_POINTS)
    curve = FrocCurve(result.thresholds, result.fps_per_scan, result.sensitivity)
    ax.plot(grid, sensitivity_at(curve, grid), color="tab:blue", label="FROC")
    label = f"CPM = {result.cpm:.3f}"
    boot = result.bootstrap
    if boot is not None and boot.n_used:
        err = np.stack(
            [
                result.sensitivity_at_rates - boot.sensitivity_lower,
                boot.sensitivity_upper - result.sensitivity_at_rates,
            ]
        )
        label += f" ({boot.confidence:.0%} CI {boot.cpm_lower:.3f}-{boot.cpm_upper:.3f})"
        ax.errorbar(
            result.fp_reading_points,
            result.sensitivity_at_rates,
            yerr=np.clip(err, 0, None),
            fmt="o",
            color="tab:red",
            capsize=3,
            label=label,
        )
    else:
        ax.plot(
            result.fp_reading_points, result.sensitivity_at_rates, "o", color="tab:red", label=label
        )
    ax.set_xscale("log", base=2)
    ax.set_xlim(FROC_GRID_MIN_FP_PER_SCAN, FROC_GRID_MAX_FP_PER_SCAN)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(result.fp_rates, [f"{r:g}" for r in result.fp_rates])
    ax.set_xlabel("Average false positives per scan")
    ax.set_ylabel("Sensitivity")
    ax.set_title(title or f"FROC ({result.n_scans} scans, {result.n_nodules} nodules)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_write(dest, "wb") as handle:
        fig.savefig(handle, format="png")
    return dest
