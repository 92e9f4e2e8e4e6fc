"""Score candidate nodules the way LUNA16 does: nodule-level hits, FROC curve and CPM.

Every center here is in world ``(x, y, z)`` millimetres; nothing touches voxel arrays.

The rules, as the LUNA16 challenge applies them:

* A candidate *hits* a nodule when its center is strictly closer than the nodule's radius
  (``diameter_mm / 2``) to the nodule's center.
* Several hits on one nodule count once, with the probability of the most probable one; the
  other hits are neither true nor false positives.
* A candidate that hits no nodule but an *excluded* finding (``annotations_excluded.csv``) is
  ignored. A candidate that hits nothing is a false positive.
* At most :data:`MAX_MARKS_PER_SCAN` candidates per scan count (the most probable ones).
* The FROC curve plots sensitivity against the mean number of false positives per scan as the
  probability threshold moves; the CPM is the mean sensitivity at :data:`FROC_FP_RATES`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src_train.atomic import atomic_write, write_text_atomic
from src_train.errors import AnnotationError, ConfigError, OutputExistsError
from src_train.luna import Nodule

log = logging.getLogger(__name__)

#: False positives per scan at which LUNA16 reads the FROC curve; their mean sensitivity is the CPM.
FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: LUNA16 counts at most this many candidates per scan (the most probable ones).
MAX_MARKS_PER_SCAN = 100

#: Diameter (mm) LUNA16 gives an excluded finding whose file row has none (``-1``).
EXCLUDED_FALLBACK_DIAMETER_MM = 10.0

#: Leading columns of a LUNA16 submission file; more columns may follow them.
SUBMISSION_COLUMNS: tuple[str, ...] = ("seriesuid", "coordX", "coordY", "coordZ", "probability")

#: Name of the per-run series list ``lunaseg infer`` writes beside ``candidates.csv``.
SERIES_LIST_NAME = "seriesuids.csv"


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


@dataclass
class FrocResult:
    """Outcome of :func:`evaluate_froc`.

    Attributes:
        series_uids: the scans scored (sorted).
        n_nodules: nodules to find in those scans.
        n_excluded: excluded findings in those scans.
        n_candidates: candidates submitted for those scans (before the per-scan cap).
        n_marks: candidates that counted (after the per-scan cap).
        n_capped: candidates dropped by the per-scan cap.
        n_ignored: counted candidates that hit only excluded findings.
        n_false_positives: counted candidates that hit nothing.
        nodule_probability: per nodule (in the order given, restricted to the scored scans),
            the probability of its most probable counted hit, NaN when missed.
        nodule_found: per nodule, whether any submitted candidate hits it (before the cap).
        nodules: the nodules scored, aligned with ``nodule_probability``.
        thresholds: probability thresholds of the curve, descending.
        fps_per_scan: mean false positives per scan at each threshold.
        sensitivity: fraction of nodules hit at each threshold.
        fp_rates: the FP rates the CPM averages (:data:`FROC_FP_RATES`).
        sensitivity_at_rates: sensitivity at each of ``fp_rates``.
    """

    series_uids: list[str]
    n_nodules: int
    n_excluded: int
    n_candidates: int
    n_marks: int
    n_capped: int
    n_ignored: int
    n_false_positives: int
    nodule_probability: np.ndarray
    nodules: list[Nodule]
    thresholds: np.ndarray
    fps_per_scan: np.ndarray
    sensitivity: np.ndarray
    fp_rates: tuple[float, ...] = FROC_FP_RATES
    sensitivity_at_rates: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nodule_found: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_scans(self) -> int:
        """Number of scans scored."""
        return len(self.series_uids)

    @property
    def n_detected(self) -> int:
        """Nodules hit by at least one submitted candidate (before the per-scan cap)."""
        return int(np.count_nonzero(self.nodule_found))

    @property
    def recall(self) -> float:
        """Fraction of nodules hit by any submitted candidate (NaN without nodules).

        This is the segmentation stage's recall: every candidate goes on to the next stage.
        The FROC curve's last point is the same with only the counted (capped) candidates.
        """
        return self.n_detected / self.n_nodules if self.n_nodules else math.nan

    @property
    def candidates_per_scan(self) -> float:
        """Submitted candidates per scan (before the per-scan cap)."""
        return self.n_candidates / self.n_scans if self.n_scans else math.nan

    @property
    def cpm(self) -> float:
        """Competition performance metric: mean sensitivity at :attr:`fp_rates`."""
        return float(np.mean(self.sensitivity_at_rates)) if self.n_nodules else math.nan

    def summary(self) -> str:
        """A readable multi-line report that names the CPM."""
        lines = [
            f"LUNA16-style evaluation: {self.n_scans} scans, {self.n_nodules} nodules, "
            f"{self.n_excluded} excluded findings",
            f"Candidates: {self.n_candidates} ({self.candidates_per_scan:.1f} per scan); "
            f"{self.n_capped} beyond {MAX_MARKS_PER_SCAN} per scan dropped, "
            f"{self.n_ignored} on excluded findings ignored, "
            f"{self.n_false_positives} false positives",
            f"Nodule recall (any candidate): {self.recall:.3f} "
            f"({self.n_detected}/{self.n_nodules}); with the counted candidates only: "
            f"{self.sensitivity[-1] if self.n_nodules else math.nan:.3f}",
            "FROC sensitivity at false positives per scan:",
        ]
        for rate, sens in zip(self.fp_rates, self.sensitivity_at_rates, strict=True):
            lines.append(f"  {rate:>6g} FP/scan: {sens:.3f}")
        lines.append(
            f"CPM (mean sensitivity at {', '.join(f'{r:g}' for r in self.fp_rates)} FP/scan): "
            f"{self.cpm:.3f}"
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_submission(path: str | os.PathLike[str]) -> list[Candidate]:
    """Read a LUNA16 submission CSV (``seriesuid,coordX,coordY,coordZ,probability,...``).

    Extra columns after the five are allowed and ignored. Malformed rows raise
    :class:`AnnotationError` naming the file and line.
    """
    src = Path(path)
    if not src.is_file():
        raise AnnotationError(
            f"{src} does not exist; pass the candidates CSV 'lunaseg infer' wrote."
        )
    out: list[Candidate] = []
    with src.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:5]) != SUBMISSION_COLUMNS:
            raise AnnotationError(
                f"{src}: the header must start with {','.join(SUBMISSION_COLUMNS)}; "
                f"found {','.join(header or [])!r}."
            )
        for line_no, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < len(SUBMISSION_COLUMNS) or not row[0].strip():
                raise AnnotationError(f"{src}, line {line_no}: expected 5 columns, got {row!r}.")
            try:
                x, y, z, prob = (float(v) for v in row[1:5])
            except ValueError as exc:
                raise AnnotationError(f"{src}, line {line_no}: not a number in {row!r}.") from exc
            if not all(math.isfinite(v) for v in (x, y, z, prob)):
                raise AnnotationError(f"{src}, line {line_no}: non-finite value in {row!r}.")
            out.append(Candidate(row[0].strip(), (x, y, z), prob, line_no))
    return out


def read_series_list(path: str | os.PathLike[str]) -> list[str]:
    """Series UIDs, one per line (first column; a ``seriesuid`` header line is skipped)."""
    src = Path(path)
    if not src.is_file():
        raise AnnotationError(f"{src} does not exist; pass a file with one series UID per line.")
    uids: list[str] = []
    with src.open(newline="") as fh:
        for row in csv.reader(fh):
            if row and row[0].strip() and row[0].strip().lower() != "seriesuid":
                uids.append(row[0].strip())
    return uids


def read_excluded(path: str | os.PathLike[str]) -> list[Nodule]:
    """Read ``annotations_excluded.csv`` (``seriesuid,coordX,coordY,coordZ,diameter_mm``).

    Unlike annotations, a diameter may be missing or ``-1`` (LUNA16 writes that): it becomes
    None, and scoring gives such findings :data:`EXCLUDED_FALLBACK_DIAMETER_MM`.
    """
    src = Path(path)
    if not src.is_file():
        raise AnnotationError(f"{src} does not exist; pass LUNA16's annotations_excluded.csv.")
    out: list[Nodule] = []
    with src.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"seriesuid", "coordX", "coordY", "coordZ"} - set(reader.fieldnames or [])
        if missing:
            raise AnnotationError(f"{src}: missing column(s) {', '.join(sorted(missing))}.")
        for line_no, row in enumerate(reader, start=2):
            try:
                xyz = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
                text = (row.get("diameter_mm") or "").strip()
                diameter = float(text) if text else None
            except (TypeError, ValueError) as exc:
                raise AnnotationError(f"{src}, line {line_no}: not a number in {row!r}.") from exc
            if diameter is not None and not diameter > 0:
                diameter = None
            uid = (row["seriesuid"] or "").strip()
            out.append(Nodule(uid, xyz, diameter, is_nodule=False, row=line_no))
    return out


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def _radii_sq_mm2(findings: Sequence[Nodule], *, excluded: bool) -> np.ndarray:
    """Squared radii (mm^2) of findings; included nodules must have a positive diameter."""
    radii = np.empty(len(findings))
    for i, f in enumerate(findings):
        diameter = f.diameter_mm
        if diameter is None or not diameter > 0:
            if not excluded:
                raise AnnotationError(
                    f"Nodule of series {f.series_uid} (line {f.row}) has no positive diameter "
                    f"({diameter}); LUNA16 scoring needs one for every annotated nodule."
                )
            diameter = EXCLUDED_FALLBACK_DIAMETER_MM
        radii[i] = diameter / 2.0
    return radii**2


def _hits(centers: np.ndarray, findings: Sequence[Nodule], *, excluded: bool) -> np.ndarray:
    """Boolean ``(n_candidates, n_findings)``: candidate strictly inside the finding's radius."""
    if not findings or not len(centers):
        return np.zeros((len(centers), len(findings)), dtype=bool)
    ref = np.asarray([f.center_xyz_mm for f in findings], dtype=np.float64)
    d2 = ((centers[:, None, :] - ref[None, :, :]) ** 2).sum(axis=-1)
    return d2 < _radii_sq_mm2(findings, excluded=excluded)[None, :]


def _group(items: Iterable, uids: set[str]) -> dict[str, list]:
    grouped: dict[str, list] = defaultdict(list)
    for item in items:
        if item.series_uid in uids:
            grouped[item.series_uid].append(item)
    return grouped


def evaluate_froc(
    nodules: Sequence[Nodule],
    candidates: Sequence[Candidate],
    *,
    excluded: Sequence[Nodule] = (),
    series_uids: Sequence[str] | None = None,
    max_marks_per_scan: int = MAX_MARKS_PER_SCAN,
    fp_rates: Sequence[float] = FROC_FP_RATES,
) -> FrocResult:
    """Score ``candidates`` against ``nodules`` with LUNA16's rules (see the module docstring).

    Args:
        nodules: annotated nodules (world mm centers, diameters in mm).
        candidates: the submission.
        excluded: findings whose hits are ignored (neither true nor false positives).
        series_uids: the scans to score, including scans without candidates or nodules; by
            default the scans named by ``nodules`` or ``candidates``. Entries on other scans
            are left out (with a warning for candidates).
        max_marks_per_scan: cap on counted candidates per scan (most probable kept; ties keep
            file order).
        fp_rates: false positives per scan at which sensitivity is read for the CPM.

    Returns:
        A :class:`FrocResult`; sensitivity at a rate ``r`` is the highest sensitivity reached
        with at most ``r`` false positives per scan.
    """
    if max_marks_per_scan < 1:
        raise ConfigError(f"max_marks_per_scan must be >= 1, got {max_marks_per_scan}.")
    if series_uids is None:
        uids = sorted({n.series_uid for n in nodules} | {c.series_uid for c in candidates})
    else:
        uids = sorted(set(series_uids))
    uid_set = set(uids)
    stray = sum(1 for c in candidates if c.series_uid not in uid_set)
    if stray:
        log.warning("%d candidates belong to scans outside the series list; ignored", stray)
    by_scan_nod = _group(nodules, uid_set)
    by_scan_exc = _group(excluded, uid_set)
    by_scan_cand = _group(candidates, uid_set)

    scored_nodules: list[Nodule] = []
    best_prob: list[np.ndarray] = []
    found: list[np.ndarray] = []
    fp_probs: list[np.ndarray] = []
    n_candidates = n_marks = n_capped = n_ignored = 0
    for uid in uids:
        scan_nodules = by_scan_nod.get(uid, [])
        cands = by_scan_cand.get(uid, [])
        probs = np.asarray([c.probability for c in cands], dtype=np.float64)
        every = np.asarray([c.center_xyz_mm for c in cands], dtype=np.float64).reshape(-1, 3)
        found.append(np.asarray(_hits(every, scan_nodules, excluded=False).any(axis=0)))
        order = np.argsort(-probs, kind="stable")[:max_marks_per_scan]
        n_candidates += len(cands)
        n_capped += len(cands) - len(order)
        n_marks += len(order)
        probs = probs[order]
        centers = np.asarray([cands[i].center_xyz_mm for i in order], dtype=np.float64)
        centers = centers.reshape(-1, 3)
        hit_nod = _hits(centers, scan_nodules, excluded=False)
        hit_exc = _hits(centers, by_scan_exc.get(uid, []), excluded=True)
        on_nodule = hit_nod.any(axis=1)
        on_excluded = ~on_nodule & hit_exc.any(axis=1)
        n_ignored += int(on_excluded.sum())
        fp_probs.append(probs[~on_nodule & ~on_excluded])
        best = np.where(hit_nod, probs[:, None], -np.inf).max(axis=0, initial=-np.inf)
        best_prob.append(np.where(np.isfinite(best), best, np.nan))
        scored_nodules.extend(scan_nodules)

    nodule_probability = np.concatenate(best_prob) if best_prob else np.zeros(0)
    fps = np.concatenate(fp_probs) if fp_probs else np.zeros(0)
    thresholds, fps_per_scan, sensitivity = _froc_curve(
        nodule_probability, fps, n_scans=len(uids), n_nodules=len(scored_nodules)
    )
    at_rates = np.asarray(
        [_sensitivity_at(fps_per_scan, sensitivity, rate) for rate in fp_rates], dtype=np.float64
    )
    return FrocResult(
        series_uids=uids,
        n_nodules=len(scored_nodules),
        n_excluded=sum(len(v) for v in by_scan_exc.values()),
        n_candidates=n_candidates,
        n_marks=n_marks,
        n_capped=n_capped,
        n_ignored=n_ignored,
        n_false_positives=len(fps),
        nodule_probability=nodule_probability,
        nodules=scored_nodules,
        thresholds=thresholds,
        fps_per_scan=fps_per_scan,
        sensitivity=sensitivity,
        fp_rates=tuple(float(r) for r in fp_rates),
        sensitivity_at_rates=at_rates,
        nodule_found=np.concatenate(found) if found else np.zeros(0, dtype=bool),
    )


def _froc_curve(
    tp_probs: np.ndarray, fp_probs: np.ndarray, *, n_scans: int, n_nodules: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC points at every distinct probability (descending), starting at ``(0 FP, 0)``.

    ``tp_probs`` holds one entry per nodule (NaN = missed); ``fp_probs`` one per false positive.
    Returns ``(thresholds, fps_per_scan, sensitivity)``; the first point has threshold +inf.
    """
    found = tp_probs[~np.isnan(tp_probs)]
    thresholds = np.unique(np.concatenate([found, fp_probs]))[::-1]
    # Marks at or above each threshold: searchsorted on the ascending arrays.
    tp_sorted = np.sort(found)
    fp_sorted = np.sort(fp_probs)
    tp_count = len(tp_sorted) - np.searchsorted(tp_sorted, thresholds, side="left")
    fp_count = len(fp_sorted) - np.searchsorted(fp_sorted, thresholds, side="left")
    thresholds = np.concatenate([[np.inf], thresholds])
    tp_count = np.concatenate([[0], tp_count])
    fp_count = np.concatenate([[0], fp_count])
    sensitivity = tp_count / n_nodules if n_nodules else np.full(len(tp_count), np.nan)
    fps_per_scan = fp_count / n_scans if n_scans else np.zeros(len(fp_count))
    return thresholds, fps_per_scan.astype(np.float64), sensitivity.astype(np.float64)


def _sensitivity_at(fps_per_scan: np.ndarray, sensitivity: np.ndarray, rate: float) -> float:
    """Highest sensitivity on the curve with at most ``rate`` false positives per scan."""
    allowed = fps_per_scan <= rate + 1e-12
    return float(sensitivity[allowed].max()) if allowed.any() else 0.0


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _check_new(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; remove it or pass --overwrite.")


def write_froc_csv(
    result: FrocResult, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write the FROC curve (``threshold,fps_per_scan,sensitivity``) atomically."""
    rows = ["threshold,fps_per_scan,sensitivity"]
    rows += [
        f"{t:.6g},{f:.6g},{s:.6g}"
        for t, f, s in zip(result.thresholds, result.fps_per_scan, result.sensitivity, strict=True)
    ]
    return write_text_atomic(path, "\n".join(rows) + "\n", overwrite=overwrite)


def plot_froc(
    result: FrocResult, path: str | os.PathLike[str], *, overwrite: bool = False, title: str = ""
) -> Path:
    """Draw the FROC curve (log FP axis, the CPM's operating points marked) to a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dest = Path(path)
    _check_new(dest, overwrite)
    fig = Figure(figsize=(6, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = min(result.fp_rates) / 2, max(result.fp_rates) * 2
    fps = np.clip(np.append(result.fps_per_scan, hi), lo, hi)
    sens = np.append(result.sensitivity, result.sensitivity[-1] if result.n_nodules else np.nan)
    ax.step(fps, sens, where="post", color="tab:blue", label="FROC")
    ax.plot(
        result.fp_rates,
        result.sensitivity_at_rates,
        "o",
        color="tab:red",
        label=f"CPM = {result.cpm:.3f}",
    )
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo, hi)
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
