"""A scored run written out: the FROC points as CSV and the curve as a PNG (atomically; nothing
overwritten without ``overwrite``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from src_train.atomic import atomic_write, write_text_atomic
from src_train.errors import OutputExistsError
from src_train.evaluate.froc import (
    FROC_GRID_MAX_FP_PER_SCAN,
    FROC_GRID_MIN_FP_PER_SCAN,
    FROC_GRID_POINTS,
    FrocCurve,
    sensitivity_at,
)
from src_train.evaluate.scoring import FrocResult


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
    bootstrap over enough scans (:attr:`FrocResult.shown_bootstrap`), error bars show each
    rate's interval.
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
    boot = result.shown_bootstrap
    if boot is not None:
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
