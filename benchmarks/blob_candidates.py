"""Experiment: does a candidate source that does not depend on the segmenter bring back the
small nodules the detector misses?

Most nodules the demo detector misses are 3-6 mm, in thick-slice scans, and about half get no
candidate at all: the segmenter puts no voxel above its threshold on them. They are still bright
round spots in the lung, which a classic multiscale *dot* filter finds: on the CT resampled to
an isotropic grid (so a 3 mm slice scan and a 0.7 mm one are filtered alike), the Hessian of the
Gaussian-smoothed volume has three negative eigenvalues at the center of a bright ball, one near
zero along a vessel and two near zero on a wall. The response ``|l3|^2 / |l1|`` (eigenvalues
``|l1| >= |l2| >= |l3|``, all negative; Li, Sone and Doi, Med. Phys. 2003), scale-normalised
and maximised over the scales, has its local maxima inside the lung field at the blob points.

The script finds each scan's blob points, scores them with the checkpoint's patch classifier
(its second stage's 3-D CNN), and merges those farther than ``--radius-mm`` from every
candidate of a ``lunaseg infer`` run into that run's list (each scan keeping its
``--max-candidates`` most probable), with a blob's probability from

* ``sigmoid(logit - offset)`` for each ``--offsets`` value, and
* a logistic model over the logit, the log response and the ball diameter of the best scale,
  fitted on four fifths of the scans and applied to the rest (five folds of whole scans).

It prints the CPU, the seconds per scan of reading and filtering it, the source's own nodule
recall, each nodule the run misses at <= 4 FP/scan with whether a blob point reaches it and its
logit there, and the merged lists' FROC figures beside the run's own (LUNA16 rules)::

    lunaseg infer DATA --out OUT [--checkpoint PT]
    python benchmarks/blob_candidates.py DATA OUT [--checkpoint PT]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import cpu_kind, operating_cut
from scipy import ndimage

from src_train.anatomy import lung_field
from src_train.classify.features import fit_logistic
from src_train.classify.network import NoduleClassifier, classifier_logits
from src_train.classify.patches import extract_patches
from src_train.classify.training import stacking_folds
from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.errors import ConfigError, LunaSegError
from src_train.evaluate import (
    Candidate,
    FrocResult,
    evaluate_froc,
    find_series_list,
    nodule_hits,
    read_series_list,
    read_submission,
)
from src_train.infer.candidates import bounding_box
from src_train.infer.detector import load_detector
from src_train.luna import LunaFolder
from src_train.records.truth import ScoringTruth, scoring_truth

#: Scales (Gaussian sigma, mm) of the dot filter: a ball of diameter d answers most near
#: sigma = d / (2 sqrt 3), so these cover about 3.5-10 mm (the segmenter finds larger ones).
DEFAULT_SIGMAS_MM = (1.0, 1.5, 2.0, 3.0)
#: Diameter of the ball whose response peaks at scale sigma: d = 2 sqrt(3) sigma.
_DIAMETER_PER_SIGMA = 2.0 * math.sqrt(3.0)
#: HU range the filter sees (air to soft tissue; bone and metal clipped).
_HU_RANGE = (-1000.0, 400.0)


@dataclass(frozen=True)
class BlobConfig:
    """How blob points are found.

    Attributes:
        grid_mm: the isotropic grid the CT is resampled to before filtering.
        sigmas_mm: Gaussian scales of the dot filter, mm.
        max_points: at most this many points per series, the strongest responses.
        separation_mm: two points are at least this far apart (local-maximum window).
        lung_margin_mm: points within this in-plane distance of the lung field count
            (juxtapleural nodules sit on its wall).
    """

    grid_mm: float = 1.0
    sigmas_mm: tuple[float, ...] = DEFAULT_SIGMAS_MM
    max_points: int = 200
    separation_mm: float = 5.0
    lung_margin_mm: float = 3.0

    def __post_init__(self) -> None:
        if not self.grid_mm > 0:
            raise ConfigError(f"The blob grid must be > 0 mm, got {self.grid_mm}.")
        if not self.sigmas_mm or min(self.sigmas_mm) <= 0:
            raise ConfigError(f"Blob scales must be > 0 mm, got {self.sigmas_mm}.")
        if self.max_points < 1:
            raise ConfigError(f"max_points must be >= 1, got {self.max_points}.")


@dataclass(frozen=True)
class BlobPoints:
    """Blob points of one series, strongest first.

    Attributes:
        irc: fractional array coordinates ``(N, 3)`` ``(index, row, col)``.
        response: the scale-normalised dot response ``(N,)`` (HU: second derivatives times
            sigma^2).
        diameter_mm: the diameter of the ball that answers most at the point's best scale.
    """

    irc: np.ndarray
    response: np.ndarray
    diameter_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.response)


def _shifted(volume: np.ndarray, shifts: dict[int, int]) -> np.ndarray:
    """The interior of ``volume`` (one voxel off each border) moved by ``shifts`` {axis: step}."""
    box = [
        slice(1 + shifts.get(axis, 0), n - 1 + shifts.get(axis, 0))
        for axis, n in enumerate(volume.shape)
    ]
    return volume[tuple(box)]


def _second_derivatives(smooth: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Central-difference second derivatives (per voxel^2) of ``smooth`` by axis pair
    ``(a, b)``, ``a <= b``; zero on the border."""
    out = {}
    for a in range(3):
        for b in range(a, 3):
            d = np.zeros_like(smooth)
            if a == b:
                d[1:-1, 1:-1, 1:-1] = (
                    _shifted(smooth, {a: 1})
                    - 2.0 * _shifted(smooth, {})
                    + _shifted(smooth, {a: -1})
                )
            else:
                d[1:-1, 1:-1, 1:-1] = 0.25 * (
                    _shifted(smooth, {a: 1, b: 1})
                    - _shifted(smooth, {a: 1, b: -1})
                    - _shifted(smooth, {a: -1, b: 1})
                    + _shifted(smooth, {a: -1, b: -1})
                )
            out[a, b] = d
    return out


def dot_response(volume: np.ndarray, sigma_vox: float, where: np.ndarray) -> np.ndarray:
    """Scale-normalised dot response of ``volume`` at Gaussian ``sigma_vox`` (voxels), zero
    outside ``where`` (bool, same shape) and wherever the Hessian is not negative definite."""
    smooth = ndimage.gaussian_filter(volume, sigma_vox)
    d = _second_derivatives(smooth)
    del smooth
    # A negative definite matrix has a negative diagonal: a cheap first cut.
    idx = np.nonzero(where & (d[0, 0] < 0) & (d[1, 1] < 0) & (d[2, 2] < 0))
    hessian = np.empty((len(idx[0]), 3, 3), dtype=np.float32)
    for (i, j), values in d.items():
        hessian[:, i, j] = hessian[:, j, i] = values[idx]
    del d
    eig = np.linalg.eigvalsh(hessian)  # ascending: eig[:, 0] the most negative
    strongest, weakest = eig[:, 0], eig[:, 2]
    dot = np.where(weakest < 0, weakest**2 / np.maximum(-strongest, 1e-6), 0.0)
    out = np.zeros(volume.shape, dtype=np.float32)
    out[idx] = dot * sigma_vox**2
    return out


def find_blobs(
    hu: np.ndarray,
    spacing_irc_mm: tuple[float, float, float],
    config: BlobConfig | None = None,
    field: np.ndarray | None = None,
) -> BlobPoints:
    """Blob points of a CT ``hu`` ``(index, row, col)`` (see the module docstring).

    ``field`` is the lung field (bool, same shape; computed with ``config.lung_margin_mm``
    when None). Only the field's bounding box is resampled and filtered.
    """
    cfg = config or BlobConfig()
    if field is None:
        field = lung_field(hu, spacing_irc_mm, cfg.lung_margin_mm)
    box = bounding_box(field)
    if box is None or any(s.stop - s.start < 2 for s in box):  # zoom needs two samples an axis
        return BlobPoints(np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    lo = np.array([s.start for s in box])
    hi = np.array([s.stop for s in box])
    zoom = np.asarray(spacing_irc_mm, dtype=np.float64) / cfg.grid_mm
    volume = np.clip(np.asarray(hu[box], dtype=np.float32), *_HU_RANGE)
    iso = ndimage.zoom(volume, zoom, order=1)
    inside = ndimage.zoom(field[box].view(np.uint8), zoom, order=0).astype(bool)
    del volume
    best = np.zeros(iso.shape, dtype=np.float32)
    best_sigma = np.zeros(iso.shape, dtype=np.float32)
    for sigma_mm in cfg.sigmas_mm:
        response = dot_response(iso, sigma_mm / cfg.grid_mm, inside)
        better = response > best
        best[better] = response[better]
        best_sigma[better] = sigma_mm
        del response, better
    window = max(3, round(cfg.separation_mm / cfg.grid_mm) | 1)
    peaks = (best > 0) & (best == ndimage.maximum_filter(best, size=window))
    at = np.nonzero(peaks)
    values = best[at]
    order = np.argsort(-values, kind="stable")[: cfg.max_points]
    points = np.stack(at, axis=1)[order].astype(np.float64)
    # ndimage.zoom puts the first and last samples on the box's first and last voxels.
    step = (hi - lo - 1) / np.maximum(np.asarray(iso.shape) - 1, 1)
    return BlobPoints(
        irc=points * step + lo,
        response=values[order].astype(np.float64),
        diameter_mm=best_sigma[at][order].astype(np.float64) * _DIAMETER_PER_SIGMA,
    )


# -- the experiment ------------------------------------------------------------------------------

#: False positives per scan of the operating point whose missed nodules are listed.
OPERATING_FP_PER_SCAN = 4.0


@dataclass
class ScanPoints:
    """One scan's blob points in world ``(x, y, z)`` mm with the classifier's logit, and the
    seconds reading the scan and finding them took."""

    xyz: np.ndarray
    logit: np.ndarray
    response: np.ndarray
    diameter_mm: np.ndarray
    seconds: float


def scan_points(
    folder: LunaFolder, uid: str, classifier: NoduleClassifier, config: BlobConfig
) -> ScanPoints:
    """Blob points of series ``uid`` (canonical frame, world mm) and their classifier logits."""
    start = time.perf_counter()
    ct, _ = folder.load(uid).canonical()
    blobs = find_blobs(np.asarray(ct.hu), ct.geometry.spacing_irc_mm, config)
    seconds = time.perf_counter() - start
    xyz = ct.geometry.irc_to_xyz(blobs.irc).reshape(-1, 3)
    logit = classifier_logits(classifier, extract_patches(ct, xyz)).astype(np.float64)
    return ScanPoints(xyz, logit, blobs.response, blobs.diameter_mm, seconds)


def point_features(points: ScanPoints) -> np.ndarray:
    """``(N, 3)``: the classifier's logit, the log response and the best scale's diameter."""
    return np.column_stack([points.logit, np.log(points.response + 1e-3), points.diameter_mm])


def out_of_fold_logits(
    points: dict[str, ScanPoints], truth: ScoringTruth, folds: int = 5
) -> dict[str, np.ndarray]:
    """Per scan, a logistic model's logit for its points, the model fitted on the other folds'
    scans (whole scans dealt round-robin into ``folds``, as the combined second stage's
    :func:`~src_train.classify.training.stacking_folds` deals them) with LUNA16's hit test as
    the label."""
    uids = sorted(points)
    fold_of = dict(zip(uids, stacking_folds(uids, folds).tolist(), strict=True))
    features = {uid: point_features(points[uid]) for uid in uids}
    labels = {
        uid: nodule_hits(points[uid].xyz, truth.nodules.get(uid, [])).any(axis=1) for uid in uids
    }
    out = {}
    for k in range(folds):
        train = [uid for uid in uids if fold_of[uid] != k]
        model = fit_logistic(
            np.concatenate([features[u] for u in train]),
            np.concatenate([labels[u] for u in train]).astype(np.int64),
        )
        for uid in uids:
            if fold_of[uid] == k:
                out[uid] = model.logits(features[uid])
    return out


def merged_marks(
    marks: list[Candidate],
    points: dict[str, ScanPoints],
    probability: dict[str, np.ndarray],
    radius_mm: float,
    cap: int,
) -> tuple[list[Candidate], float]:
    """The run's marks plus each scan's blob points farther than ``radius_mm`` from every mark
    kept before them (most probable first), each scan cut to its ``cap`` most probable; and the
    blob points kept per scan."""
    by_scan: dict[str, list[Candidate]] = defaultdict(list)
    for mark in marks:
        by_scan[mark.series_uid].append(mark)
    out: list[Candidate] = []
    added = 0
    for uid in sorted(set(by_scan) | set(points)):
        scan = list(by_scan.get(uid, []))
        centers = [m.center_xyz_mm for m in scan]
        extra = []
        scan_points_ = points.get(uid)
        if scan_points_ is not None:
            prob = probability[uid]
            for j in np.argsort(-prob, kind="stable"):
                xyz = scan_points_.xyz[j]
                if (
                    centers
                    and np.min(np.linalg.norm(np.asarray(centers) - xyz, axis=1)) <= radius_mm
                ):
                    continue
                center = (float(xyz[0]), float(xyz[1]), float(xyz[2]))
                centers.append(center)
                extra.append(Candidate(uid, center, float(prob[j])))
        ranked = sorted(scan + extra, key=lambda m: -m.probability)[:cap]
        added += sum(m in extra for m in ranked)
        out.extend(ranked)
    return out, added / max(len(points), 1)


def _froc(
    truth: ScoringTruth, marks: list[Candidate], uids: list[str], bootstrap: int = 0
) -> FrocResult:
    """LUNA16's FROC of ``marks`` on scans ``uids`` (their excluded findings ignored)."""
    wanted = set(uids)
    return evaluate_froc(
        truth.nodules_of(uids),
        marks,
        excluded=[f for f in truth.excluded if f.series_uid in wanted],
        series_uids=uids,
        bootstrap=bootstrap,
        seed=0,
    )


def _row(
    name: str, truth: ScoringTruth, marks: list[Candidate], uids: list[str], bootstrap: int
) -> str:
    """A table row: recall, candidates per scan, sensitivity at 1/8 and 4 FP/scan, CPM."""
    froc = _froc(truth, marks, uids, bootstrap)
    boot = froc.bootstrap
    interval = f" ({boot.cpm_lower:.3f}-{boot.cpm_upper:.3f})" if boot else ""
    sens = froc.sensitivity_at_rates
    return (
        f"| {name} | {froc.recall:.3f} | {froc.candidates_per_scan:.1f} | {sens[0]:.3f} | "
        f"{sens[5]:.3f} | **{froc.cpm:.3f}**{interval} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the data folder the run scored")
    parser.add_argument("run", type=Path, help="the lunaseg infer --out folder")
    parser.add_argument("--checkpoint", type=Path, help="the run's checkpoint (default: demo)")
    parser.add_argument("--offsets", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0])
    parser.add_argument("--radius-mm", type=float, default=5.0)
    parser.add_argument("--max-candidates", type=int, default=30)
    parser.add_argument("--grid-mm", type=float, default=1.0)
    parser.add_argument("--max-points", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    detector = load_detector(args.checkpoint or DEMO_CHECKPOINT)
    if detector.ranker is None or detector.ranker.classifier is None:
        raise SystemExit(f"{detector.path} has no patch classifier to score blob points with.")
    folder = LunaFolder(args.data)
    truth = scoring_truth(folder)
    listed = find_series_list(args.run / "candidates.csv")
    uids = read_series_list(listed) if listed else folder.series_uids
    marks = read_submission(args.run / "candidates.csv")
    config = BlobConfig(grid_mm=args.grid_mm, max_points=args.max_points)
    points = {}
    for k, uid in enumerate(uids, 1):
        points[uid] = scan_points(folder, uid, detector.ranker.classifier, config)
        print(
            f"[{k}/{len(uids)}] {uid}: {len(points[uid].logit)} points, "
            f"{points[uid].seconds:.1f} s",
            flush=True,
        )

    print(f"\n{len(uids)} scans of {args.data}; run {args.run}; {detector.path.name}")
    seconds = np.array([p.seconds for p in points.values()])
    print(f"CPU: {cpu_kind()}, torch threads {torch.get_num_threads()}")
    print(
        f"reading a scan and its dot filter ({config.grid_mm:g} mm grid, scales "
        f"{config.sigmas_mm} mm): {seconds.mean():.1f} s per scan "
        f"(median {np.median(seconds):.1f}), "
        f"{np.mean([len(p.logit) for p in points.values()]):.0f} points per scan\n"
    )
    nodules = truth.nodules_of(uids)
    reached = [nodule_hits(points[n.series_uid].xyz, [n])[:, 0] for n in nodules]
    print(f"nodules a blob point reaches: {sum(r.any() for r in reached)}/{len(nodules)}")

    froc = _froc(truth, marks, uids)
    cut, _ = operating_cut(marks, truth, uids, OPERATING_FP_PER_SCAN)
    best = np.nan_to_num(froc.nodule_probability, nan=-math.inf)
    print(f"\nMissed by the run at <= {OPERATING_FP_PER_SCAN:g} FP/scan (score > {cut:.4f}):\n")
    print("| series | diameter mm | run's best score | blob point on it | its logit |")
    print("|---|---|---|---|---|")
    for n, score, hit in zip(froc.nodules, best, reached, strict=True):
        if score > cut:
            continue
        logit = points[n.series_uid].logit[hit]
        print(
            f"| ...{n.series_uid[-8:]} | {float(n.diameter_mm or 0):.1f} | "
            + ("none" if not math.isfinite(score) else f"{score:.3f}")
            + f" | {'yes' if hit.any() else 'no'} | "
            + (f"{logit.max():.2f}" if hit.any() else "-")
            + " |"
        )

    print("\n| list | recall | candidates/scan | sens. at 1/8 FP | at 4 FP | CPM (95 % CI) |")
    print("|---|---|---|---|---|---|")
    print(_row("the run's", truth, marks, uids, args.bootstrap))
    for offset in args.offsets:
        prob = {u: 1.0 / (1.0 + np.exp(-(p.logit - offset))) for u, p in points.items()}
        merged, added = merged_marks(marks, points, prob, args.radius_mm, args.max_candidates)
        print(
            _row(
                f"+ blobs, sigmoid(logit - {offset:g}) ({added:.1f} kept/scan)",
                truth,
                merged,
                uids,
                args.bootstrap,
            )
        )
    fitted = out_of_fold_logits(points, truth)
    prob = {u: 1.0 / (1.0 + np.exp(-z)) for u, z in fitted.items()}
    merged, added = merged_marks(marks, points, prob, args.radius_mm, args.max_candidates)
    print(
        _row(
            f"+ blobs, out-of-fold logistic ({added:.1f} kept/scan)",
            truth,
            merged,
            uids,
            args.bootstrap,
        )
    )


if __name__ == "__main__":
    try:
        main()
    except LunaSegError as error:  # a bad folder or file: its message, not a traceback
        raise SystemExit(f"error: {error}") from None
