"""The reviewed ground truth of a series: annotations with their verdicts applied.

For each annotation the latest verdict on its center counts (see
:mod:`src_train.reviews.rows`):

* none, ``undone`` or ``accepted``: the nodule is grown by the chosen mask method, as always;
* ``rejected``: the nodule is dropped (no mask, no training crop, not scored);
* ``corrected``: its mask is exactly the voxels equal to its label in the label volume.

A nodule a reviewer ``added`` (no annotation at its center) is grown by the chosen method from
its center and diameter, like an annotation, or taken from the label volume once corrected; an
added nodule whose latest row is ``rejected`` or ``undone`` is no nodule. A row that matches no
annotation and was never an addition (the annotation moved or was removed) is not applied and
reported. Arrays are ``(index, row, col)``; centers world ``(x, y, z)`` mm.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src_train.ct import CtVolume, Reorientation
from src_train.errors import GeometryError, SeriesReadError
from src_train.luna import Nodule
from src_train.masks.build import NoduleMask, OutsidePolicy, build_masks, mask_nodule
from src_train.masks.density import DEFAULT_THRESHOLD_HU
from src_train.masks.registry import NOTE_EMPTY, REFERENCE_METHOD
from src_train.reviews.book import ReviewBook
from src_train.reviews.labels import label_boxes
from src_train.reviews.rows import (
    ADDED,
    CORRECTED,
    KEPT_STATUSES,
    REJECTED,
    NoduleHistory,
    Review,
    match_histories,
)

log = logging.getLogger(__name__)

#: ``NoduleMask.method`` of a nodule whose voxels come from the label volume.
REVIEW_METHOD = "review"


@dataclass
class ReviewedNodule:
    """One nodule of a series after review: an annotation, or a nodule a reviewer added.

    Attributes:
        nodule: the annotation, or for an addition a :class:`Nodule` at the added center with
            the diameter the reviewer set (``row`` = the line of its first row).
        history: every review row about it (None: never reviewed).
        added: True when it is no annotation but a reviewer's addition.
        record: its mask (None when it is not part of the ground truth: rejected, undone
            addition, or not masked at all when reviews were only paired, not applied).
    """

    nodule: Nodule
    history: NoduleHistory | None = None
    added: bool = False
    record: NoduleMask | None = None

    @property
    def review(self) -> Review | None:
        """The row that counts (None: never reviewed)."""
        return None if self.history is None else self.history.latest

    @property
    def status(self) -> str:
        """Its current verdict; ``""`` when unreviewed."""
        return "" if self.history is None else self.history.status

    @property
    def kept(self) -> bool:
        """True when it belongs to the reviewed ground truth."""
        if self.added:
            return self.status in KEPT_STATUSES
        return self.status != REJECTED


@dataclass
class ReviewedSeries:
    """A series' reviewed ground truth.

    Attributes:
        series_uid: the series.
        mask: bool ``(index, row, col)``: the OR of every kept nodule's mask.
        nodules: every annotation (file order), then every addition (first-row order).
        applied: how many verdicts of each status changed or confirmed a nodule.
        problems: rows not applied, and why (one line each, naming file and line).
    """

    series_uid: str
    mask: np.ndarray
    nodules: list[ReviewedNodule]
    applied: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[NoduleMask]:
        """The masks of the kept nodules, in :attr:`nodules` order."""
        return [n.record for n in self.nodules if n.kept and n.record is not None]

    def table_rows(self) -> list[dict[str, Any]]:
        """One ``nodules.csv`` row per nodule (rejected ones too), with a ``review`` column."""
        rows = []
        for item in self.nodules:
            if item.record is not None:
                row = item.record.to_row()
            else:
                x, y, z = item.nodule.center_xyz_mm
                diameter = item.nodule.diameter_mm
                row = {
                    "seriesuid": item.nodule.series_uid,
                    "coordX": round(x, 3),
                    "coordY": round(y, 3),
                    "coordZ": round(z, 3),
                    "diameter_mm": "" if diameter is None else diameter,
                    "voxel_count": 0,
                    "notes": f"{item.status or 'dropped'} by review",
                }
            row["review"] = item.status
            rows.append(row)
        return rows


def pair_reviews(
    annotations: Sequence[Nodule],
    histories: Sequence[NoduleHistory],
    csv_name: str = "reviews.csv",
) -> tuple[list[ReviewedNodule], list[str]]:
    """Pair a series' annotations with their review histories; add the reviewers' additions.

    Returns the nodules (annotations first, in order, then additions that were not undone)
    without masks, and one problem line per history that matches no annotation and was never
    an addition.
    """
    per_annotation, rest = match_histories(annotations, histories)
    items = [ReviewedNodule(n, h) for n, h in zip(annotations, per_annotation, strict=True)]
    problems = []
    for history in rest:
        if history.was_added and not history.status:
            continue  # an undone addition never was a nodule
        if history.was_added:
            first = next(r for r in history.rows if r.status == ADDED)
            latest = history.latest
            diameter = latest.diameter_mm if latest.diameter_mm is not None else first.diameter_mm
            nodule = Nodule(
                history.series_uid, history.center_xyz_mm, diameter, is_nodule=True, row=first.line
            )
            items.append(ReviewedNodule(nodule, history, added=True))
        elif history.status:
            x, y, z = history.center_xyz_mm
            problems.append(
                f"{csv_name}, {history.latest.where()}: no annotation of series "
                f"{history.series_uid} within 0.5 mm of ({x:.2f}, {y:.2f}, {z:.2f}) mm and the "
                f"nodule was never added; its {history.status} verdict is not applied (was the "
                "annotation moved or removed?)."
            )
    return items, problems


def reviewed_nodules(
    annotations: Sequence[Nodule], histories: Sequence[NoduleHistory]
) -> list[Nodule]:
    """The nodules of the reviewed ground truth (no masks): annotations not rejected, then the
    additions still standing. What scoring (``--reviewed``) and the export use."""
    items, _problems = pair_reviews(annotations, histories)
    return [item.nodule for item in items if item.kept]


def _corrected_record(
    ct: CtVolume,
    nodule: Nodule,
    labels: np.ndarray,
    boxes: dict[int, Any],
    label: int,
    threshold_hu: float,
) -> NoduleMask | None:
    """The record of a corrected nodule: the label volume's voxels equal to ``label``."""
    box = boxes.get(label)
    if box is None:
        return None
    local = labels[box] == label
    lo = tuple(int(s.start) for s in box)
    hi = tuple(int(s.stop) for s in box)
    center_irc = tuple(int(v) for v in ct.geometry.xyz_to_irc_index(nodule.center_xyz_mm))
    count = int(np.count_nonzero(local))
    return NoduleMask(
        nodule=nodule,
        method=REVIEW_METHOD,
        threshold_hu=threshold_hu,
        center_xyz_mm=tuple(float(v) for v in nodule.center_xyz_mm),  # type: ignore[arg-type]
        center_irc=center_irc,  # type: ignore[arg-type]
        radius_irc=tuple((b - a) // 2 for a, b in zip(lo, hi, strict=True)),  # type: ignore[arg-type]
        box_lo_irc=lo,  # type: ignore[arg-type]
        box_hi_irc=hi,  # type: ignore[arg-type]
        voxel_count=count,
        notes=[f"corrected by review (label {label})"] + ([] if count else [NOTE_EMPTY]),
        local_mask=local,
    )


def apply_reviews(
    ct: CtVolume,
    annotations: Sequence[Nodule],
    histories: Sequence[NoduleHistory],
    labels: np.ndarray | None,
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    method: str = REFERENCE_METHOD,
    *,
    on_outside: OutsidePolicy = "raise",
    csv_name: str = "reviews.csv",
    **params: Any,
) -> ReviewedSeries:
    """The reviewed ground truth of ``ct`` (see the module docstring).

    Args:
        ct: the series (HU ``(index, row, col)``).
        annotations: its annotated nodules.
        histories: its review histories (:meth:`ReviewBook.histories`).
        labels: its label volume (uint16, the CT's shape) or None.
        threshold_hu, method, on_outside, params: how kept nodules are grown, as in
            :func:`~src_train.masks.build_masks`.
        csv_name: how problem lines name the reviews file.

    A corrected nodule whose label has no voxel (label volume missing or without it) is grown
    from its center instead, and reported in ``problems``.
    """
    items, problems = pair_reviews(annotations, histories, csv_name)
    boxes = label_boxes(labels) if labels is not None else {}
    applied: Counter[str] = Counter()
    mask = np.zeros(ct.shape_irc, dtype=bool)
    for item in items:
        status = item.status
        if not item.kept:
            if status:
                applied[status] += 1
            continue
        record = None
        if status == CORRECTED and item.review is not None:
            label = item.review.label
            if labels is not None:
                record = _corrected_record(ct, item.nodule, labels, boxes, label, threshold_hu)
            if record is None:
                problems.append(
                    f"{csv_name}, {item.review.where()}: label {label} of series "
                    f"{ct.series_uid} has no voxel in its label volume"
                    f"{'' if labels is not None else ' (the file is missing)'}; the nodule is "
                    "grown from its center instead. Correct it again in the viewer."
                )
            else:
                applied[CORRECTED] += 1
        elif status:
            applied[status] += 1
        if record is None:
            record = mask_nodule(
                ct, item.nodule, threshold_hu, method, on_outside=on_outside, **params
            )
        item.record = record
        if not record.skipped:
            mask[record.box_slices] |= record.local_mask
    for line in problems:
        log.warning("%s", line)
    return ReviewedSeries(ct.series_uid, mask, items, applied, problems)


def apply_book(
    book: ReviewBook | None,
    ct: CtVolume,
    annotations: Sequence[Nodule],
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    method: str = REFERENCE_METHOD,
    *,
    on_outside: OutsidePolicy = "raise",
    turn: Reorientation | None = None,
    **params: Any,
) -> ReviewedSeries:
    """:func:`apply_reviews` with a series' rows and label volume from ``book``.

    Without a book (``None``: reviews ignored) the masks are the plain ones. A label volume
    that does not match the CT's geometry (or cannot be read) is refused: nothing of that
    series' reviews is applied and ``problems`` says why. With ``turn``, ``ct`` is the series
    in the canonical frame (:meth:`CtVolume.canonical`): the label volume, stored in the file's
    geometry, is checked against that and brought to the canonical order.
    """
    histories = [] if book is None else book.histories(ct.series_uid)
    csv_name = "reviews.csv" if book is None else str(book.csv_path)
    labels = None
    problems: list[str] = []
    if histories and book is not None and any(h.label for h in histories):
        try:
            geometry = turn.file_geometry if turn is not None else ct.geometry
            labels = book.labels(ct.series_uid, geometry)
            if labels is not None and turn is not None:
                labels = np.ascontiguousarray(turn.to_canonical(labels))
        except (GeometryError, SeriesReadError) as exc:
            log.warning("%s", exc)
            problems.append(str(exc))
            histories = []
    if not histories:
        mask, records = build_masks(
            ct, annotations, threshold_hu, method, on_outside=on_outside, **params
        )
        items = [ReviewedNodule(n, record=r) for n, r in zip(annotations, records, strict=True)]
        return ReviewedSeries(ct.series_uid, mask, items, Counter(), problems)
    return apply_reviews(
        ct,
        annotations,
        histories,
        labels,
        threshold_hu,
        method,
        on_outside=on_outside,
        csv_name=csv_name,
        **params,
    )
