"""``lunaseg qa``: score every annotation of a folder and write the suspicious ones first.

:func:`iter_qa` reads each series once, measures its annotations
(:func:`~src_train.qa.signals.nodule_signals`), pairs duplicates, asks a checkpoint when one is
given, and judges each row (:class:`~src_train.qa.combine.QaRule`). It is a generator of
progress events; :func:`run_qa` drives it. :func:`write_qa` writes ``suspicious.csv`` (the
annotation's own columns, then ``suspicion,reasons``, most suspicious first) and
``summary.txt`` (one line per reason).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src_train.atomic import write_csv_atomic, write_text_atomic
from src_train.infer import Detector, InferenceOptions, TunerCache
from src_train.luna import LunaFolder
from src_train.luna.table import CsvTable
from src_train.masks.density import DEFAULT_THRESHOLD_HU
from src_train.progress import Progress, ShouldStop, run_steps
from src_train.qa.combine import REASONS, ModelSignals, QaRule, Verdict, judge, noisy_or
from src_train.qa.model import model_signals
from src_train.qa.rows import AnnotationList, AnnotationRow, annotation_rows
from src_train.qa.signals import NoduleSignals, duplicate_of, nodule_signals
from src_train.reviews import ReviewBook

log = logging.getLogger(__name__)

#: Where ``lunaseg qa`` writes by default: ``DATA/qa/``.
QA_DIR = "qa"
SUSPICIOUS_CSV = "suspicious.csv"
SUMMARY_TXT = "summary.txt"
#: Every measurement of every row, in ``suspicious.csv``'s order (for the curious).
SIGNALS_CSV = "signals.csv"
#: Columns QA appends to the annotation's own.
QA_COLUMNS = ("suspicion", "reasons")
#: Suspicion from which a row counts as suspicious in the summary.
SUSPICIOUS_FROM = 0.5


@dataclass(frozen=True)
class QaProgress:
    """One step of :func:`iter_qa`: ``done`` of ``total`` series."""

    done: int
    total: int
    message: str


@dataclass(frozen=True)
class ScoredRow:
    """One annotation after QA.

    Attributes:
        row: the annotation (its own columns, its record, its review status).
        signals: what was measured in its scan.
        model: what the checkpoint said (None without one, or outside the scan).
        verdict: its suspicion and reasons.
        order: its position in the list QA read (ties keep this order).
    """

    row: AnnotationRow
    signals: NoduleSignals
    model: ModelSignals | None
    verdict: Verdict
    order: int


@dataclass
class QaResult:
    """Every scored row, most suspicious first, and what was read.

    Attributes:
        rows: the scored rows, sorted by suspicion (highest first; ties in file order).
        annotations: the list QA read (columns, source, rows left out).
        seconds: wall time.
        checkpoint: the checkpoint asked, or None.
        reason_counts: per reason, the rows naming it.
    """

    rows: list[ScoredRow]
    annotations: AnnotationList
    seconds: float = 0.0
    checkpoint: Path | None = None
    reason_counts: Counter[str] = field(default_factory=Counter)

    def summary_lines(self) -> list[str]:
        """The summary: what was scored, then one line per reason (rows naming it)."""
        n = len(self.rows)
        high = sum(r.verdict.suspicion >= SUSPICIOUS_FROM for r in self.rows)
        lines = [
            f"{n:,} annotations scored from {self.annotations.source} in {self.seconds:.1f} s"
            + (f" with {self.checkpoint}" if self.checkpoint else ""),
            f"{high:,} with suspicion >= {SUSPICIOUS_FROM:g}",
        ]
        if self.annotations.not_on_disk:
            lines.append(f"{self.annotations.not_on_disk:,} rows not scored: series not on disk")
        if self.annotations.rejected:
            lines.append(f"{self.annotations.rejected:,} annotations left out: rejected by review")
        for reason in REASONS:
            count = self.reason_counts.get(reason, 0)
            if count:
                top = max(r.verdict.scores.get(reason, 0.0) for r in self.rows)
                lines.append(f"{reason}: {count:,} rows (strongest score {top:.2f})")
        return lines


def _off_center(signals: NoduleSignals, radius_mm: float) -> float:
    """How far the center sits from its dense voxels' centroid, in radii (at most 1; 0 when
    unknown): what tells the copy of a nodule from the annotation at its center of mass."""
    offset = signals.fill_offset_mm
    if signals.outside or not math.isfinite(offset) or not math.isfinite(radius_mm):
        return 0.0
    return min(1.0, offset / max(radius_mm, 0.5))


def _series_verdicts(
    rows: Sequence[AnnotationRow],
    signals: Sequence[NoduleSignals],
    models: Sequence[ModelSignals | None],
    rule: QaRule,
) -> list[Verdict]:
    """Judge the rows of one series; duplicates go to the copy that fits its image worse."""
    radii = [0.5 * (r.nodule.diameter_mm or math.nan) for r in rows]
    scores = [
        rule.scores(s, False, m, radius)
        for s, m, radius in zip(signals, models, radii, strict=True)
    ]
    badness = np.array(
        [
            noisy_or(sc) + _off_center(s, radius)
            for sc, s, radius in zip(scores, signals, radii, strict=True)
        ]
    )
    centers = np.array([r.nodule.center_xyz_mm for r in rows], dtype=np.float64)
    diameters = np.array([r.nodule.diameter_mm or math.nan for r in rows], dtype=np.float64)
    copies = duplicate_of(centers, diameters, badness)
    for k, partner in enumerate(copies):
        if partner >= 0:
            scores[k]["duplicate"] = rule.duplicate
    return [judge(sc, rule.named_from) for sc in scores]


def iter_qa(
    folder: LunaFolder,
    *,
    book: ReviewBook | None = None,
    rule: QaRule | None = None,
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    detector: Detector | None = None,
    options: InferenceOptions | None = None,
) -> Generator[QaProgress, None, QaResult]:
    """Score every annotation of ``folder`` (see the module docstring), series by series.

    ``book``: the folder's reviews (None or empty: score the annotation file as it is).
    ``detector``: a CT checkpoint whose probabilities and candidates join the signals.
    Raises :class:`AnnotationError` / :class:`SeriesNotFoundError` for a folder without
    annotations or series.
    """
    started = time.perf_counter()
    rule = rule or QaRule()
    listing = annotation_rows(folder, book)
    by_series: dict[str, list[int]] = {}
    for k, row in enumerate(listing.rows):
        by_series.setdefault(row.nodule.series_uid, []).append(k)
    scored: list[ScoredRow] = []
    tuners = TunerCache() if detector is not None else None
    for done, (uid, indices) in enumerate(sorted(by_series.items()), start=1):
        ct = folder.load(uid)
        rows = [listing.rows[k] for k in indices]
        signals = [
            nodule_signals(
                ct.hu, ct.geometry, r.nodule.center_xyz_mm, r.nodule.diameter_mm, threshold_hu
            )
            for r in rows
        ]
        models: list[ModelSignals | None] = [None] * len(rows)
        if detector is not None:
            models = model_signals(ct, [r.nodule for r in rows], detector, options, tuners)
        verdicts = _series_verdicts(rows, signals, models, rule)
        for k, row, sig, mod, verdict in zip(indices, rows, signals, models, verdicts, strict=True):
            scored.append(ScoredRow(row, sig, mod, verdict, k))
        yield QaProgress(done, len(by_series), f"{uid}: {len(rows)} annotation(s)")
    scored.sort(key=lambda s: (-s.verdict.suspicion, s.order))
    counts: Counter[str] = Counter(reason for s in scored for reason in s.verdict.reasons)
    return QaResult(
        scored,
        listing,
        time.perf_counter() - started,
        detector.path if detector is not None else None,
        counts,
    )


def run_qa(
    folder: LunaFolder,
    *,
    book: ReviewBook | None = None,
    detector: Detector | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> QaResult:
    """:func:`iter_qa` (default rule and threshold) driven to its end."""
    steps = iter_qa(folder, book=book, detector=detector)
    return run_steps(steps, progress, should_stop, "QA", "series")


def _signal_rows(result: QaResult) -> tuple[list[str], list[dict[str, object]]]:
    """``signals.csv``: the row's identity, every signal, the model's view and each score."""
    names = [f.name for f in dataclasses.fields(NoduleSignals)]
    columns = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", *names]
    columns += ["model_probability", "candidate_distance_mm", *(f"score_{r}" for r in REASONS)]
    table: list[dict[str, object]] = []
    for scored in result.rows:
        values: dict[str, object] = {c: scored.row.values.get(c, "") for c in columns[:5]}
        for name in names:
            value = getattr(scored.signals, name)
            values[name] = round(value, 4) if isinstance(value, float) else int(value)
        if scored.model is not None:
            values["model_probability"] = round(scored.model.probability, 4)
            values["candidate_distance_mm"] = round(scored.model.candidate_distance_mm, 2)
        for reason in REASONS:
            values[f"score_{reason}"] = round(scored.verdict.scores.get(reason, 0.0), 3)
        table.append(values)
    return columns, table


def write_qa(result: QaResult, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``suspicious.csv``, ``summary.txt`` and ``signals.csv`` into ``out_dir``
    (atomically, replacing earlier ones); returns the first two paths."""
    out = Path(out_dir)
    columns = [*result.annotations.columns, *QA_COLUMNS]
    table = []
    for scored in result.rows:
        values = dict(scored.row.values)
        values["suspicion"] = f"{scored.verdict.suspicion:.3f}"
        values["reasons"] = ";".join(scored.verdict.reasons)
        table.append(values)
    csv_path = write_csv_atomic(out / SUSPICIOUS_CSV, table, columns, overwrite=True)
    text = "\n".join(result.summary_lines()) + "\n"
    summary = write_text_atomic(out / SUMMARY_TXT, text, overwrite=True)
    signal_columns, signal_table = _signal_rows(result)
    write_csv_atomic(out / SIGNALS_CSV, signal_table, signal_columns, overwrite=True)
    return csv_path, summary


@dataclass(frozen=True)
class SuspicionEntry:
    """One row of ``suspicious.csv`` as the viewer walks it.

    Attributes:
        series_uid: the series.
        center_xyz_mm: the annotation's center, world ``(x, y, z)`` mm.
        suspicion: in [0, 1].
        reasons: the reason words.
        rank: 0 for the most suspicious row.
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    suspicion: float
    reasons: tuple[str, ...]
    rank: int


def read_suspicious(path: str | os.PathLike[str]) -> list[SuspicionEntry]:
    """The rows of a ``suspicious.csv`` in file order (most suspicious first).

    Raises :class:`AnnotationError` naming the file and line when a column is missing or a
    value is not a number (run ``lunaseg qa`` again to rewrite the file).
    """
    src = Path(path)
    table = CsvTable(src, ("seriesuid", "coordX", "coordY", "coordZ", *QA_COLUMNS))
    entries: list[SuspicionEntry] = []
    for line, fields in table:
        text = table.get(line, fields, "reasons") or ""
        entries.append(
            SuspicionEntry(
                table.uid(line, fields),
                table.center(line, fields),
                table.number(line, fields, "suspicion"),
                tuple(w for w in text.split(";") if w),
                len(entries),
            )
        )
    return entries
