"""Candidate nodules: 3-D connected components of a predicted mask, scored and written as CSV.

Each candidate has its probability-weighted center in world ``(x, y, z)`` mm (through the
series' direction matrix), its equivalent diameter, voxel count and a score (by default the
mean probability; components under 2 mm are dropped, see :class:`CandidateConfig`). Arrays are
``(index, row, col)``. ``candidates.csv`` is a LUNA16 submission file with extra columns.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from src_train.anatomy import SCAN_CHUNK_SLICES, lung_field
from src_train.atomic import write_text_atomic
from src_train.ct import Geometry
from src_train.errors import ConfigError, GeometryError
from src_train.metrics import check_same_shape
from src_train.options import option
from src_train.records.candidate import UNKNOWN_TRIPLE, CandidateNodule

log = logging.getLogger(__name__)

#: How a candidate's probability is computed from its voxels (:class:`CandidateConfig`).
CANDIDATE_SCORES = ("max", "mean")

#: Default score: the mean ranks better than the max, which many components saturate at 1
#: (measured on a held-out synthetic set, see docs/demo_checkpoint.md).
DEFAULT_SCORE = "mean"

#: Components of a smaller equivalent diameter (mm) are dropped by default: LUNA16 nodules are
#: at least 3 mm, and specks below 2 mm were a fifth of the demo model's candidates.
DEFAULT_MIN_DIAMETER_MM = 2.0

#: Components of a larger equivalent diameter (mm) are dropped by default: they are not nodules
#: (LUNA16's largest is 32 mm) but merged tissue, e.g. a blob of mediastinum.
DEFAULT_MAX_DIAMETER_MM = 40.0

#: A detector keeps at most this many candidates per series, the most probable after its
#: ranker (the LUNA16 FROC reads at most 8 false positives per scan on average; a reviewer
#: reads a short list). 0 keeps every candidate.
DEFAULT_MAX_CANDIDATES = 30

#: Connectivity of candidate components: 26 (faces, edges, corners) or 6 (faces only).
DEFAULT_CONNECTIVITY = 26

#: Columns of the candidates CSV ``lunaseg infer`` writes (LUNA16 submission + extras).
CANDIDATE_COLUMNS: tuple[str, ...] = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "probability",
    "diameter_mm",
    "voxel_count",
    "mean_probability",
    "segmenter_probability",
    "index",
    "row",
    "col",
)


#: A uniform solid ellipsoid of semi-axis a has variance a^2 / 5 along that axis.
_ELLIPSOID_VARIANCE_FACTOR = 5.0


def candidates_in_frame(
    candidates: Sequence[CandidateNodule], geometry: Geometry
) -> list[CandidateNodule]:
    """The candidates with ``center_irc`` and ``peak_irc`` in ``geometry``'s array frame.

    Grouping runs on the canonical frame (:meth:`~src_train.ct.CtVolume.canonical`); this
    maps the array coordinates to the file's frame (world coordinates are the same in both).
    """
    if not candidates:
        return []
    centers = geometry.xyz_to_irc(np.array([c.center_xyz_mm for c in candidates]))
    peaks = np.rint(geometry.xyz_to_irc(np.array([c.peak_xyz_mm for c in candidates])))
    return [
        dataclasses.replace(
            cand,
            center_irc=_triple(center),
            peak_irc=_triple(peak) if np.all(np.isfinite(peak)) else UNKNOWN_TRIPLE,
        )
        for cand, center, peak in zip(candidates, centers, peaks, strict=True)
    ]


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


@dataclass(frozen=True)
class CandidateConfig:
    """Post-processing of the mask into candidates.

    Attributes:
        min_voxels: components with fewer voxels are dropped.
        min_diameter_mm: components whose equivalent diameter is smaller are dropped.
        min_probability: components whose highest probability is lower are dropped.
        connectivity: 26 or 6 (3-D neighbourhood of a component).
        voxel_threshold: voxels below this probability are left out before grouping (a
            stricter cut than the mask's splits touching blobs); None keeps the mask as is.
        score: the candidate's ``probability``: ``"max"`` or ``"mean"`` voxel probability
            (the mean ranks better when many components reach probability 1).
        lung_margin_mm: when the CT is given, mask voxels farther than this (in-plane, mm)
            from the lung field (see :func:`lung_field`) are left out before grouping; None
            keeps every voxel. Nodules sit in the lungs or on their wall; what the model marks
            in the mediastinum or the body wall would otherwise merge into huge components.
        max_diameter_mm: components whose equivalent diameter is larger are not nodules (the
            largest LUNA16 nodule is 32 mm) and are dropped; None keeps them.
        max_candidates: a detector (:func:`~src_train.infer.detector.iter_detection`) keeps
            this many candidates per series, the most probable after its ranker; 0 keeps all.
            Grouping itself (:func:`group_candidates`) keeps every component: a ranker and the
            second stage's training need them all.
    """

    min_voxels: int = option(1, help="drop candidates with fewer voxels", cli=False)
    min_diameter_mm: float = option(
        DEFAULT_MIN_DIAMETER_MM, help="drop candidates of a smaller equivalent diameter (mm)"
    )
    min_probability: float = option(
        0.0, help="drop candidates whose highest voxel probability is lower"
    )
    connectivity: int = option(
        DEFAULT_CONNECTIVITY, help="3-D connectivity of a candidate's voxels", choices=(6, 26)
    )
    voxel_threshold: float | None = option(
        None, help="leave out voxels below this probability before grouping", cli=False
    )
    score: str = option(
        DEFAULT_SCORE,
        help="a candidate's probability: the max or mean voxel probability",
        choices=CANDIDATE_SCORES,
        flag="--candidate-score",
    )
    lung_margin_mm: float | None = option(
        None, help="leave out voxels farther than this (mm, in-plane) from the lung field"
    )
    max_diameter_mm: float | None = option(
        DEFAULT_MAX_DIAMETER_MM,
        help="drop candidates of a larger equivalent diameter (mm): not nodules",
    )
    max_candidates: int = option(
        DEFAULT_MAX_CANDIDATES,
        help="keep the N most probable candidates of a series, after ranking (0: all)",
    )

    def __post_init__(self) -> None:
        if self.connectivity not in (6, 26):
            raise ConfigError(f"connectivity must be 6 or 26, got {self.connectivity}.")
        if self.min_voxels < 1:
            raise ConfigError(f"min_voxels must be >= 1, got {self.min_voxels}.")
        if self.max_candidates < 0:
            raise ConfigError(
                f"max_candidates must be >= 0 (0 keeps every candidate), got {self.max_candidates}."
            )
        if self.score not in CANDIDATE_SCORES:
            raise ConfigError(
                f"Unknown candidate score {self.score!r}; choose {' or '.join(CANDIDATE_SCORES)}."
            )


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box (IRC slices) holding every set voxel of ``mask``; None when it is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if not len(hits):
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def group_candidates(
    prob: np.ndarray,
    mask: np.ndarray,
    geometry: Geometry,
    series_uid: str,
    config: CandidateConfig | None = None,
    *,
    hu: np.ndarray | None = None,
) -> list[CandidateNodule]:
    """Group mask voxels into candidate nodules (3-D connected components).

    Args:
        prob: voxel probabilities ``(index, row, col)`` (any float dtype); the center is the
            probability-weighted center of mass, the score the highest probability.
        mask: bool ``(index, row, col)``, same shape.
        geometry: the series' geometry (converts centers to world mm with its direction).
        series_uid: copied into every candidate.
        config: filters, connectivity and the lung-field margin.
        hu: the CT in HU, same shape; needed for ``config.lung_margin_mm``.

    Returns:
        Candidates, most probable first (ties: larger first).
    """
    cfg = config or CandidateConfig()
    check_same_shape(prob, mask)
    if tuple(mask.shape) != geometry.shape_irc:
        raise GeometryError(
            f"Mask {mask.shape} does not match series {series_uid!r} {geometry.shape_irc}."
        )
    box = bounding_box(mask)
    if box is None:
        return []
    sub_mask = np.array(mask[box], dtype=bool)  # a copy: the caller's mask stays as is
    if cfg.voxel_threshold is not None:
        sub_mask &= prob[box] >= cfg.voxel_threshold
    if hu is not None and cfg.lung_margin_mm is not None:
        check_same_shape(hu, mask)
        # The field needs whole slices (air around the body touches their border).
        field = lung_field(hu[box[0]], geometry.spacing_irc_mm, cfg.lung_margin_mm)
        sub_mask &= field[:, box[1], box[2]]
        del field
    structure = ndimage.generate_binary_structure(3, 3 if cfg.connectivity == 26 else 1)
    try:  # 2 bytes per voxel while there are fewer than 65,536 components, else 4
        labels, n = ndimage.label(sub_mask, structure=structure, output=np.uint16)
    except RuntimeError:
        labels, n = ndimage.label(sub_mask, structure=structure)
    if n == 0:
        return []
    stats = _component_stats(labels, n, prob[box], geometry.spacing_irc_mm)
    count, weight, peak = stats.count, stats.weight, stats.peak
    offset = np.array([s.start for s in box], dtype=np.float64)
    center_irc = stats.center_irc + offset
    peak_irc = stats.peak_irc + offset
    diameter = np.cbrt(6.0 * count * geometry.voxel_volume_mm3 / math.pi)
    mean_prob = weight / count
    keep = (
        (count >= cfg.min_voxels)
        & (diameter >= cfg.min_diameter_mm)
        & (peak >= cfg.min_probability)
    )
    if cfg.max_diameter_mm is not None:
        too_big = keep & (diameter > cfg.max_diameter_mm)
        if too_big.any():
            log.info(
                "%s: %d component(s) larger than %g mm (up to %.0f mm) dropped: not nodules",
                series_uid,
                int(too_big.sum()),
                cfg.max_diameter_mm,
                float(diameter[too_big].max()),
            )
        keep &= ~too_big
    idx = np.flatnonzero(keep)
    score = peak if cfg.score == "max" else mean_prob
    idx = idx[np.lexsort((-count[idx], -score[idx]))]
    center_xyz = geometry.irc_to_xyz(center_irc[idx]).reshape(-1, 3)
    peak_xyz = geometry.irc_to_xyz(peak_irc[idx]).reshape(-1, 3)
    return [
        CandidateNodule(
            series_uid=series_uid,
            center_xyz_mm=_triple(xyz),
            center_irc=_triple(center_irc[i]),
            diameter_mm=float(diameter[i]),
            voxel_count=int(count[i]),
            probability=float(score[i]),
            mean_probability=float(mean_prob[i]),
            max_probability=float(peak[i]),
            peak_irc=_triple(peak_irc[i]),
            peak_xyz_mm=_triple(pxyz),
            axes_mm=_triple(stats.axes_mm[i]),
            segmenter_probability=float(score[i]),
        )
        for i, xyz, pxyz in zip(idx, center_xyz, peak_xyz, strict=True)
    ]


def most_probable(
    candidates: Sequence[CandidateNodule], limit: int
) -> tuple[list[CandidateNodule], int]:
    """The ``limit`` most probable of ``candidates`` (all when ``limit`` is 0) in their order,
    and how many were left out. ``candidates`` must be most probable first, as
    :func:`group_candidates` and a ranker return them."""
    kept = list(candidates) if limit <= 0 else list(candidates[:limit])
    return kept, len(candidates) - len(kept)


@dataclass
class _ComponentStats:
    """Per-component sums of :func:`_component_stats` (component ``k`` at index ``k - 1``)."""

    count: np.ndarray
    weight: np.ndarray
    peak: np.ndarray
    center_irc: np.ndarray
    peak_irc: np.ndarray
    axes_mm: np.ndarray


def _component_stats(
    labels: np.ndarray,
    n: int,
    prob: np.ndarray,
    spacing_irc_mm: tuple[float, float, float],
) -> _ComponentStats:
    """Voxel count, summed and peak probability, weighted center, peak voxel and ellipsoid axes
    of components ``1..n`` of ``labels`` (``(index, row, col)``), accumulated slab by slab so
    temporaries stay small. Centers are probability-weighted (uniform where the probability is
    0, e.g. a mask not made from ``prob``); axes come from the unweighted second moments in mm."""
    count = np.zeros(n + 1, dtype=np.int64)
    weight = np.zeros(n + 1)
    w_center = np.zeros(n + 1)
    first = np.zeros((3, n + 1))
    second = np.zeros((3, 3, n + 1))  # unweighted sums of coordinate products, mm^2
    moments = np.zeros((3, n + 1))
    peak = np.full(n + 1, -np.inf)
    peak_pos = np.zeros((3, n + 1))
    spacing = np.asarray(spacing_irc_mm, dtype=np.float64)
    for z0 in range(0, labels.shape[0], SCAN_CHUNK_SLICES):
        lab_slab = labels[z0 : z0 + SCAN_CHUNK_SLICES]
        zz, yy, xx = np.nonzero(lab_slab)
        if zz.size == 0:  # a slab without components (the peak bookkeeping needs one voxel)
            continue
        lab = lab_slab[zz, yy, xx]
        w = prob[z0 : z0 + SCAN_CHUNK_SLICES][zz, yy, xx].astype(np.float64)
        w_c = w + _UNIFORM_WEIGHT
        count += np.bincount(lab, minlength=n + 1)
        weight += np.bincount(lab, w, minlength=n + 1)
        w_center += np.bincount(lab, w_c, minlength=n + 1)
        coords = (zz + z0, yy, xx)
        mm = [coords[a] * spacing[a] for a in range(3)]
        for a in range(3):
            moments[a] += np.bincount(lab, w_c * coords[a], minlength=n + 1)
            first[a] += np.bincount(lab, mm[a], minlength=n + 1)
            for b in range(a, 3):
                second[a, b] += np.bincount(lab, mm[a] * mm[b], minlength=n + 1)
        # the slab's most probable voxel per component (first in raster order on ties)
        order = np.lexsort((-w, lab))
        starts = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
        better = w[starts] > peak[lab[starts]]
        winners = starts[better]
        peak[lab[winners]] = w[winners]
        for a in range(3):
            peak_pos[a, lab[winners]] = coords[a][winners]
    peak_irc = peak_pos[:, 1:].T
    count1 = count[1:].astype(np.float64)
    mean_mm = first[:, 1:] / count1
    cov = second[:, :, 1:] / count1 - mean_mm[:, None, :] * mean_mm[None, :, :]
    cov = np.moveaxis(cov, -1, 0)  # (n, 3, 3), upper triangle filled
    cov = np.triu(cov) + np.transpose(np.triu(cov, 1), (0, 2, 1))
    # a one-voxel-thick axis has variance 0 but a voxel's extent: add a voxel's own variance
    cov += np.diag(spacing**2 / 12.0)[None]
    eig = np.clip(np.linalg.eigvalsh(cov)[:, ::-1], 0.0, None)
    axes = 2.0 * np.sqrt(_ELLIPSOID_VARIANCE_FACTOR * eig)
    return _ComponentStats(
        count=count[1:],
        weight=weight[1:],
        peak=peak[1:],
        center_irc=(moments[:, 1:] / w_center[1:]).T,
        peak_irc=peak_irc,
        axes_mm=axes,
    )


#: Added to every voxel's weight for the center, so a zero-probability component has one.
_UNIFORM_WEIGHT = 1e-12


def candidate_components(
    mask: np.ndarray,
    candidates: Sequence[CandidateNodule],
    connectivity: int = DEFAULT_CONNECTIVITY,
) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of ``mask`` and the one each candidate was grouped from.

    ``mask`` bool ``(index, row, col)`` and candidates in the same array frame (their
    ``peak_irc`` lies inside their component). Returns the label volume (0 = background) and,
    per candidate, its label (0 when its peak is unknown or outside the mask), so that
    ``np.isin(labels, chosen)`` gives the voxels of chosen candidates.
    """
    structure = ndimage.generate_binary_structure(3, 3 if connectivity == 26 else 1)
    labels, _n = ndimage.label(mask, structure=structure)
    own = np.zeros(len(candidates), dtype=np.int64)
    for k, c in enumerate(candidates):
        if np.all(np.isfinite(c.peak_irc)):
            voxel = tuple(int(v) for v in c.peak_irc)
            if all(0 <= v < n for v, n in zip(voxel, mask.shape, strict=True)):
                own[k] = labels[voxel]
    return labels, own


def write_candidates_csv(
    path: str | os.PathLike[str],
    candidates: Sequence[CandidateNodule],
    *,
    overwrite: bool = False,
) -> Path:
    """Write candidates in LUNA16 submission format (+ extra columns), atomically."""
    lines = [",".join(CANDIDATE_COLUMNS)]
    for c in candidates:
        x, y, z = c.center_xyz_mm
        i, r, col = c.center_irc
        lines.append(
            f"{c.series_uid},{x:.3f},{y:.3f},{z:.3f},{c.probability:.6f},{c.diameter_mm:.2f},"
            f"{c.voxel_count},{c.mean_probability:.6f},{c.segmenter_probability:.6f},"
            f"{i:.2f},{r:.2f},{col:.2f}"
        )
    return write_text_atomic(path, "\n".join(lines) + "\n", overwrite=overwrite)
