"""Voxel ground truth for scoring: masks built from the nodules the way a checkpoint's run
built them (its mask method and threshold), in the canonical frame like the training cache,
mapped back to the file's array order. Which nodules and series are scored is
:mod:`src_train.records.truth`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from src_train.ct import CtVolume
from src_train.luna import Nodule
from src_train.masks import DEFAULT_THRESHOLD_HU, REFERENCE_METHOD
from src_train.reviews.book import ReviewBook
from src_train.reviews.truth import reviewed_truth


@dataclass(frozen=True)
class TruthDefinition:
    """How voxel ground truth is made from points (a run's mask method and threshold)."""

    mask_method: str = REFERENCE_METHOD
    threshold_hu: float = DEFAULT_THRESHOLD_HU

    @classmethod
    def of_train_config(cls, train_config: Mapping[str, Any]) -> TruthDefinition:
        """The definition a checkpoint's ``train_config`` used (the defaults for a checkpoint
        written without one)."""
        return cls(
            mask_method=str(train_config.get("mask_method", REFERENCE_METHOD)),
            threshold_hu=float(train_config.get("threshold_hu", DEFAULT_THRESHOLD_HU)),
        )

    def describe(self) -> str:
        """E.g. ``grow masks at -700 HU``."""
        return f"{self.mask_method} masks at {self.threshold_hu:g} HU"


def ground_truth_mask(
    ct: CtVolume,
    nodules: Sequence[Nodule],
    definition: TruthDefinition,
    book: ReviewBook | None = None,
) -> np.ndarray:
    """Bool ``(index, row, col)`` mask of ``nodules`` in ``ct``'s array order, built in the
    canonical frame as the training cache builds it (nodules outside the volume skipped).

    With ``book``, ``nodules`` are the annotations before review and the book's verdicts are
    applied as the cache applies them: rejected nodules dropped, added ones grown, corrected
    ones taken voxel for voxel from the reviewers' label volume. One home for both:
    :func:`~src_train.reviews.truth.reviewed_truth` (what the viewer's error layer uses).
    """
    truth = reviewed_truth(book, ct, nodules, definition.threshold_hu, definition.mask_method)
    return truth.mask
