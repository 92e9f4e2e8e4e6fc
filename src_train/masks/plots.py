"""Pictures of the mask report: Dice per method and group, and one nodule in the colour code."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from src_train.luna import LunaFolder
from src_train.masks.boxes import box_around
from src_train.masks.build import mask_nodule
from src_train.masks.registry import REFERENCE_METHOD
from src_train.masks.report import MaskReport, NoduleScore
from src_train.masks.truth import load_series_truth
from src_train.metrics import error_overlay_rgb, window_to_grey


def plot_mask_report(report: MaskReport, path: str | os.PathLike[str]) -> Path:
    """Bar chart of mean Dice per method, per scan / size band / kind (PNG, Agg, no GUI)."""
    from matplotlib.figure import Figure  # local: only the report needs matplotlib

    summary = [r for r in report.summary() if r["group"] != "empty masks (unflagged)"]
    groups = [f"{r['group']}\n(n={r['n']})" for r in summary]
    fig = Figure(figsize=(max(8.0, 1.2 * len(groups)), 4.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(report.methods))
    x = np.arange(len(groups))
    for k, method in enumerate(report.methods):
        values = [r[method] for r in summary]
        bars = ax.bar(x + (k - (len(report.methods) - 1) / 2) * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(x, groups, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("mean Dice vs true shape")
    ax.set_title(f"Mask methods against true nodule shapes (threshold {report.threshold_hu:g} HU)")
    ax.legend(loc="upper center", ncols=len(report.methods), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=120)
    return dest


def _pick_case(report: MaskReport) -> NoduleScore | None:
    """The best method's nodule that loses most against ``grow``; if none loses, its worst."""
    best = report.best_method()
    scores = {(s.series_uid, s.label): s for s in report.nodules if s.method == best}
    if not scores:
        return None
    reference = {
        (s.series_uid, s.label): s.dice for s in report.nodules if s.method == REFERENCE_METHOD
    }
    worst_vs_grow = min(
        scores.values(), key=lambda s: s.dice - reference.get((s.series_uid, s.label), 0.0)
    )
    if worst_vs_grow.dice < reference.get((worst_vs_grow.series_uid, worst_vs_grow.label), 0.0):
        return worst_vs_grow
    return min(scores.values(), key=lambda s: s.dice)


def plot_report_case(
    folder: LunaFolder,
    report: MaskReport,
    path: str | os.PathLike[str],
    case: NoduleScore | None = None,
    margin_mm: float = 8.0,
) -> Path | None:
    """PNG of one nodule (default: where the best method loses most against ``grow``).

    One panel per method of the report: the slice ``(row, col)`` through the nodule's true
    center, lung window, with TP green, FN orange, FP red (the project's colour code).
    Returns None when the report has no nodule.
    """
    from matplotlib.figure import Figure

    case = case or _pick_case(report)
    if case is None:
        return None
    ct = folder.load(case.series_uid)
    truth = load_series_truth(folder, ct)
    if truth is None:
        return None
    true_nodule, annotation = next(p for p in truth.pairs if p[0].label == case.label)
    center = ct.geometry.xyz_to_irc_index(true_nodule.center_xyz_mm)
    center = np.clip(center, 0, np.asarray(ct.shape_irc) - 1)
    half = [math.ceil((case.diameter_mm / 2 + margin_mm) / s) for s in ct.geometry.spacing_irc_mm]
    lo, hi = box_around(center, half, ct.shape_irc)
    k = int(center[0])
    rows, cols = slice(lo[1], hi[1]), slice(lo[2], hi[2])
    grey = window_to_grey(ct.hu[k, rows, cols])
    true_slice = truth.labels[k, rows, cols] == case.label
    fig = Figure(figsize=(3.2 * len(report.methods), 3.6), layout="constrained")
    for n, method in enumerate(report.methods):
        ax = fig.add_subplot(1, len(report.methods), n + 1)
        pred = np.zeros(true_slice.shape, dtype=bool)
        title = f"{method}: no annotation"
        if annotation is not None:
            rec = mask_nodule(ct, annotation, report.threshold_hu, method, on_outside="skip")
            if not rec.skipped:
                full = np.zeros(ct.shape_irc, dtype=bool)
                full[rec.box_slices] = rec.local_mask
                pred = full[k, rows, cols]
            title = f"{method}: Dice {truth.nodule_dice(true_nodule, rec)[0]:.2f}"
        rgb = error_overlay_rgb(grey, pred, true_slice)
        sy, sx = ct.geometry.spacing_irc_mm[1:]
        ax.imshow(rgb, interpolation="nearest", aspect=sy / sx)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(
        f"{case.kind} nodule, {case.diameter_mm:.1f} mm, slice {k} of {case.series_uid[-12:]} "
        "(TP green, FN orange, FP red)",
        fontsize=9,
    )
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=130)
    return dest
