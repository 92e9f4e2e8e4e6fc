"""What the review table says: one :class:`ReviewItem` per row (a nodule of the reviewed series
or a proposed addition) and the values of its columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from src_train.evaluate.review_requests import ReviewRequest
from src_train.luna import Nodule
from src_train.qa import SuspicionEntry
from src_train.reviews import ReviewedNodule, VerdictEffect

#: Columns of the review table.
TABLE_HEADERS = (
    "#",
    "nodule",
    "verdict",
    "by",
    "Dice gen.",
    "Dice rev.",
    "Δ Dice",
    "suspicion",
    "note",
)
#: What the Dice columns mean (header tooltips); synthetic data only.
HEADER_TIPS = {
    "Dice gen.": "Dice of the mask grown from the annotation against the true shape",
    "Dice rev.": "Dice of the reviewed mask against the true shape (0 when rejected)",
    "Δ Dice": "what the verdict did: positive = the review made the mask better",
    "suspicion": "how wrong the annotation looks, and why (lunaseg qa; Score… in this tab)",
}


@dataclass
class ReviewItem:
    """One row of the review table: a nodule of the reviewed series, or a proposed addition."""

    nodule: Nodule
    reviewed: ReviewedNodule | None = None
    request: ReviewRequest | None = None
    effect: VerdictEffect | None = None
    suspicion: SuspicionEntry | None = None

    @property
    def proposal(self) -> bool:
        """True for a spot proposed as a nodule (nothing recorded yet)."""
        return self.reviewed is None


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def suspicion_text(entry: SuspicionEntry | None) -> str:
    """``"0.93 (air; large)"``; ``""`` for a nodule without a score."""
    if entry is None:
        return ""
    reasons = "; ".join(entry.reasons)
    return f"{entry.suspicion:.2f}" + (f" ({reasons})" if reasons else "")


def table_rows(items: Sequence[ReviewItem]) -> list[list[Any]]:
    """The review table as rows of values, one per item (columns :data:`TABLE_HEADERS`)."""
    rows = []
    for k, item in enumerate(items):
        review = item.reviewed.review if item.reviewed is not None else None
        if item.proposal:
            kind, verdict = "proposed", "to add?"
        else:
            kind = "added" if item.reviewed and item.reviewed.added else "annotated"
            verdict = item.reviewed.status if item.reviewed else ""
            if not verdict and item.request is not None:
                verdict = "check: missed by the model"
        effect = item.effect
        rows.append(
            [
                k + 1,
                kind,
                verdict or "—",
                review.reviewer if review and verdict else "",
                _fmt(effect.dice_generated if effect else None),
                _fmt(effect.dice_reviewed if effect else None),
                _fmt(effect.change if effect else None, signed=True),
                suspicion_text(item.suspicion),
                review.note if review and verdict else "",
            ]
        )
    return rows
