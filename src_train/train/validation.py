"""Validation as detection: the model over whole validation series, scored like ``lunaseg eval``.

Each validation series is read from the training cache (canonical frame, every slice), run
through :func:`src_train.infer.iter_inference` exactly as inference runs (body box, 7-slice
context, candidate grouping), and compared with

* the annotations, by LUNA16's rules (:func:`src_train.evaluate.evaluate_froc`, excluded
  findings ignored): nodule recall, false positives and candidates per scan, FP per scan at
  90 % / 95 % sensitivity, and CPM;
* the cached ground-truth mask, voxel by voxel over the whole series (false positives
  anywhere count): voxel precision, recall, F1 (= Dice), IoU
  (:func:`src_train.metrics.overlap_scores`).

:func:`choose_best` keeps the best epoch by a detection criterion (CPM, then nodule recall,
then voxel F1) among epochs whose voxel precision reaches a floor, so an epoch that marks
most of the body (recall near 1, precision near 0) is never "best".
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from src_train.cache import SeriesCache
from src_train.ct import CtVolume, Geometry
from src_train.evaluate import Candidate, evaluate_froc
from src_train.infer.runner import InferenceOptions, InferenceProgress, iter_inference
from src_train.infer.tuner import TunerCache
from src_train.metrics import overlap_scores
from src_train.records.candidate import CandidateNodule
from src_train.records.truth import ScoringTruth

#: Sensitivities at which validation reports the false positives per scan needed.
FP_READ_SENSITIVITIES = (0.9, 0.95)

#: Default floor of voxel precision for an epoch to be "best" (TrainConfig.best_min_precision).
DEFAULT_BEST_MIN_PRECISION = 0.2


@dataclass
class SeriesValidation:
    """One validation series' outcome.

    Attributes:
        uid: the series.
        candidates: candidate nodules found (world mm).
        voxels: ``(tp, fp, fn, tn)`` of the thresholded mask against the cached mask.
        pictures: ``(center slice HU, predicted mask, true mask)`` of a few slices, for
            TensorBoard (2-D arrays ``(row, col)``).
    """

    uid: str
    candidates: list[CandidateNodule]
    voxels: tuple[int, int, int, int]
    pictures: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def cached_volume(cache: SeriesCache, uid: str) -> CtVolume:
    """A series of the cache as a :class:`CtVolume` (memory-mapped HU, canonical geometry)."""
    hu, _mask = cache.arrays(uid)
    geometry = Geometry.from_dict(cache.meta(uid).geometry)
    return CtVolume(hu=hu, geometry=geometry, series_uid=uid)


def iter_validate_series(
    cache: SeriesCache,
    uid: str,
    model: nn.Module,
    options: InferenceOptions,
    tuners: TunerCache,
    pictures: int = 0,
) -> Generator[InferenceProgress, None, SeriesValidation]:
    """Run ``model`` over every slice of a cached series; yield progress, return the outcome.

    ``pictures`` slices are kept for TensorBoard: those with the most true mask voxels, then
    those with the most false-positive voxels.
    """
    ct = cached_volume(cache, uid)
    result = yield from iter_inference(ct, model, options, tuners=tuners)
    truth = np.asarray(cache.arrays(uid)[1], dtype=bool)
    pred = result.mask
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    tn = int(pred.size) - tp - fp - fn
    kept = []
    if pictures:
        true_per_slice = truth.sum(axis=(1, 2))
        false_per_slice = (pred & ~truth).sum(axis=(1, 2))
        order = np.lexsort((-false_per_slice, -true_per_slice))
        for z in order[:pictures]:
            kept.append((np.asarray(ct.hu[z]), pred[z].copy(), truth[z].copy()))
    return SeriesValidation(uid, list(result.candidates), (tp, fp, fn, tn), kept)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def score_validation(
    outcomes: Sequence[SeriesValidation], truth: ScoringTruth, uids: Sequence[str]
) -> dict[str, float]:
    """Detection and voxel metrics of the validation series ``uids`` (see the module docstring).

    Keys: ``nodule_recall``, ``nodules``, ``cpm``, ``fp_per_scan``, ``candidates_per_scan``,
    ``fps_at_90``/``fps_at_95`` (only when reached), ``voxel_precision``, ``voxel_recall``,
    ``voxel_f1``, ``voxel_iou``, ``voxel_tp``/``fp``/``fn``.
    """
    marks = [
        Candidate(c.series_uid, c.center_xyz_mm, c.probability)
        for outcome in outcomes
        for c in outcome.candidates
    ]
    froc = evaluate_froc(
        truth.nodules_of(uids),
        marks,
        excluded=[f for f in truth.excluded if f.series_uid in set(uids)],
        series_uids=uids,
    )
    tp, fp, fn = (sum(o.voxels[k] for o in outcomes) for k in range(3))
    voxels = overlap_scores(tp, fp, fn)
    row: dict[str, float] = {
        "nodule_recall": froc.recall if froc.n_nodules else 0.0,
        "nodules": float(froc.n_nodules),
        "cpm": froc.cpm if froc.n_nodules else 0.0,
        "fp_per_scan": _ratio(froc.n_false_positives, froc.n_scans),
        "candidates_per_scan": froc.candidates_per_scan if froc.n_scans else 0.0,
        "voxel_precision": float(voxels["precision"]),
        "voxel_recall": float(voxels["recall"]),
        "voxel_f1": float(voxels["dice"]),
        "voxel_iou": float(voxels["iou"]),
        "voxel_tp": float(tp),
        "voxel_fp": float(fp),
        "voxel_fn": float(fn),
    }
    for target in FP_READ_SENSITIVITIES:
        fps = froc.fps_per_scan_at(target) if froc.n_nodules else math.inf
        if math.isfinite(fps):
            row[f"fps_at_{round(target * 100)}"] = fps
    return row


def best_key(metrics: dict[str, Any], min_precision: float) -> tuple[float, float, float] | None:
    """How good a validated epoch is for "best" (greater is better); None when its voxel
    precision is under ``min_precision`` (it marks too much to be kept, whatever its recall)."""
    if float(metrics.get("voxel_precision", 0.0)) < min_precision:
        return None
    return (
        float(metrics.get("cpm", 0.0)),
        float(metrics.get("nodule_recall", 0.0)),
        float(metrics.get("voxel_f1", 0.0)),
    )


def choose_best(
    history: Sequence[dict[str, Any]], min_precision: float, prefix: str = "val/"
) -> int | None:
    """The epoch :func:`best_key` ranks highest among validated rows of ``history`` (each a
    ``metrics.jsonl`` row: ``epoch`` and ``val/...`` keys); the earliest on ties; None when no
    epoch qualifies."""
    best: tuple[tuple[float, float, float], int] | None = None
    for row in history:
        metrics = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
        if not metrics:
            continue
        key = best_key(metrics, min_precision)
        if key is not None and (best is None or key > best[0]):
            best = (key, int(row["epoch"]))
    return None if best is None else best[1]
