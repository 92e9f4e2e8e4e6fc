"""Requests for review from model results: false positives and missed nodules.

A candidate that hits no annotated nodule (LUNA16's hit rule,
:func:`~src_train.evaluate.scoring.nodule_hits`) may be a nodule the annotators missed: it is
proposed to the reviewer as an addition. An annotated nodule no candidate hits is proposed for
a check (is the annotation right?). A request is no verdict: nothing is written until the
reviewer gives one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from src_train.evaluate.scoring import nodule_hits
from src_train.luna import Nodule

#: Request kinds: a spot proposed as a new nodule, or an annotation to check.
REQUEST_ADD = "added"
REQUEST_CHECK = "check"


@dataclass(frozen=True)
class ReviewRequest:
    """A nodule sent to review.

    Attributes:
        kind: :data:`REQUEST_ADD` or :data:`REQUEST_CHECK`.
        series_uid: the series.
        center_xyz_mm: the spot (candidate center or annotated center), world ``(x, y, z)`` mm.
        diameter_mm: its diameter (the candidate's equivalent diameter, or the annotation's).
        reason: one line for the reviewer (where the request came from).
    """

    kind: str
    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    diameter_mm: float | None
    reason: str = ""


def false_positive_requests(
    series_uid: str,
    centers_xyz_mm: Sequence[Sequence[float]],
    diameters_mm: Sequence[float],
    nodules: Sequence[Nodule],
) -> list[ReviewRequest | None]:
    """For each candidate (world mm centers, equivalent diameters in mm): an addition request
    when it hits none of ``nodules`` (an unknown diameter as in :func:`nodule_hits`), else
    None."""
    hits = nodule_hits(np.asarray(centers_xyz_mm, dtype=np.float64), nodules)
    out: list[ReviewRequest | None] = []
    for k, (center, diameter) in enumerate(zip(centers_xyz_mm, diameters_mm, strict=True)):
        if hits[k].any():
            out.append(None)
            continue
        out.append(
            ReviewRequest(
                REQUEST_ADD,
                series_uid,
                tuple(float(v) for v in center),  # type: ignore[arg-type]
                float(diameter),
                "false-positive candidate of the model: a nodule the annotators missed?",
            )
        )
    return out


def missed_nodule_requests(
    series_uid: str, centers_xyz_mm: Sequence[Sequence[float]], nodules: Sequence[Nodule]
) -> list[ReviewRequest]:
    """A check request for each nodule of ``nodules`` that no candidate (world mm centers) hits
    (an unknown diameter as in :func:`nodule_hits`), in annotation order."""
    hits = nodule_hits(np.asarray(centers_xyz_mm, dtype=np.float64).reshape(-1, 3), nodules)
    return [
        ReviewRequest(
            REQUEST_CHECK,
            series_uid,
            nodule.center_xyz_mm,
            nodule.diameter_mm,
            "missed by the model (false negative): is the annotation right?",
        )
        for k, nodule in enumerate(nodules)
        if not hits[:, k].any()
    ]
