"""Review rows and the rule that ties them to nodules: latest row per nodule wins.

A row of ``reviews.csv`` is one verdict (:class:`Review`). A nodule is identified by its series
and its annotated center, world ``(x, y, z)`` mm: rows whose centers lie within
:data:`SAME_NODULE_MM` of each other (same series) are about the same nodule, and the row that
comes later in the file supersedes the earlier ones (:func:`nodule_histories`). Annotations are
paired with these histories by the same distance (:func:`match_histories`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from src_train.luna import Nodule

#: Two centers closer than this (world mm, Euclidean) name the same nodule.
SAME_NODULE_MM = 0.5

ACCEPTED = "accepted"
REJECTED = "rejected"
CORRECTED = "corrected"
ADDED = "added"
#: Written by Undo when a nodule had no earlier verdict: the nodule is unreviewed again (an
#: undone addition is no nodule).
UNDONE = "undone"

#: The verdicts a reviewer gives.
VERDICTS = (ACCEPTED, REJECTED, CORRECTED, ADDED)
#: Every value the ``status`` column may hold.
STATUSES = (*VERDICTS, UNDONE)
#: Statuses under which a nodule stays in the ground truth.
KEPT_STATUSES = (ACCEPTED, CORRECTED, ADDED)

#: Columns of ``reviews.csv``, in the order LunaSeg writes them.
REVIEW_COLUMNS = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "status",
    "label",
    "reviewer",
    "time_utc",
    "note",
)

#: Decimals of the world coordinates and diameters written (micrometres).
_MM_DECIMALS = 4


def utc_now() -> str:
    """The current time as ``reviews.csv`` writes it: ISO 8601 UTC, seconds, ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Review:
    """One row of ``reviews.csv``: a verdict on one nodule.

    Attributes:
        series_uid: the series.
        center_xyz_mm: the nodule's annotated center (for ``added``: the spot clicked), world
            ``(x, y, z)`` mm.
        diameter_mm: the nodule's diameter in mm (for ``added``: the one the reviewer set), or
            None.
        status: one of :data:`STATUSES`.
        label: for ``corrected``: the value of the nodule's voxels in
            ``<seriesuid>_labels.mhd`` (>= 1); 0 otherwise.
        reviewer: who gave the verdict.
        time_utc: when, ISO 8601 UTC.
        note: free text.
        line: 1-based line of the row in its file (0 for a row not read from a file).
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    diameter_mm: float | None
    status: str
    label: int = 0
    reviewer: str = ""
    time_utc: str = ""
    note: str = ""
    line: int = 0

    def to_row(self) -> dict[str, Any]:
        """The row as ``reviews.csv`` holds it (keys: :data:`REVIEW_COLUMNS`)."""
        x, y, z = (round(float(v), _MM_DECIMALS) for v in self.center_xyz_mm)
        return {
            "seriesuid": self.series_uid,
            "coordX": x,
            "coordY": y,
            "coordZ": z,
            "diameter_mm": "" if self.diameter_mm is None else round(self.diameter_mm, 3),
            "status": self.status,
            "label": self.label if self.label else "",
            "reviewer": self.reviewer,
            "time_utc": self.time_utc,
            "note": self.note,
        }

    def where(self) -> str:
        """``"line N"`` for messages (``"new row"`` when not read from a file)."""
        return f"line {self.line}" if self.line else "new row"


@dataclass
class NoduleHistory:
    """Every row about one nodule of one series, in file order; the last one counts.

    Attributes:
        series_uid: the series.
        center_xyz_mm: the center of the first row (the nodule's identity), world mm.
        rows: the rows, oldest first.
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    rows: list[Review] = field(default_factory=list)

    @property
    def latest(self) -> Review:
        """The row that counts."""
        return self.rows[-1]

    @property
    def status(self) -> str:
        """The nodule's current verdict, ``""`` when unreviewed (no row, or undone)."""
        status = self.latest.status
        return "" if status == UNDONE else status

    @property
    def was_added(self) -> bool:
        """True when a reviewer added this nodule (it is no annotation)."""
        return any(r.status == ADDED for r in self.rows)

    @property
    def label(self) -> int:
        """The label this nodule's corrections use in the label volume (0: never corrected)."""
        return next((r.label for r in reversed(self.rows) if r.status == CORRECTED), 0)

    def previous(self) -> Review | None:
        """The row before the latest (what an undo restores), or None."""
        return self.rows[-2] if len(self.rows) > 1 else None


def nodule_histories(rows: Iterable[Review]) -> dict[str, list[NoduleHistory]]:
    """Group rows by series and nodule (centers within :data:`SAME_NODULE_MM`), in file order.

    A row joins the nearest existing history of its series within the distance, else starts a
    new one; so "the latest row per nodule" is ``history.latest``.
    """
    grouped: dict[str, list[NoduleHistory]] = {}
    centers: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        histories = grouped.setdefault(row.series_uid, [])
        known = centers.setdefault(row.series_uid, [])
        k = same_nodule_index(known, row.center_xyz_mm)
        if k is None:
            histories.append(NoduleHistory(row.series_uid, row.center_xyz_mm, [row]))
            known.append(row.center_xyz_mm)
        else:
            histories[k].rows.append(row)
    return grouped


def same_nodule_index(
    centers: Sequence[Sequence[float]], point: Sequence[float], limit_mm: float = SAME_NODULE_MM
) -> int | None:
    """Index of the center nearest to ``point`` within ``limit_mm`` (world ``(x, y, z)`` mm):
    the nodule ``point`` names among ``centers``; None when it names none of them."""
    if not centers:
        return None
    dist = np.linalg.norm(np.asarray(centers, dtype=np.float64) - np.asarray(point), axis=1)
    k = int(np.argmin(dist))
    return k if dist[k] <= limit_mm else None


def find_history(
    histories: Sequence[NoduleHistory], center_xyz_mm: Sequence[float]
) -> NoduleHistory | None:
    """The history of the nodule at ``center_xyz_mm`` (within :data:`SAME_NODULE_MM`), or None."""
    k = same_nodule_index([h.center_xyz_mm for h in histories], center_xyz_mm)
    return None if k is None else histories[k]


def match_histories(
    annotations: Sequence[Nodule], histories: Sequence[NoduleHistory]
) -> tuple[list[NoduleHistory | None], list[NoduleHistory]]:
    """Pair each annotation with the history of its center; return the pairs and the rest.

    Returns ``(per_annotation, unmatched)``: for each annotation (in order) its history or None,
    and the histories no annotation claimed (added nodules, or rows whose annotation is gone).
    """
    keys = [h.center_xyz_mm for h in histories]
    matched: list[NoduleHistory | None] = []
    claimed: set[int] = set()
    for nodule in annotations:
        k = same_nodule_index(keys, nodule.center_xyz_mm)
        matched.append(None if k is None else histories[k])
        if k is not None:
            claimed.add(k)
    rest = [h for k, h in enumerate(histories) if k not in claimed]
    return matched, rest
