"""The FROC curve, its CPM reading and its bootstrap, as LUNA16's evaluation script computes them.

Pure numpy on probabilities and counts; matching marks to nodules lives in
:mod:`src_train.evaluate`, which is the module to call. The reference is the challenge's
``noduleCADEvaluationLUNA16.py`` (Python 2, scikit-learn's ``roc_curve``); this module
reproduces its arithmetic without scikit-learn:

* **Points.** One point per distinct probability of the detected nodules and false positives
  (probability descending), after ``roc_curve``'s ``drop_intermediate`` pass, preceded by
  ``(0, 0)`` at threshold ``+inf``. False positives per scan =
  ``fpr * n_false_positives / n_scans``; sensitivity = ``tpr * n_detected / n_nodules``, where
  ``n_detected`` counts nodules hit by a counted mark and ``n_nodules`` every nodule.
* **Border cases.** Without false positives the script sets every FP rate to 0. Without a
  detected nodule its sensitivities are NaN (``0 * NaN``); here they are 0, the limit, so a
  model that finds nothing scores 0 rather than NaN. Without nodules the sensitivity is NaN.
* **Reading.** The curve is read by linear interpolation (``np.interp``) on
  ``np.linspace(0.125, 8, 10001)``; the sensitivity at a rate is the value at the grid point
  nearest to it (the widely used Python-3 adaptations of the script take the grid point within
  3e-4 FP/scan of the rate, which is the same point for all seven rates). At a vertical step
  ``np.interp`` returns the top; beyond the last point, the last sensitivity.
* **Bootstrap.** Scans are drawn with replacement (as many as there are), a curve is computed
  per sample with the scan count unchanged, and each statistic is reported as the sample mean
  with bounds ``sorted[floor(p * n)]`` and ``sorted[floor((1 - p) * n)]``, ``p = (1 - c) / 2``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from src_train.errors import CancelledError

log = logging.getLogger(__name__)

#: ``progress(samples_done, n_samples, message)``, called after each bootstrap sample.
ProgressFn = Callable[[int, int, str], None]
#: Polled between bootstrap samples; True stops the work with :class:`CancelledError`.
StopFn = Callable[[], bool]

#: False positives per scan at which LUNA16 reads the FROC curve; their mean sensitivity is the CPM.
FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: First and last false-positive rate (per scan) of the grid the curve is interpolated on.
FROC_GRID_MIN_FP_PER_SCAN = 0.125
FROC_GRID_MAX_FP_PER_SCAN = 8.0

#: Number of points of that grid (the official script's ``np.linspace(..., num=10001)``).
FROC_GRID_POINTS = 10001

#: Samples the official script draws when it bootstraps (LunaSeg draws none unless asked).
DEFAULT_BOOTSTRAP_SAMPLES = 1000

#: Two-sided confidence of the bootstrap interval.
BOOTSTRAP_CONFIDENCE = 0.95

#: Slack (as a fraction of nodules) when comparing a curve's sensitivity with a target: curve
#: values come from ``tpr * n_detected / n_nodules`` and can miss an exact fraction by 1 ulp.
SENSITIVITY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class FrocCurve:
    """FROC points, in the order the official script's ``roc_curve`` returns them.

    Attributes:
        thresholds: probability thresholds, descending; the first is ``+inf``.
        fps_per_scan: mean false positives per scan at each threshold (non-decreasing).
        sensitivity: fraction of all nodules hit at each threshold (non-decreasing).
    """

    thresholds: np.ndarray
    fps_per_scan: np.ndarray
    sensitivity: np.ndarray


@dataclass(frozen=True)
class FrocBootstrap:
    """Bootstrap statistics of the CPM and of the sensitivity at each FP rate.

    Attributes:
        n_samples: samples drawn.
        n_used: samples that held at least one nodule (the others have no sensitivity and are
            left out of every statistic).
        seed: seed of the generator (None: fresh entropy, not reproducible).
        confidence: two-sided confidence of the bounds.
        fp_rates: the rates of ``sensitivity_*`` (false positives per scan).
        sensitivity_mean, sensitivity_lower, sensitivity_upper: per rate, the mean over samples
            and the bounds.
        cpm_mean, cpm_lower, cpm_upper: the same for the CPM (the official script bootstraps
            the curve only; the CPM is averaged per sample here, with the same bound rule).
    """

    n_samples: int
    n_used: int
    seed: int | None
    confidence: float
    fp_rates: tuple[float, ...]
    sensitivity_mean: np.ndarray
    sensitivity_lower: np.ndarray
    sensitivity_upper: np.ndarray
    cpm_mean: float
    cpm_lower: float
    cpm_upper: float


def _curve_from_counts(
    thresholds: np.ndarray,
    tp_count: np.ndarray,
    fp_count: np.ndarray,
    *,
    n_nodules: float,
    n_scans: int,
) -> FrocCurve:
    """Finish a curve from cumulative counts at each distinct threshold (descending).

    Applies ``roc_curve``'s ``drop_intermediate`` (a point goes when the second differences of
    both counts are 0 there), prepends ``(0, 0)`` at ``+inf`` and scales as the script does.
    """
    if len(thresholds) > 2:
        corner = np.diff(fp_count, 2).astype(bool) | np.diff(tp_count, 2).astype(bool)
        keep = np.concatenate([[True], corner, [True]])
        thresholds, tp_count, fp_count = thresholds[keep], tp_count[keep], fp_count[keep]
    thresholds = np.concatenate([[np.inf], thresholds])
    tp_count = np.concatenate([[0.0], tp_count])
    fp_count = np.concatenate([[0.0], fp_count])
    n_detected = tp_count[-1]
    n_false_positives = fp_count[-1]
    if n_false_positives > 0:
        fpr = fp_count / n_false_positives
        fps_per_scan = fpr * n_false_positives / n_scans
    else:
        fps_per_scan = np.zeros(len(fp_count))
    if n_nodules <= 0:
        sensitivity = np.full(len(tp_count), np.nan)
    elif n_detected > 0:
        tpr = tp_count / n_detected
        sensitivity = tpr * n_detected / n_nodules
    else:
        sensitivity = np.zeros(len(tp_count))
    return FrocCurve(thresholds, fps_per_scan, sensitivity)


def froc_curve(
    tp_probs: np.ndarray, fp_probs: np.ndarray, *, n_nodules: int, n_scans: int
) -> FrocCurve:
    """The official FROC points (see the module docstring).

    Args:
        tp_probs: per detected nodule, the probability of its most probable counted mark.
        fp_probs: per false positive, its probability.
        n_nodules: every nodule of the scored scans, detected or not.
        n_scans: scans scored (those without marks or nodules included).
    """
    probs = np.concatenate([np.asarray(tp_probs, float), np.asarray(fp_probs, float)])
    is_tp = np.concatenate([np.ones(len(tp_probs)), np.zeros(len(fp_probs))])
    order = np.argsort(-probs, kind="stable")
    return _weighted_curve(
        probs[order], is_tp[order], np.ones(len(probs)), n_nodules=n_nodules, n_scans=n_scans
    )


def _weighted_curve(
    probs_desc: np.ndarray,
    is_tp: np.ndarray,
    weight: np.ndarray,
    *,
    n_nodules: float,
    n_scans: int,
) -> FrocCurve:
    """Curve of entries sorted by probability (descending), each repeated ``weight`` times."""
    present = weight > 0
    probs_desc, is_tp, weight = probs_desc[present], is_tp[present], weight[present]
    tp_cum = np.cumsum(weight * is_tp)
    fp_cum = np.cumsum(weight * (1.0 - is_tp))
    if len(probs_desc):
        last_of_group = np.append(probs_desc[1:] != probs_desc[:-1], True)
    else:
        last_of_group = np.zeros(0, dtype=bool)
    return _curve_from_counts(
        probs_desc[last_of_group],
        tp_cum[last_of_group],
        fp_cum[last_of_group],
        n_nodules=n_nodules,
        n_scans=n_scans,
    )


def reading_points(fp_rates: Sequence[float] = FROC_FP_RATES) -> np.ndarray:
    """The grid points (FP per scan) at which the CPM reads each rate: the nearest grid point."""
    grid = np.linspace(FROC_GRID_MIN_FP_PER_SCAN, FROC_GRID_MAX_FP_PER_SCAN, FROC_GRID_POINTS)
    rates = np.asarray(fp_rates, dtype=np.float64)
    return grid[np.abs(grid[None, :] - rates[:, None]).argmin(axis=1)]


def sensitivity_at(curve: FrocCurve, points_fp_per_scan: np.ndarray) -> np.ndarray:
    """Sensitivity of the linearly interpolated curve at ``points_fp_per_scan`` (``np.interp``)."""
    return np.interp(points_fp_per_scan, curve.fps_per_scan, curve.sensitivity)


def fps_at_sensitivity(curve: FrocCurve, sensitivity: float) -> float:
    """False positives per scan at which the interpolated curve first reaches ``sensitivity``.

    The curve is the piecewise-linear one the CPM is read from (points joined by straight
    lines). Returns the smallest FP rate whose interpolated sensitivity is ``>= sensitivity``
    (to :data:`SENSITIVITY_TOLERANCE`): on a rising segment the linear solution, on a vertical
    step its FP rate; ``inf`` when the curve never gets there, NaN when it has no sensitivity.
    """
    sens, fps = curve.sensitivity, curve.fps_per_scan
    if np.isnan(sens).all():
        return math.nan
    reached = np.flatnonzero(sens >= sensitivity - SENSITIVITY_TOLERANCE)
    if not len(reached):
        return math.inf
    k = int(reached[0])
    if k == 0:
        return float(fps[0])
    step = (sensitivity - sens[k - 1]) / (sens[k] - sens[k - 1])
    return float(fps[k - 1] + min(max(step, 0.0), 1.0) * (fps[k] - fps[k - 1]))


def bound_indices(n: int, confidence: float) -> tuple[int, int]:
    """Indices into ``n`` sorted values of the lower and upper bound, as the script takes them."""
    tail = (1.0 - confidence) / 2.0
    return math.floor(tail * n), math.floor((1.0 - tail) * n)


def bootstrap_froc(
    tp_probs: np.ndarray,
    tp_scan: np.ndarray,
    fp_probs: np.ndarray,
    fp_scan: np.ndarray,
    missed_scan: np.ndarray,
    *,
    n_scans: int,
    n_samples: int = DEFAULT_BOOTSTRAP_SAMPLES,
    seed: int | None = None,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> FrocBootstrap:
    """Bootstrap the CPM and the sensitivity at ``fp_rates`` over scans (see module docstring).

    Args:
        tp_probs, tp_scan: per detected nodule, its probability and scan index (0..n_scans-1).
        fp_probs, fp_scan: per false positive, the same.
        missed_scan: per missed nodule, its scan index.
        n_scans: scans scored; each sample draws this many with replacement.
        n_samples: samples to draw (>= 1).
        seed: seed of ``numpy.random.default_rng``.
        fp_rates: rates read per sample, at :func:`reading_points`.
        confidence: two-sided confidence of the bounds.
        progress: called after each sample.
        should_stop: polled before each sample; True raises :class:`CancelledError`.
    """
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, n_scans, size=(n_samples, n_scans))
    return bootstrap_from_samples(
        tp_probs,
        tp_scan,
        fp_probs,
        fp_scan,
        missed_scan,
        samples,
        seed=seed,
        fp_rates=fp_rates,
        confidence=confidence,
        progress=progress,
        should_stop=should_stop,
    )


def bootstrap_from_samples(
    tp_probs: np.ndarray,
    tp_scan: np.ndarray,
    fp_probs: np.ndarray,
    fp_scan: np.ndarray,
    missed_scan: np.ndarray,
    samples: np.ndarray,
    *,
    seed: int | None = None,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> FrocBootstrap:
    """:func:`bootstrap_froc` on given draws: ``samples[i]`` holds the scan indices of sample
    ``i`` (shape ``(n_samples, n_scans)``); ``seed`` is only recorded."""
    n_samples, n_scans = samples.shape
    probs = np.concatenate([np.asarray(tp_probs, float), np.asarray(fp_probs, float)])
    is_tp = np.concatenate([np.ones(len(tp_probs)), np.zeros(len(fp_probs))])
    scan = np.concatenate([np.asarray(tp_scan, int), np.asarray(fp_scan, int)])
    order = np.argsort(-probs, kind="stable")
    probs, is_tp, scan = probs[order], is_tp[order], scan[order]
    nodule_scan = np.concatenate([scan[is_tp > 0], np.asarray(missed_scan, int)])
    points = reading_points(fp_rates)
    sens = np.full((n_samples, len(points)), np.nan)
    for i in range(n_samples):
        if should_stop is not None and should_stop():
            raise CancelledError(f"Bootstrap stopped after {i} of {n_samples} samples.")
        if progress is not None and i:
            progress(i, n_samples, "bootstrap")
        copies = np.bincount(samples[i], minlength=n_scans).astype(np.float64)
        n_nodules = copies[nodule_scan].sum()
        if n_nodules <= 0:
            continue
        curve = _weighted_curve(
            probs, is_tp, copies[scan], n_nodules=float(n_nodules), n_scans=n_scans
        )
        sens[i] = sensitivity_at(curve, points)
    if progress is not None:
        progress(n_samples, n_samples, "bootstrap")
    used = ~np.isnan(sens).any(axis=1)
    if not used.all():
        log.warning(
            "%d of %d bootstrap samples hold no nodule and are left out of the interval",
            int((~used).sum()),
            n_samples,
        )
    sens = sens[used]
    cpm = sens.mean(axis=1)
    n_used = len(sens)
    if n_used:
        lo, hi = bound_indices(n_used, confidence)
        sorted_sens = np.sort(sens, axis=0)
        sorted_cpm = np.sort(cpm)
        mean, lower, upper = sens.mean(axis=0), sorted_sens[lo], sorted_sens[hi]
        cpm_stats = (float(cpm.mean()), float(sorted_cpm[lo]), float(sorted_cpm[hi]))
    else:
        mean = lower = upper = np.full(len(points), np.nan)
        cpm_stats = (math.nan, math.nan, math.nan)
    return FrocBootstrap(
        n_samples=n_samples,
        n_used=n_used,
        seed=seed,
        confidence=confidence,
        fp_rates=tuple(float(r) for r in fp_rates),
        sensitivity_mean=mean,
        sensitivity_lower=lower,
        sensitivity_upper=upper,
        cpm_mean=cpm_stats[0],
        cpm_lower=cpm_stats[1],
        cpm_upper=cpm_stats[2],
    )
