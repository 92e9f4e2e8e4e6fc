"""The Inference widget's state and actions, without Qt or napari (tests drive it headless).

:class:`InferenceModel` holds one run's result on one series, the ground truth it is compared
with and the score threshold; it answers what the widget shows: the candidate table's rows
(kept or below the threshold, TP/FP/unscored, slice), the kept candidates, the error volume
and its metrics, and which candidate a view position is on. The widget
(:mod:`napari_lunaseg._inference`) only turns these into layers and table cells.

The ground truth is the run's own (:func:`series_truth`): the reviewed nodules and voxels of
the series' data folder, grown with the checkpoint's mask method and threshold as the training
cache grows them (:func:`src_train.reviews.truth.reviewed_truth`), never whatever Mask QA's
slider shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src_train.ct import CtVolume
from src_train.evaluate import nodule_recall
from src_train.infer import InferenceResult
from src_train.infer.candidates import candidate_components
from src_train.infer.detector import Detector
from src_train.infer.ground_truth import TruthDefinition
from src_train.infer.operating_point import (
    DEFAULT_SCORE_THRESHOLD,
    candidate_outcomes,
    kept_by_score,
    predicted_voxels,
)
from src_train.luna import LunaFolder, Nodule
from src_train.metrics import error_volume, voxel_metrics
from src_train.records.candidate import CandidateNodule
from src_train.records.truth import SPLIT_LABELS, scoring_truth
from src_train.reviews import ReviewBook
from src_train.reviews.truth import reviewed_truth

#: Columns of the candidate table; "truth" only where there is a ground truth.
CANDIDATE_HEADERS = (
    "#",
    "slice",
    "truth",
    "score",
    "center x,y,z (mm)",
    "diameter (mm)",
    "segmenter p",
    "voxels",
)
TRUTH_COLUMN = CANDIDATE_HEADERS.index("truth")
#: A view position this close to a candidate's surface (mm) is on that candidate.
NEAR_CANDIDATE_MM = 3.0


@dataclass
class SeriesTruth:
    """What one series' candidates are compared with.

    Attributes:
        mask: bool ``(index, row, col)`` ground-truth voxels (file order).
        nodules: the nodules (reviewed), world mm.
        excluded: findings LUNA16 ignores on this series.
        source: one line saying where the truth comes from.
    """

    mask: np.ndarray
    nodules: list[Nodule]
    excluded: list[Nodule] = field(default_factory=list)
    source: str = ""


def series_truth(
    ct: CtVolume,
    annotations: Sequence[Nodule],
    luna_root: Path | None,
    definition: TruthDefinition,
) -> SeriesTruth | None:
    """The run's ground truth for ``ct``: its annotations with the data folder's reviews
    applied (``luna_root`` None: no reviews), masks by ``definition``; None without
    annotations."""
    if not annotations:
        return None
    book = excluded = None
    if luna_root is not None:
        folder = LunaFolder(luna_root, lenient=True)
        book = ReviewBook.for_folder(folder)
        excluded = [n for n in scoring_truth(folder).excluded if n.series_uid == ct.series_uid]
    truth = reviewed_truth(book, ct, annotations, definition.threshold_hu, definition.mask_method)
    reviews = "with the folder's reviews" if book is not None else "no reviews"
    return SeriesTruth(
        truth.mask, truth.nodules, list(excluded or []), f"{definition.describe()}, {reviews}"
    )


#: What a result on a series of each of the checkpoint's sets is worth.
SPLIT_ROLES = {
    "train": "the model was trained on it, so its recall and precision are inflated",
    "val": "the run chose its best epoch on it, so its figures flatter the model",
    "test": "nothing was chosen on it: an honest figure",
}


class InferenceModel:
    """One result on one series at a score threshold (see the module docstring)."""

    def __init__(self, score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> None:
        self.score_threshold = float(score_threshold)
        self.ct: CtVolume | None = None
        self.detector: Detector | None = None
        self.result: InferenceResult | None = None
        self.truth: SeriesTruth | None = None
        self.candidates: list[CandidateNodule] = []
        self.outcomes: list[str] = []
        self._labels: np.ndarray | None = None
        self._candidate_labels = np.zeros(0, dtype=np.int64)

    def set_result(
        self,
        ct: CtVolume,
        detector: Detector | None,
        result: InferenceResult,
        truth: SeriesTruth | None,
    ) -> None:
        """Take a finished run (``result.mask`` and candidates in ``ct``'s array order)."""
        self.ct, self.detector, self.result, self.truth = ct, detector, result, truth
        self.candidates = list(result.candidates)
        pred = np.ascontiguousarray(result.mask, dtype=bool)
        self._labels, self._candidate_labels = candidate_components(pred, self.candidates)
        self.outcomes = (
            candidate_outcomes(self.candidates, truth.nodules, truth.excluded)
            if truth is not None
            else [""] * len(self.candidates)
        )

    def set_score_threshold(self, value: float) -> None:
        """Keep the candidates scoring at least ``value``."""
        self.score_threshold = float(value)

    @property
    def kept(self) -> np.ndarray:
        """Bool per candidate: at or above the score threshold."""
        return kept_by_score(self.candidates, self.score_threshold)

    def kept_candidates(self) -> list[CandidateNodule]:
        """The candidates at or above the score threshold, most probable first."""
        return [c for c, k in zip(self.candidates, self.kept, strict=True) if k]

    def predicted(self) -> np.ndarray | None:
        """Bool voxels of the kept candidates (None before a result)."""
        if self._labels is None:
            return None
        return predicted_voxels(self._labels, self._candidate_labels, self.kept)

    def errors(self) -> np.ndarray | None:
        """Error volume (0 background, TP, FN, FP) of the kept candidates against the truth;
        None without a truth or a result."""
        predicted = self.predicted()
        if predicted is None or self.truth is None:
            return None
        return error_volume(predicted, self.truth.mask)

    def metrics(self) -> dict[str, float]:
        """Voxel precision/recall/Dice and nodule recall of the kept candidates (empty
        without a truth)."""
        predicted = self.predicted()
        if predicted is None or self.truth is None:
            return {}
        metrics = {k: float(v) for k, v in voxel_metrics(predicted, self.truth.mask).items()}
        found, total = self.nodule_recall()
        metrics["nodule_recall"] = found / total if total else math.nan
        return metrics

    def nodule_recall(self) -> tuple[int, int]:
        """``(found, total)`` reviewed nodules hit by a kept candidate."""
        if self.truth is None:
            return 0, 0
        centers = [c.center_xyz_mm for c in self.kept_candidates()]
        return nodule_recall(self.truth.nodules, centers)

    def slice_of(self, k: int) -> int:
        """The slice (array index, as the viewer's caption counts) of candidate ``k``."""
        return round(float(self.candidates[k].center_irc[0]))

    def rows(self) -> list[list[Any]]:
        """The candidate table: one row per candidate, most probable first."""
        rows = []
        for k, c in enumerate(self.candidates):
            segmenter = c.segmenter_probability
            rows.append(
                [
                    k + 1,
                    self.slice_of(k),
                    self.outcomes[k],
                    f"{c.probability:.3f}",
                    ", ".join(f"{v:.1f}" for v in c.center_xyz_mm),
                    f"{c.diameter_mm:.1f}",
                    "" if segmenter != segmenter else f"{segmenter:.3f}",  # NaN: no ranker
                    c.voxel_count,
                ]
            )
        return rows

    def candidate_at(self, point_xyz_mm: Sequence[float]) -> int | None:
        """The candidate a view position (world ``(x, y, z)`` mm) is on: the nearest one whose
        surface is within :data:`NEAR_CANDIDATE_MM`; None when it is on none."""
        if not self.candidates:
            return None
        centers = np.asarray([c.center_xyz_mm for c in self.candidates], dtype=np.float64)
        radii = np.asarray([c.diameter_mm for c in self.candidates], dtype=np.float64) / 2.0
        dist = np.linalg.norm(centers - np.asarray(point_xyz_mm, dtype=np.float64), axis=1)
        gap = dist - radii
        k = int(np.argmin(gap))
        return k if gap[k] <= NEAR_CANDIDATE_MM else None

    def split_line(self) -> str:
        """What the series was to the checkpoint's run, named as the core names its sets
        (``SPLIT_LABELS``: the validation series are its *selection set*); empty when the
        run never saw the series or is unknown."""
        if self.detector is None or self.ct is None:
            return ""
        split = self.detector.split_of(self.ct.series_uid)
        if split not in SPLIT_ROLES:
            return ""
        return f"this series is in the checkpoint's {SPLIT_LABELS[split]}: {SPLIT_ROLES[split]}"
        split = self.detector.split_of(self.ct.series_uid)
        if split == "train":
            return (
                "this series was in the checkpoint's TRAINING set: its recall and precision "
                "are inflated"
            )
        if split == "val":
            return "a validation series of the checkpoint's run (its selection set)"
        return ""
