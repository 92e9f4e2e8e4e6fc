"""Where several reviewers judged the same nodules: do they agree?

A reviewer's verdict on a nodule is their latest row about it in ``reviews.csv`` (rows are tied
to nodules as everywhere, :mod:`.rows`; an ``undone`` row withdraws the verdict). Agreement is
measured over the verdict categories (accepted, rejected, corrected, added):

* **Cohen's kappa** for each pair of reviewers, over the nodules both judged:
  ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the fraction they agree on and ``p_e`` the agreement
  their own category frequencies give by chance (``sum_c pA(c) pB(c)``);
* **Fleiss' kappa** when three or more reviewers judged, over the nodules every one of them
  judged: ``(P - Pe) / (1 - Pe)``, ``P`` the mean over nodules of the fraction of agreeing
  reviewer pairs, ``Pe = sum_c p(c)^2`` with ``p(c)`` the share of all verdicts in ``c``.

Both are NaN when chance agreement is already 1 (every verdict the same category): kappa is
undefined there. **Dice** between two reviewers' masks of a nodule: ``accepted`` is the mask
grown from the annotation, ``rejected`` none, ``corrected`` the reviewer's own voxels
(``reviews/by_reviewer/<name>/``; a correction from before those files existed falls back to
the shared label volume when it is the nodule's latest row, else its Dice is NaN and said so).
Dice of two empty masks is 1 (:func:`src_train.metrics.dice`).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from src_train.ct import CtVolume
from src_train.luna import LunaFolder, Nodule
from src_train.masks.build import mask_nodule
from src_train.metrics import dice
from src_train.reviews.book import ReviewBook
from src_train.reviews.files import reviewer_labels_path
from src_train.reviews.labels import load_labels
from src_train.reviews.rows import CORRECTED, REJECTED, UNDONE, NoduleHistory, Review


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two raters' categories over the same items (NaN: undefined)."""
    if len(a) != len(b) or not a:
        return math.nan
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    chance = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if chance >= 1.0:
        return math.nan
    return (observed - chance) / (1.0 - chance)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa of items each rated by the same number (>= 2) of raters (NaN: undefined)."""
    if not items:
        return math.nan
    m = len(items[0])
    if m < 2 or any(len(item) != m for item in items):
        return math.nan
    categories = sorted({c for item in items for c in item})
    counts = np.array([[Counter(item)[c] for c in categories] for item in items], dtype=float)
    per_item = ((counts**2).sum(axis=1) - m) / (m * (m - 1))
    shares = counts.sum(axis=0) / (len(items) * m)
    chance = float((shares**2).sum())
    if chance >= 1.0:
        return math.nan
    return (float(per_item.mean()) - chance) / (1.0 - chance)


@dataclass
class NoduleVerdicts:
    """Every reviewer's latest verdict on one nodule, and Dice between their masks.

    Attributes:
        series_uid: the series.
        center_xyz_mm: the nodule's center (its first row's), world mm.
        rows: reviewer -> their latest row about it (undone verdicts left out).
        dice: ``(reviewer a, reviewer b)`` (sorted) -> Dice of their masks (NaN: unknown).
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    rows: dict[str, Review]
    dice: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def verdicts(self) -> dict[str, str]:
        """Reviewer -> status."""
        return {name: row.status for name, row in self.rows.items()}

    @property
    def agree(self) -> bool:
        """True when every reviewer gave the same verdict."""
        return len(set(self.verdicts.values())) <= 1


def nodule_verdicts(history: NoduleHistory) -> NoduleVerdicts:
    """Each reviewer's latest row in ``history`` (one whose latest row is ``undone``: none)."""
    latest: dict[str, Review] = {}
    for row in history.rows:
        latest[row.reviewer] = row
    kept = {name: row for name, row in latest.items() if row.status != UNDONE}
    return NoduleVerdicts(history.series_uid, history.center_xyz_mm, kept)


@dataclass
class AgreementReport:
    """Agreement over a data set's reviews.

    Attributes:
        reviewers: every reviewer who gave a verdict, sorted.
        nodules: the nodules two or more reviewers judged, disagreements first.
        kappa: ``(a, b)`` -> (nodules both judged, Cohen's kappa).
        fleiss: (nodules all judged, Fleiss' kappa) with 3+ reviewers, else None.
        notes: what could not be measured, and why.
    """

    reviewers: list[str]
    nodules: list[NoduleVerdicts]
    kappa: dict[tuple[str, str], tuple[int, float]]
    fleiss: tuple[int, float] | None = None
    notes: list[str] = field(default_factory=list)


def _kappas(
    shared: Sequence[NoduleVerdicts], reviewers: Sequence[str]
) -> tuple[dict[tuple[str, str], tuple[int, float]], tuple[int, float] | None]:
    kappa = {}
    for a, b in itertools.combinations(reviewers, 2):
        both = [n.verdicts for n in shared if a in n.rows and b in n.rows]
        kappa[(a, b)] = (len(both), cohen_kappa([v[a] for v in both], [v[b] for v in both]))
    fleiss = None
    if len(reviewers) >= 3:
        full = [[n.verdicts[r] for r in reviewers] for n in shared if len(n.rows) == len(reviewers)]
        fleiss = (len(full), fleiss_kappa(full))
    return kappa, fleiss


def _reviewer_mask(
    ct: CtVolume, book: ReviewBook, item: NoduleVerdicts, name: str, latest: Review
) -> np.ndarray | None:
    """One reviewer's mask of a nodule (bool, the CT's shape), None when unknown."""
    row = item.rows[name]
    if row.status == REJECTED:
        return np.zeros(ct.shape_irc, dtype=bool)
    if row.status == CORRECTED:
        own = load_labels(reviewer_labels_path(book.dir, name, item.series_uid), ct.geometry)
        if own is None and latest is row:
            own = book.labels(item.series_uid, ct.geometry)
        return None if own is None else own == row.label
    diameter = row.diameter_mm
    record = mask_nodule(
        ct, Nodule(item.series_uid, row.center_xyz_mm, diameter), on_outside="skip"
    )
    mask = np.zeros(ct.shape_irc, dtype=bool)
    if not record.skipped:
        mask[record.box_slices] = record.local_mask
    return mask


def _dice_of_series(
    ct: CtVolume, book: ReviewBook, items: Sequence[NoduleVerdicts], notes: list[str]
) -> None:
    histories = {h.center_xyz_mm: h for h in book.histories(ct.series_uid)}
    for item in items:
        latest = histories[item.center_xyz_mm].latest
        masks = {name: _reviewer_mask(ct, book, item, name, latest) for name in item.rows}
        for a, b in itertools.combinations(sorted(item.rows), 2):
            ma, mb = masks[a], masks[b]
            item.dice[(a, b)] = math.nan if ma is None or mb is None else dice(ma, mb)
            if ma is None or mb is None:
                who = a if ma is None else b
                notes.append(
                    f"{item.series_uid} ({', '.join(f'{v:.1f}' for v in item.center_xyz_mm)}) mm: "
                    f"{who}'s corrected voxels were overwritten (reviewed before per-reviewer "
                    "label volumes existed); Dice not computed"
                )


def _names_in(history: NoduleHistory) -> list[str]:
    """The reviewers with a standing verdict in ``history``."""
    return list(nodule_verdicts(history).rows)


def _lowest_dice(item: NoduleVerdicts) -> float:
    return min((d for d in item.dice.values() if not math.isnan(d)), default=1.0)


def agreement(folder: LunaFolder, book: ReviewBook | None = None) -> AgreementReport:
    """Agreement between the reviewers of ``folder`` (see the module docstring)."""
    book = book or ReviewBook.for_folder(folder)
    shared: list[NoduleVerdicts] = []
    for uid in book.series_uids:
        shared += [v for h in book.histories(uid) if len((v := nodule_verdicts(h)).rows) >= 2]
    reviewers = sorted(
        {name for uid in book.series_uids for h in book.histories(uid) for name in _names_in(h)}
    )
    kappa, fleiss = _kappas(shared, reviewers)
    notes: list[str] = []
    for uid in sorted({n.series_uid for n in shared}):
        _dice_of_series(folder.load(uid), book, [n for n in shared if n.series_uid == uid], notes)
    shared.sort(key=lambda n: (n.agree, _lowest_dice(n), n.series_uid))
    return AgreementReport(reviewers, shared, kappa, fleiss, notes)


def report_lines(report: AgreementReport) -> list[str]:
    """What ``lunaseg review --agreement`` prints: kappas, then one line per nodule."""
    lines = [f"reviewers: {', '.join(report.reviewers) or '(none)'}"]
    if len(report.reviewers) < 2:
        lines.append("agreement needs verdicts from two or more reviewers on the same nodules")
        return lines
    for (a, b), (n, k) in report.kappa.items():
        lines.append(f"Cohen's kappa {a} / {b}: {k:.3f} over {n} nodule(s)")
    if report.fleiss is not None:
        n, k = report.fleiss
        lines.append(
            f"Fleiss' kappa ({len(report.reviewers)} reviewers): {k:.3f} over {n} nodule(s)"
        )
    disagree = sum(not n.agree for n in report.nodules)
    lines.append(
        f"nodules judged by 2+ reviewers: {len(report.nodules)}, disagreements: {disagree}"
    )
    for item in report.nodules:
        x, y, z = item.center_xyz_mm
        verdicts = ", ".join(f"{r} {s}" for r, s in sorted(item.verdicts.items()))
        dices = ", ".join(f"{a}/{b} {d:.2f}" for (a, b), d in sorted(item.dice.items()))
        mark = "agree   " if item.agree else "DISAGREE"
        lines.append(
            f"  {mark} {item.series_uid} ({x:.1f}, {y:.1f}, {z:.1f}) mm: {verdicts}; Dice {dices}"
        )
    lines += [f"note: {note}" for note in report.notes]
    return lines
