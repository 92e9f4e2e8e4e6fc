"""What a verdict did to the mask, measured against the true shapes of synthetic data.

For each reviewed nodule the Dice of its generated mask (grown from the annotation; 0 for an
addition, which had none) and of its reviewed mask (0 for a rejected nodule) are computed
against the true nodule it is paired with, by the project's one pairing rule and one Dice
(:class:`~src_train.masks.truth.SeriesTruth`). A positive change means the verdict helped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from src_train.luna import TrueNodule
from src_train.masks.build import NoduleMask
from src_train.masks.report import NoduleScore, score_series
from src_train.masks.truth import SeriesTruth, match_true
from src_train.reviews.apply import ReviewedSeries


@dataclass(frozen=True)
class VerdictEffect:
    """Dice against the true shape before and after review, for one nodule.

    Attributes:
        true_label: the paired true nodule's label (None: no true shape, e.g. a false
            annotation; both Dice are then None).
        dice_generated: Dice of the mask grown from the annotation (0 for an addition).
        dice_reviewed: Dice of the reviewed mask (0 when rejected).
    """

    true_label: int | None
    dice_generated: float | None
    dice_reviewed: float | None

    @property
    def change(self) -> float | None:
        """``dice_reviewed - dice_generated`` (None without a true shape)."""
        if self.dice_generated is None or self.dice_reviewed is None:
            return None
        return self.dice_reviewed - self.dice_generated


def verdict_effects(
    reviewed: ReviewedSeries, generated: Sequence[NoduleMask], truth: SeriesTruth
) -> list[VerdictEffect]:
    """One :class:`VerdictEffect` per nodule of ``reviewed`` (same order).

    ``generated`` are the masks grown from the annotations without review (e.g.
    ``MaskState.records``); ``truth`` the series' true shapes (its label volume and boxes are
    used as they are, its true nodules are paired again with every reviewed nodule, rejected
    and added ones included).
    """
    truths = [t for t, _ in truth.pairs]
    paired = replace(truth, pairs=match_true([n.nodule for n in reviewed.nodules], truths))
    before = {r.nodule: r for r in generated}
    effects = []
    for item in reviewed.nodules:
        true_nodule = paired.truth_of(item.nodule)
        if true_nodule is None:
            effects.append(VerdictEffect(None, None, None))
            continue
        old = None if item.added else before.get(item.nodule)
        new = item.record if item.kept else None
        effects.append(
            VerdictEffect(
                true_nodule.label,
                paired.nodule_dice(true_nodule, old)[0],
                paired.nodule_dice(true_nodule, new)[0],
            )
        )
    return effects


def score_reviewed(
    reviewed: ReviewedSeries,
    truth_labels: np.ndarray,
    true_nodules: Sequence[TrueNodule],
    method: str,
) -> list[NoduleScore]:
    """Per-true-nodule Dice of the reviewed masks (the kept nodules, additions included),
    paired by the same rule as the mask report; what ``lunaseg mask`` prints."""
    kept = [n for n in reviewed.nodules if n.kept and n.record is not None]
    truth = SeriesTruth.from_labels(
        reviewed.series_uid, truth_labels, [n.nodule for n in kept], true_nodules
    )
    return score_series(truth, method, [n.record for n in kept if n.record is not None])
