"""The mask report: every mask method scored against the true shapes of a synthetic data set.

Per nodule, a method's mask of an annotation is compared with the true nodule it is paired with
(see :mod:`src_train.masks.truth`); per scan, the OR of all masks with all true labels. The
summary groups nodules by size band and kind. Plots live in :mod:`src_train.masks.plots`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src_train.atomic import write_csv_atomic
from src_train.ct import CtVolume
from src_train.errors import SeriesNotFoundError
from src_train.luna import LunaFolder
from src_train.masks.build import NoduleMask, build_masks
from src_train.masks.density import DEFAULT_THRESHOLD_HU
from src_train.masks.registry import NOTE_CENTER_BELOW, NOTE_OUTSIDE, available_methods, method_info
from src_train.masks.truth import SeriesTruth, load_series_truth
from src_train.metrics import dice
from src_train.progress import Progress, ShouldStop, check_stop, emit

#: Files of a report folder (:func:`write_mask_report`); every name starts with this.
REPORT_PREFIX = "mask_report"
REPORT_PLOT = f"{REPORT_PREFIX}.png"
REPORT_CASE_PLOT = f"{REPORT_PREFIX}_case.png"

#: Size bands of the report: (label, lower mm inclusive, upper mm exclusive).
SIZE_BANDS_MM: tuple[tuple[str, float, float], ...] = (
    ("<6 mm", 0.0, 6.0),
    ("6-10 mm", 6.0, 10.0),
    ("10-20 mm", 10.0, 20.0),
    (">=20 mm", 20.0, math.inf),
)


def size_band(diameter_mm: float) -> str:
    """The :data:`SIZE_BANDS_MM` label of a diameter in mm."""
    for label, lo, hi in SIZE_BANDS_MM:
        if lo <= diameter_mm < hi:
            return label
    return SIZE_BANDS_MM[-1][0]


@dataclass(frozen=True)
class NoduleScore:
    """Dice of one method's mask of one true nodule (mask vs the nodule's true label)."""

    series_uid: str
    label: int
    kind: str
    diameter_mm: float
    method: str
    dice: float
    voxel_count: int
    true_voxel_count: int
    notes: str

    @property
    def size_band(self) -> str:
        """Size band of the true diameter (see :data:`SIZE_BANDS_MM`)."""
        return size_band(self.diameter_mm)

    @property
    def flagged(self) -> bool:
        """True when the record carries a flag that explains a poor mask."""
        return NOTE_CENTER_BELOW in self.notes or NOTE_OUTSIDE in self.notes


@dataclass(frozen=True)
class ScanScore:
    """Dice of one method's whole-scan mask against all true nodules of the scan."""

    series_uid: str
    method: str
    dice: float


@dataclass
class MaskReport:
    """Per-nodule and per-scan Dice of every method on a data set with true shapes."""

    threshold_hu: float
    methods: list[str]
    nodules: list[NoduleScore]
    scans: list[ScanScore]
    unmatched: list[str] = field(default_factory=list)

    def groups(self) -> list[tuple[str, str]]:
        """Row keys of the summary: ``("scan", "all")``, ``("nodule", "all")``, bands, kinds."""
        keys = [("scan", "all"), ("nodule", "all")]
        present_bands = {s.size_band for s in self.nodules}
        keys += [("size", b) for b, _, _ in SIZE_BANDS_MM if b in present_bands]
        kinds = sorted({s.kind for s in self.nodules})
        keys += [("kind", k) for k in kinds]
        return keys

    def _scores(self, group: tuple[str, str], method: str) -> list[float]:
        what, value = group
        if what == "scan":
            return [s.dice for s in self.scans if s.method == method]
        chosen = [s for s in self.nodules if s.method == method]
        if what == "size":
            chosen = [s for s in chosen if s.size_band == value]
        elif what == "kind":
            chosen = [s for s in chosen if s.kind == value]
        return [s.dice for s in chosen]

    def summary(self) -> list[dict[str, Any]]:
        """One row per group: ``group``, ``n`` and the mean Dice per method."""
        rows = []
        for group in self.groups():
            row: dict[str, Any] = {"group": _group_label(group)}
            for method in self.methods:
                scores = self._scores(group, method)
                row["n"] = len(scores)
                row[method] = float(np.mean(scores)) if scores else float("nan")
            rows.append(row)
        empty: dict[str, Any] = {"group": "empty masks (unflagged)", "n": ""}
        for method in self.methods:
            empty[method] = sum(
                1
                for s in self.nodules
                if s.method == method and s.voxel_count == 0 and not s.flagged
            )
        rows.append(empty)
        return rows

    def best_method(self) -> str:
        """The method with the highest mean per-scan Dice."""
        means = {m: np.mean(self._scores(("scan", "all"), m) or [0.0]) for m in self.methods}
        return max(self.methods, key=lambda m: means[m])

    def to_markdown(self) -> str:
        """The summary as a Markdown table (mean Dice; the last row counts empty masks)."""
        head = ["group", "n", *self.methods]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.summary():
            cells = [str(row["group"]), str(row["n"])]
            for method in self.methods:
                value = row[method]
                cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write_csv(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``mask_report_nodules.csv`` (one row per nodule and method) and
        ``mask_report_summary.csv`` (the summary table) into ``out_dir``."""
        out = Path(out_dir)
        nodule_rows = [
            {
                "seriesuid": s.series_uid,
                "label": s.label,
                "kind": s.kind,
                "diameter_mm": round(s.diameter_mm, 2),
                "size_band": s.size_band,
                "method": s.method,
                "dice": round(s.dice, 4),
                "voxel_count": s.voxel_count,
                "true_voxel_count": s.true_voxel_count,
                "notes": s.notes,
            }
            for s in self.nodules
        ]
        columns = list(nodule_rows[0]) if nodule_rows else ["seriesuid"]
        a = write_csv_atomic(out / f"{REPORT_PREFIX}_nodules.csv", nodule_rows, columns)
        summary = self.summary()
        b = write_csv_atomic(
            out / f"{REPORT_PREFIX}_summary.csv", summary, ["group", "n", *self.methods]
        )
        return a, b


def _group_label(group: tuple[str, str]) -> str:
    what, value = group
    if what == "scan":
        return "per scan (mean)"
    if what == "nodule" and value == "all":
        return "per nodule (mean)"
    return f"{what}: {value}"


def score_series(
    truth: SeriesTruth, method: str, records: Sequence[NoduleMask]
) -> list[NoduleScore]:
    """Dice of each true nodule of a series against the record made from its annotation.

    ``records`` are found by their annotation (``record.nodule``); a true nodule without an
    annotation or record, or whose record was skipped, scores 0.
    """
    by_nodule = {r.nodule: r for r in records}
    scores = []
    for true_nodule, annotation in truth.pairs:
        record = None if annotation is None else by_nodule.get(annotation)
        value, true_count = truth.nodule_dice(true_nodule, record)
        scores.append(
            NoduleScore(
                truth.series_uid,
                true_nodule.label,
                true_nodule.kind,
                true_nodule.diameter_mm,
                method,
                value,
                0 if record is None else record.voxel_count,
                true_count,
                "no annotation" if record is None else "; ".join(record.notes),
            )
        )
    return scores


def score_against_truth(
    folder: LunaFolder, ct: CtVolume, records: Sequence[NoduleMask], method: str
) -> list[NoduleScore]:
    """Per-true-nodule Dice of ``records`` (made by ``method`` from ``folder``'s annotations of
    ``ct``, e.g. by :func:`~src_train.commands.mask_folder.write_masks`) against the series'
    true shapes; ``[]`` without truth. The same scoring as :func:`mask_report`."""
    truth = load_series_truth(folder, ct)
    return [] if truth is None else score_series(truth, method, records)


def mask_report(
    folder: LunaFolder,
    methods: Sequence[str] | None = None,
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> MaskReport:
    """Score every method (default: all registered) against the true shapes of ``folder``.

    For each series with a truth volume, the annotations are masked by each method; a nodule's
    Dice compares its own mask with its true label, a scan's Dice compares the OR of all masks
    with all true labels. A true nodule without an annotation scores 0 and is listed in
    ``unmatched``. Nodules whose center is outside the volume are skipped and flagged.
    """
    chosen = list(methods) if methods else available_methods()
    for name in chosen:
        method_info(name)
    with_truth = [(u, folder.truth_path(u)) for u in folder.series_uids]
    series = [(u, p) for u, p in with_truth if p is not None]
    if not series:
        raise SeriesNotFoundError(
            f"{folder.root} has no series with a true shape (truth/<uid>.mhd); the mask report "
            "needs synthetic data (lunaseg synth DIR) or another folder with truth volumes."
        )
    nodule_scores: list[NoduleScore] = []
    scan_scores: list[ScanScore] = []
    unmatched: list[str] = []
    for done, (uid, truth_path) in enumerate(series):
        check_stop(should_stop, "The mask report")
        emit(progress, done, len(series), f"scoring {uid}")
        ct = folder.load(uid)
        truth = load_series_truth(folder, ct)
        if truth is None:  # removed since the listing above
            raise SeriesNotFoundError(f"{truth_path} disappeared while the report ran.")
        truth_any = truth.labels > 0
        unmatched += truth.unmatched
        annotated = truth.annotated
        for name in chosen:
            mask, recs = build_masks(ct, annotated, threshold_hu, name, on_outside="skip")
            scan_scores.append(ScanScore(uid, name, dice(mask, truth_any)))
            nodule_scores += score_series(truth, name, recs)
    emit(progress, len(series), len(series), "report done")
    return MaskReport(threshold_hu, chosen, nodule_scores, scan_scores, unmatched)
