"""A series' reviewed ground truth as the training cache builds it, in the file's array order.

The cache (:meth:`src_train.cache.SeriesCache.build`) grows the masks in the canonical frame
with the folder's reviews applied (:func:`~src_train.reviews.apply.apply_book`: rejected
nodules dropped, additions grown, corrected voxels taken as painted). :func:`reviewed_truth`
does the same and maps the mask back to the file's ``(index, row, col)`` order, so whatever
compares a prediction with the ground truth outside training (the viewer's error layer) uses
the voxels and nodules the run trained and validated with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from src_train.ct import CtVolume
from src_train.luna import Nodule
from src_train.reviews.apply import apply_book
from src_train.reviews.book import ReviewBook


@dataclass(frozen=True)
class ReviewedTruth:
    """Ground truth of one series after review.

    Attributes:
        mask: bool ``(index, row, col)`` in the file's array order (the CT as loaded).
        nodules: the nodules it is made of (kept annotations, then kept additions), world mm.
        problems: review rows not applied, and why.
    """

    mask: np.ndarray
    nodules: list[Nodule]
    problems: list[str]


def reviewed_truth(
    book: ReviewBook | None,
    ct: CtVolume,
    annotations: Sequence[Nodule],
    threshold_hu: float,
    method: str,
) -> ReviewedTruth:
    """The reviewed ground truth of ``ct`` (see the module docstring); ``book`` None: the
    plain masks of ``annotations`` (findings that are no nodule are left out, as the cache
    does; nodules outside the volume are skipped)."""
    canonical, turn = ct.canonical()
    reviewed = apply_book(
        book,
        canonical,
        [n for n in annotations if n.is_nodule],
        threshold_hu,
        method,
        on_outside="skip",
        turn=turn,
    )
    mask = np.ascontiguousarray(turn.to_file(reviewed.mask), dtype=bool)
    kept = [item.nodule for item in reviewed.nodules if item.kept]
    return ReviewedTruth(mask, kept, list(reviewed.problems))
