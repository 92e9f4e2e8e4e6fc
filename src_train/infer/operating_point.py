"""One operating point of a detector: which candidates a score threshold keeps, what each one
is against the ground truth, and the predicted voxels of the kept ones.

The viewer's Inference widget shows this (candidate table, points, error layer); the rules live
here so the numbers it shows are the core's. Centers are world ``(x, y, z)`` mm; volumes
``(index, row, col)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from src_train.evaluate import nodule_hits
from src_train.luna import Nodule
from src_train.records.candidate import CandidateNodule

#: Default score threshold: a nodule probability, the ranker's decision boundary.
DEFAULT_SCORE_THRESHOLD = 0.5

#: What a candidate is against the ground truth (LUNA16's hit rule, :func:`nodule_hits`).
TRUE_POSITIVE = "TP"
FALSE_POSITIVE = "FP"
#: Hits only a finding LUNA16 ignores (``annotations_excluded.csv``): neither TP nor FP.
UNSCORED = "unscored"


class Located(Protocol):
    """A mark with a world center: a detector's candidate or a submission's row."""

    @property
    def center_xyz_mm(self) -> tuple[float, float, float]: ...


def kept_by_score(candidates: Sequence[CandidateNodule], score_threshold: float) -> np.ndarray:
    """Bool per candidate: its score (``probability``) is at or above ``score_threshold``."""
    scores = np.asarray([c.probability for c in candidates], dtype=np.float64)
    return scores >= float(score_threshold)


def candidate_outcomes(
    candidates: Sequence[Located],
    nodules: Sequence[Nodule],
    excluded: Sequence[Nodule] = (),
) -> list[str]:
    """Per candidate (a detector's or a submission's mark), :data:`TRUE_POSITIVE` (hits a
    nodule), :data:`UNSCORED` (hits only an excluded finding) or :data:`FALSE_POSITIVE`, by
    LUNA16's hit rule (one scan); an unknown diameter is
    :data:`~src_train.luna.UNKNOWN_DIAMETER_MM` (:func:`nodule_hits`)."""
    centers = np.asarray([c.center_xyz_mm for c in candidates], dtype=np.float64).reshape(-1, 3)
    on_nodule = np.any(nodule_hits(centers, nodules), axis=1)
    on_excluded = np.any(nodule_hits(centers, excluded), axis=1)
    outcome = np.where(on_excluded, UNSCORED, FALSE_POSITIVE)
    return [str(v) for v in np.where(on_nodule, TRUE_POSITIVE, outcome)]


def predicted_voxels(
    labels: np.ndarray, candidate_labels: np.ndarray, kept: np.ndarray
) -> np.ndarray:
    """Bool ``(index, row, col)``: the voxels of the kept candidates' components.

    ``labels`` and ``candidate_labels`` as :func:`~src_train.infer.candidates.
    candidate_components` returns them; ``kept`` a bool per candidate."""
    chosen = np.asarray(candidate_labels)[np.asarray(kept, dtype=bool)]
    return np.isin(labels, chosen[chosen > 0])
