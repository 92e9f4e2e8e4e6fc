"""Score candidate nodules exactly as LUNA16's evaluation script does: hits, FROC curve, CPM.

Every center here is in world ``(x, y, z)`` millimetres; nothing touches voxel arrays. The
reference is the challenge's ``noduleCADEvaluationLUNA16.py``; its rules, all reproduced:

* **Per-scan cap.** A scan with more than :data:`MAX_MARKS_PER_SCAN` marks keeps only the marks
  whose probability is strictly above the 101st highest, so ties at the cut are all dropped (150
  marks at 1.0 keep none).
* **Hit.** A mark hits a finding when the squared distance of the centers is strictly less than
  the squared radius (``diameter_mm / 2``). An unknown diameter (empty, or negative: LUNA16
  writes ``-1``) means :data:`~src_train.luna.UNKNOWN_DIAMETER_MM` (10 mm) for included nodules
  and excluded findings alike; a diameter of 0 is hit by nothing.
* **Included nodules** (``annotations.csv``): a mark hitting two counts for both; of several marks
  on one nodule the most probable counts and the others are neither true nor false positives.
* **Excluded findings** (``annotations_excluded.csv``): a mark that hits no included nodule but
  an excluded finding is ignored. Any other mark is a false positive.
* **Curve and CPM** (:mod:`.froc`): ``roc_curve`` points, interpolated linearly and read
  at the grid point nearest each of :data:`FROC_FP_RATES`; the CPM is their mean. Optional
  bootstrap over scans for intervals.

LunaSeg reports a few things the official script does not (and says so in
:meth:`FrocResult.summary`): recall with every candidate before the per-scan cap
(:attr:`FrocResult.recall`, the segmentation stage's view), FP per scan at a given sensitivity,
a CPM interval, and a sensitivity of 0 where the script would give NaN (no nodule found).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from src_train.errors import AnnotationError, ConfigError
from src_train.evaluate.files import Candidate
from src_train.evaluate.froc import (
    BOOTSTRAP_CONFIDENCE,
    FROC_FP_RATES,
    FROC_GRID_MAX_FP_PER_SCAN,
    FROC_GRID_MIN_FP_PER_SCAN,
    FROC_GRID_POINTS,
    FrocBootstrap,
    FrocCurve,
    ProgressFn,
    StopFn,
    bootstrap_froc,
    fps_at_sensitivity,
    froc_curve,
    reading_points,
    sensitivity_at,
)
from src_train.luna import UNKNOWN_DIAMETER_MM, Nodule

log = logging.getLogger(__name__)


#: LUNA16 counts at most this many marks per scan (see :func:`counted_marks` for ties).
MAX_MARKS_PER_SCAN = 100

#: Sensitivities at which the summary gives the FP per scan needed (a LunaSeg addition).
SENSITIVITY_TARGETS: tuple[float, ...] = (0.9, 0.95)


#: Fewest scans whose bootstrap the summary prints as an interval (fewer: said so instead).
MIN_BOOTSTRAP_SCANS = 5


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
        nodule_probability: per nodule (scan by scan in ``series_uids`` order, file order
            within a scan), the probability of its most probable counted hit, NaN when missed.
        nodules: the nodules scored, aligned with ``nodule_probability``.
        thresholds, fps_per_scan, sensitivity: the official FROC points (``roc_curve`` order:
            threshold descending from ``+inf``; see :mod:`src_train.evaluate.froc`).
        fp_rates: the FP rates the CPM averages (:data:`FROC_FP_RATES`).
        sensitivity_at_rates: the interpolated curve read at ``fp_reading_points``.
        nodule_found: per nodule, whether any submitted candidate hits it (before the cap).
        fp_reading_points: per rate, the grid point (FP per scan) actually read.
        n_duplicate_hits: per nodule, its counted hits beyond the first, summed (the script's
            "double detections"; those marks are neither true nor false positives).
        max_marks_per_scan: the cap applied (None: no cap).
        bootstrap: intervals when :func:`evaluate_froc` was asked for them.
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
    fp_reading_points: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_duplicate_hits: int = 0
    max_marks_per_scan: int | None = MAX_MARKS_PER_SCAN
    bootstrap: FrocBootstrap | None = None

    @property
    def n_scans(self) -> int:
        """Number of scans scored."""
        return len(self.series_uids)

    @property
    def shown_bootstrap(self) -> FrocBootstrap | None:
        """The bootstrap when it may be shown as an interval (from at least
        :data:`MIN_BOOTSTRAP_SCANS` scans, with samples), else None."""
        boot = self.bootstrap
        if boot is None or not boot.n_used or self.n_scans < MIN_BOOTSTRAP_SCANS:
            return None
        return boot

    @property
    def n_detected(self) -> int:
        """Nodules hit by at least one submitted candidate (before the per-scan cap)."""
        return int(np.count_nonzero(self.nodule_found))

    @property
    def n_true_positives(self) -> int:
        """Nodules hit by a counted mark (after the cap): the official script's true positives."""
        return int(np.count_nonzero(~np.isnan(self.nodule_probability)))

    @property
    def recall(self) -> float:
        """Fraction of nodules hit by any submitted candidate (NaN without nodules).

        A LunaSeg figure, not the official one: every candidate counts, before the per-scan
        cap (the segmentation stage's recall). The official sensitivity uses the counted marks
        only: ``n_true_positives / n_nodules``, the FROC curve's last point.
        """
        return self.n_detected / self.n_nodules if self.n_nodules else math.nan

    @property
    def candidates_per_scan(self) -> float:
        """Submitted candidates per scan (before the per-scan cap; the script counts after)."""
        return self.n_candidates / self.n_scans if self.n_scans else math.nan

    @property
    def cpm(self) -> float:
        """Competition performance metric: mean sensitivity at :attr:`fp_rates`."""
        return float(np.mean(self.sensitivity_at_rates)) if self.n_nodules else math.nan

    def fps_per_scan_at(self, sensitivity: float) -> float:
        """False positives per scan needed to reach ``sensitivity`` (a LunaSeg addition).

        Read off the same piecewise-linear curve as the CPM: the smallest FP rate at which the
        interpolated sensitivity reaches the target; ``inf`` when the counted marks never reach
        it, NaN without nodules. See :func:`src_train.evaluate.froc.fps_at_sensitivity`.
        """
        curve = FrocCurve(self.thresholds, self.fps_per_scan, self.sensitivity)
        return fps_at_sensitivity(curve, sensitivity)

    def summary(self) -> str:
        """A readable report: the official figures first, then LunaSeg's additions, labelled."""
        cap = "no cap" if self.max_marks_per_scan is None else f"at most {self.max_marks_per_scan}"
        n_tp = self.n_true_positives
        boot = self.bootstrap
        lines = [
            f"LUNA16 evaluation: {self.n_scans} scans, {self.n_nodules} nodules, "
            f"{self.n_excluded} excluded findings",
            f"Counted marks: {self.n_marks}, {_per(self.n_marks, self.n_scans)} per scan ({cap} "
            f"per scan; {self.n_capped} dropped by the cap, ties at the cut included)",
            f"True positives {n_tp}, false positives {self.n_false_positives}, false negatives "
            f"{self.n_nodules - n_tp}; ignored: {self.n_ignored} marks on excluded findings, "
            f"{self.n_duplicate_hits} extra hits on nodules",
            f"Sensitivity (counted marks): {_ratio(n_tp, self.n_nodules)}",
            f"FROC sensitivity (linear interpolation, nearest of {FROC_GRID_POINTS} grid points):",
        ]
        for i, (rate, sens) in enumerate(
            zip(self.fp_rates, self.sensitivity_at_rates, strict=True)
        ):
            text = f"  {rate:>6g} FP/scan: {sens:.3f}"
            if boot is not None and boot.n_used:
                text += (
                    f"  (bootstrap mean {boot.sensitivity_mean[i]:.3f}, "
                    f"{boot.confidence:.0%} CI {boot.sensitivity_lower[i]:.3f}-"
                    f"{boot.sensitivity_upper[i]:.3f})"
                )
            lines.append(text)
        rates = ", ".join(f"{r:g}" for r in self.fp_rates)
        lines.append(f"CPM (mean sensitivity at {rates} FP/scan): {self.cpm:.3f}")
        lines.append("LunaSeg additions (not computed by the official LUNA16 script):")
        lines.append(
            f"  Recall with every candidate, before the per-scan cap: "
            f"{_ratio(self.n_detected, self.n_nodules)}; "
            f"{_per(self.n_candidates, self.n_scans)} candidates per scan before the cap"
        )
        reads = []
        for target in SENSITIVITY_TARGETS:
            fps = self.fps_per_scan_at(target)
            reads.append(
                f"{target:.0%}: " + (f"{fps:.3f}" if math.isfinite(fps) else "not reached")
            )
        lines.append("  FP per scan to reach a sensitivity (same curve): " + "; ".join(reads))
        if boot is not None and self.n_scans < MIN_BOOTSTRAP_SCANS:
            lines.append(
                f"  CPM bootstrap: no interval from {self.n_scans} scan(s) (fewer than "
                f"{MIN_BOOTSTRAP_SCANS}): resampling so few scans cannot show the spread"
            )
        elif boot is not None:
            lines.append(
                f"  CPM {boot.confidence:.0%} bootstrap interval: {boot.cpm_lower:.3f}-"
                f"{boot.cpm_upper:.3f} (mean {boot.cpm_mean:.3f}; {boot.n_used} of "
                f"{boot.n_samples} samples over scans, seed {boot.seed})"
            )
        if self.n_nodules and not n_tp:
            lines.append("  No nodule hit: the official script's sensitivities are NaN; 0 here.")
        return "\n".join(lines)


def _ratio(count: int, total: int) -> str:
    return f"{count / total:.3f} ({count}/{total})" if total else f"nan ({count}/0)"


def _per(count: int, n_scans: int) -> str:
    return f"{count / n_scans:.1f}" if n_scans else "nan"


# ---------------------------------------------------------------------------------------------
# The hit rule
# ---------------------------------------------------------------------------------------------
def _radii_sq_mm2(findings: Sequence[Nodule]) -> np.ndarray:
    """Squared radii (mm^2); an unknown diameter (None or negative) is UNKNOWN_DIAMETER_MM."""
    diameters = np.array(
        [-1.0 if f.diameter_mm is None else f.diameter_mm for f in findings], dtype=np.float64
    )
    diameters = np.where(diameters < 0, UNKNOWN_DIAMETER_MM, diameters)
    return (diameters / 2.0) ** 2


def nodule_hits(
    centers_xyz_mm: np.ndarray | Sequence[Sequence[float]],
    nodules: Sequence[Nodule],
) -> np.ndarray:
    """LUNA16's hit test: boolean ``(n_marks, n_nodules)``, True where a mark hits a nodule.

    ``centers_xyz_mm`` is ``(n_marks, 3)`` world ``(x, y, z)`` mm, all on the nodules' scan (the
    series UID is not checked). A mark hits when its squared distance to the nodule's center is
    strictly less than the squared radius ``(diameter_mm / 2) ** 2``. An unknown diameter (None
    or negative) is :data:`~src_train.luna.UNKNOWN_DIAMETER_MM`, the one rule for unknown
    sizes; 0 is hit by nothing.
    """
    centers = np.asarray(centers_xyz_mm, dtype=np.float64).reshape(-1, 3)
    radii_sq = _radii_sq_mm2(nodules)
    if not len(nodules) or not len(centers):
        return np.zeros((len(centers), len(nodules)), dtype=bool)
    ref = np.asarray([n.center_xyz_mm for n in nodules], dtype=np.float64)
    d = ref[None, :, :] - centers[:, None, :]
    # Summed x, y, z in that order, as the script does, so boundary cases round alike.
    dist_sq = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
    return dist_sq < radii_sq[None, :]


def nodule_recall(
    nodules: Sequence[Nodule],
    candidate_centers_xyz_mm: np.ndarray | Sequence[Sequence[float]],
) -> tuple[int, int]:
    """``(found, total)``: nodules hit (:func:`nodule_hits`) by any candidate, and all nodules.

    One scan's nodules and candidate centers (world ``(x, y, z)`` mm); every candidate counts,
    no cap and no probability. Diameters as in :func:`nodule_hits`.
    """
    hits = nodule_hits(candidate_centers_xyz_mm, nodules)
    return int(np.count_nonzero(hits.any(axis=0))), len(nodules)


def counted_marks(
    probabilities: np.ndarray, max_marks: int | None = MAX_MARKS_PER_SCAN
) -> np.ndarray:
    """Boolean mask of one scan's marks that LUNA16 counts.

    With more than ``max_marks`` marks, only those strictly more probable than the
    ``(max_marks + 1)``-th highest probability count: ties at the cut are all dropped, so at
    most ``max_marks`` remain (possibly none). ``None`` counts every mark.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if max_marks is None or len(probs) <= max_marks:
        return np.ones(len(probs), dtype=bool)
    cut = np.sort(probs)[::-1][max_marks]
    return probs > cut


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def _group(items: Iterable, uids: set[str]) -> dict[str, list]:
    grouped: dict[str, list] = defaultdict(list)
    for item in items:
        if item.series_uid in uids:
            grouped[item.series_uid].append(item)
    return grouped


def _check_options(
    max_marks_per_scan: int | None, fp_rates: Sequence[float], bootstrap: int, confidence: float
) -> None:
    if max_marks_per_scan is not None and max_marks_per_scan < 1:
        raise ConfigError(f"max_marks_per_scan must be >= 1 or None, got {max_marks_per_scan}.")
    lo, hi = FROC_GRID_MIN_FP_PER_SCAN, FROC_GRID_MAX_FP_PER_SCAN
    if not fp_rates or not all(lo <= r <= hi for r in fp_rates):
        raise ConfigError(f"fp_rates must lie in [{lo:g}, {hi:g}] FP per scan, got {fp_rates}.")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0 samples, got {bootstrap}.")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}.")


def _scans_to_score(
    nodules: Sequence[Nodule], candidates: Sequence[Candidate], series_uids: Sequence[str] | None
) -> list[str]:
    """The scans scored, sorted (``series_uids``, else those named by nodules or candidates);
    warns about candidates on other scans, refuses a candidate without a finite probability."""
    if series_uids is None:
        uids = sorted({n.series_uid for n in nodules} | {c.series_uid for c in candidates})
    else:
        uids = sorted(set(series_uids))
    uid_set = set(uids)
    stray = sum(1 for c in candidates if c.series_uid not in uid_set)
    if stray:
        log.warning("%d candidates belong to scans outside the series list; ignored", stray)
    for c in candidates:
        if not math.isfinite(c.probability):
            raise AnnotationError(
                f"Candidate of series {c.series_uid} (line {c.row}) has probability "
                f"{c.probability}; give every candidate a finite probability."
            )
    return uids


@dataclass
class _ScanScore:
    """One scan scored: per nodule its best counted hit (NaN: missed) and whether any
    candidate hits it; the probabilities of its false positives; the counts."""

    best: np.ndarray
    found: np.ndarray
    fp_probs: np.ndarray
    n_candidates: int
    n_marks: int
    n_ignored: int
    n_duplicates: int


def _score_scan(
    nodules: Sequence[Nodule],
    cands: Sequence[Candidate],
    excluded: Sequence[Nodule],
    max_marks_per_scan: int | None,
) -> _ScanScore:
    """Score one scan's candidates against its nodules and excluded findings (LUNA16 rules:
    the per-scan cap, then hits on nodules, hits only on excluded findings ignored)."""
    probs = np.asarray([c.probability for c in cands], dtype=np.float64)
    centers = np.asarray([c.center_xyz_mm for c in cands], dtype=np.float64).reshape(-1, 3)
    hits_all = nodule_hits(centers, nodules)
    keep = counted_marks(probs, max_marks_per_scan)
    probs, centers, hit_nod = probs[keep], centers[keep], hits_all[keep]
    hit_exc = nodule_hits(centers, excluded)
    on_nodule = hit_nod.any(axis=1)
    on_excluded = ~on_nodule & hit_exc.any(axis=1)
    false_pos = ~on_nodule & ~on_excluded
    best = np.where(hit_nod, probs[:, None], -np.inf).max(axis=0, initial=-np.inf)
    return _ScanScore(
        best=np.where(np.isfinite(best), best, np.nan),
        found=np.asarray(hits_all.any(axis=0)),
        fp_probs=probs[false_pos],
        n_candidates=len(cands),
        n_marks=len(probs),
        n_ignored=int(on_excluded.sum()),
        n_duplicates=int(np.maximum(hit_nod.sum(axis=0) - 1, 0).sum()),
    )


def evaluate_froc(
    nodules: Sequence[Nodule],
    candidates: Sequence[Candidate],
    *,
    excluded: Sequence[Nodule] = (),
    series_uids: Sequence[str] | None = None,
    max_marks_per_scan: int | None = MAX_MARKS_PER_SCAN,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    bootstrap: int = 0,
    seed: int | None = None,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> FrocResult:
    """Score ``candidates`` against ``nodules`` with LUNA16's rules (see the module docstring).

    Args:
        nodules: annotated nodules (world mm centers, diameters in mm; an unknown one is
            :data:`~src_train.luna.UNKNOWN_DIAMETER_MM`, see :func:`nodule_hits`).
        candidates: the submission (finite probabilities).
        excluded: findings whose hits are ignored (neither true nor false positives).
        series_uids: the scans to score, including scans without candidates or nodules; by
            default the scans named by ``nodules`` or ``candidates``. Entries on other scans
            are left out (with a warning for candidates).
        max_marks_per_scan: per-scan cap (:func:`counted_marks`); None for no cap.
        fp_rates: FP per scan (within 1/8..8) at which the CPM reads the curve.
        bootstrap: samples for bootstrap intervals (0: none; the script draws 1000).
        seed: seed of the bootstrap draws (fixed seed: reproducible intervals).
        confidence: two-sided confidence of the bootstrap intervals.
        progress: ``progress(done, n, "bootstrap")`` after each bootstrap sample.
        should_stop: polled between bootstrap samples; True raises :class:`CancelledError`.
    """
    _check_options(max_marks_per_scan, fp_rates, bootstrap, confidence)
    uids = _scans_to_score(nodules, candidates, series_uids)
    uid_set = set(uids)
    by_scan_nod = _group(nodules, uid_set)
    by_scan_exc = _group(excluded, uid_set)
    by_scan_cand = _group(candidates, uid_set)
    scans = [
        _score_scan(
            by_scan_nod.get(uid, []),
            by_scan_cand.get(uid, []),
            by_scan_exc.get(uid, []),
            max_marks_per_scan,
        )
        for uid in uids
    ]
    scored = [n for uid in uids for n in by_scan_nod.get(uid, [])]
    best_prob = [scan.best for scan in scans]
    n_candidates = sum(scan.n_candidates for scan in scans)
    n_marks = sum(scan.n_marks for scan in scans)
    nodule_probability = np.concatenate(best_prob) if best_prob else np.zeros(0)
    nodule_scan = np.repeat(np.arange(len(uids)), [len(b) for b in best_prob])
    fps = np.concatenate([scan.fp_probs for scan in scans]) if scans else np.zeros(0)
    fps_scan = np.repeat(np.arange(len(uids)), [len(scan.fp_probs) for scan in scans])
    detected = ~np.isnan(nodule_probability)
    curve = froc_curve(nodule_probability[detected], fps, n_nodules=len(scored), n_scans=len(uids))
    points = reading_points(fp_rates)
    boot = None
    if bootstrap and uids:
        boot = bootstrap_froc(
            nodule_probability[detected],
            nodule_scan[detected],
            fps,
            fps_scan,
            nodule_scan[~detected],
            n_scans=len(uids),
            n_samples=bootstrap,
            seed=seed,
            fp_rates=fp_rates,
            confidence=confidence,
            progress=progress,
            should_stop=should_stop,
        )
    return FrocResult(
        series_uids=uids,
        n_nodules=len(scored),
        n_excluded=sum(len(v) for v in by_scan_exc.values()),
        n_candidates=n_candidates,
        n_marks=n_marks,
        n_capped=n_candidates - n_marks,
        n_ignored=sum(scan.n_ignored for scan in scans),
        n_false_positives=len(fps),
        nodule_probability=nodule_probability,
        nodules=scored,
        thresholds=curve.thresholds,
        fps_per_scan=curve.fps_per_scan,
        sensitivity=curve.sensitivity,
        fp_rates=tuple(float(r) for r in fp_rates),
        sensitivity_at_rates=sensitivity_at(curve, points),
        nodule_found=(
            np.concatenate([scan.found for scan in scans]) if scans else np.zeros(0, dtype=bool)
        ),
        fp_reading_points=points,
        n_duplicate_hits=sum(scan.n_duplicates for scan in scans),
        max_marks_per_scan=max_marks_per_scan,
        bootstrap=boot,
    )
