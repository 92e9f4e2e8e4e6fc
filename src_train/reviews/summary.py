"""Review progress of a data set: how many nodules have a verdict, of which kind, by whom.

A nodule counts once with its latest verdict (:mod:`src_train.reviews.rows`); the nodules are
the annotations of the series on disk plus the reviewers' additions. The viewer's progress line
and ``lunaseg review`` both come from :func:`review_progress`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from src_train.luna import Nodule
from src_train.reviews.apply import ReviewedNodule, pair_reviews
from src_train.reviews.book import ReviewBook
from src_train.reviews.rows import ADDED, CORRECTED, REJECTED, VERDICTS

#: Statuses the progress line names after the count of reviewed nodules.
PROGRESS_LINE_STATUSES = (REJECTED, CORRECTED, ADDED)


@dataclass(frozen=True)
class SeriesProgress:
    """One series: its nodules and how many have a verdict.

    Attributes:
        series_uid: the series.
        nodules: annotations plus additions (an undone or rejected addition is not counted).
        reviewed: nodules with a verdict.
    """

    series_uid: str
    nodules: int
    reviewed: int

    @property
    def done(self) -> bool:
        """True when every nodule has a verdict."""
        return self.reviewed >= self.nodules


@dataclass
class ReviewProgress:
    """Review progress of a data set.

    Attributes:
        series: one entry per series on disk, sorted by UID.
        by_status: nodules per latest verdict.
        by_reviewer: per reviewer, their nodules per latest verdict.
        problems: rows not applied (file, line, why).
    """

    series: list[SeriesProgress]
    by_status: Counter[str] = field(default_factory=Counter)
    by_reviewer: dict[str, Counter[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Nodules to review."""
        return sum(s.nodules for s in self.series)

    @property
    def reviewed(self) -> int:
        """Nodules with a verdict."""
        return sum(s.reviewed for s in self.series)

    @property
    def unreviewed_series(self) -> list[SeriesProgress]:
        """Series with at least one nodule without a verdict."""
        return [s for s in self.series if not s.done]

    def line(self) -> str:
        """``"37 / 1,186 reviewed, 3 rejected, 5 corrected, 2 added"``."""
        parts = [f"{self.reviewed:,} / {self.total:,} reviewed"]
        parts += [f"{self.by_status[s]:,} {s}" for s in PROGRESS_LINE_STATUSES]
        return ", ".join(parts)


def _counted(item: ReviewedNodule) -> bool:
    """An addition counts only while it stands; a rejected addition was never a nodule."""
    return not item.added or item.kept


def review_progress(
    book: ReviewBook, nodules_by_series: Mapping[str, Sequence[Nodule]]
) -> ReviewProgress:
    """Progress over ``nodules_by_series`` (every series on disk -> its annotations)."""
    progress = ReviewProgress(series=[], problems=list(book.problems))
    for uid in sorted(nodules_by_series):
        items, problems = pair_reviews(nodules_by_series[uid], book.histories(uid))
        progress.problems += problems
        counted = [item for item in items if _counted(item)]
        reviewed = [item for item in counted if item.status in VERDICTS]
        progress.series.append(SeriesProgress(uid, len(counted), len(reviewed)))
        for item in reviewed:
            progress.by_status[item.status] += 1
            reviewer = item.review.reviewer if item.review is not None else ""
            progress.by_reviewer.setdefault(reviewer, Counter())[item.status] += 1
    return progress
