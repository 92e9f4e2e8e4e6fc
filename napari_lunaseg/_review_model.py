"""The Review panel's state and actions, without Qt or napari (tests drive it headless).

:class:`ReviewModel` holds the series under review (a :class:`~napari_lunaseg._series_view.
SeriesView` as Mask QA hands it over), its data folder and :class:`~src_train.reviews.ReviewBook`,
the rows of the review table (:class:`~napari_lunaseg._review_table.ReviewItem`), the current
row, this session's undo stack and the nodules other widgets sent to review. Its actions record
verdicts, corrections and additions through the core (:mod:`src_train.reviews`) and say where
the review goes next; they raise :class:`~src_train.errors.LunaSegError` for what the user must
fix. The panel (:mod:`napari_lunaseg._review`) turns this into layers, a table and keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_lunaseg._names import short_name
from napari_lunaseg._review_table import ReviewItem, suspicion_text, table_rows
from src_train.errors import LunaSegError
from src_train.evaluate.review_requests import REQUEST_ADD, ReviewRequest
from src_train.luna import LunaFolder, Nodule
from src_train.qa import SuspicionEntry
from src_train.reviews import (
    ACCEPTED,
    ADDED,
    REJECTED,
    ReviewBook,
    ReviewedSeries,
    UndoEntry,
    VerdictEffect,
    apply_book,
    record_correction,
    record_verdict,
    review_progress,
    same_nodule_index,
    undo,
    verdict_effects,
)

if TYPE_CHECKING:
    from napari_lunaseg._series_view import SeriesView

#: Diameter offered for an addition (and for a nodule without one), mm.
ADD_DIAMETER_MM = 6.0
NO_FOLDER = (
    "Review needs a series of a data folder (File > Open subset*/<uid>.mhd of a LUNA16 or "
    "'lunaseg synth' folder): verdicts are saved in DATA/reviews/."
)
NO_REVIEWER = "Type your name in 'reviewer' first: every verdict records who gave it."
NOT_YET_A_NODULE = "A proposed spot is no nodule yet: add it first (A), then correct it."
NO_NODULE = "This series has no nodule to review; Add… one or go to the next series."

#: Where a newly opened series starts: "first", "last" or a nodule's center (x, y, z) mm.
Position = str | tuple[float, float, float]


class ReviewError(LunaSegError):
    """A review action that cannot be done now; the message says what to do first."""


class ReviewModel:
    """The review of one series of a data folder: rows, current row, verdicts, undo."""

    def __init__(
        self,
        suspicion_of: Callable[[str, Sequence[float]], SuspicionEntry | None] | None = None,
    ) -> None:
        #: A nodule's ``lunaseg qa`` suspicion by series and center (None: not scored).
        self.suspicion_of = suspicion_of or (lambda _uid, _center: None)
        self.view: SeriesView | None = None
        self.folder: LunaFolder | None = None
        self.book: ReviewBook | None = None
        self.reviewed: ReviewedSeries | None = None
        self.items: list[ReviewItem] = []
        self.index = 0
        self.undo_stack: list[UndoEntry] = []
        self.requests: list[ReviewRequest] = []
        #: Where the next series opened by the review starts (None: first unreviewed).
        self.pending_position: Position | None = None

    # -- series ------------------------------------------------------------------------------
    def set_series(self, view: SeriesView | None) -> tuple[bool, list[str]]:
        """Take ``view``'s series (None: no series); returns (the same series as before, the
        review rows the core could not apply when the folder's book was opened anew).
        Call :meth:`recompute` after adding requests, then :meth:`place`."""
        same = (
            view is not None
            and self.view is not None
            and view.ct.series_uid == self.view.ct.series_uid
        )
        self.view = view
        problems: list[str] = []
        if view is None or view.luna_root is None:
            self.folder = self.book = self.reviewed = None
            self.items = []
            return same, problems
        if self.folder is None or self.folder.root != Path(view.luna_root):
            self.folder = LunaFolder(view.luna_root, lenient=True)  # as the reader
            self.book = ReviewBook.for_folder(self.folder)
            problems = [str(p) for p in self.book.problems]
        elif not same and self.book is not None:
            self.book.reload()  # another window may have written since
        return same, problems

    def place(self) -> int:
        """After a new series: the row to start at (the pending position, else the first
        without a verdict); sets and returns :attr:`index`."""
        position, self.pending_position = self.pending_position, None
        if position == "last":
            self.index = max(len(self.items) - 1, 0)
        elif isinstance(position, tuple):
            self.index = self.index_of(position)
        else:
            self.index = self.first_unreviewed()
        return self.index

    def recompute(self) -> None:
        """Apply the reviews (core) and rebuild the rows: the series' nodules with their
        verdicts and Dice effects, then proposed additions sent by other widgets."""
        view = self.view
        if view is None or self.book is None:
            return
        self.reviewed = apply_book(
            self.book,
            view.ct,
            view.annotations,
            view.threshold_hu,
            view.method,
            on_outside="skip",
        )
        effects: list[VerdictEffect | None] = [None] * len(self.reviewed.nodules)
        if view.truth is not None:
            effects = list(verdict_effects(self.reviewed, view.generated, view.truth))
        self.items = [
            ReviewItem(n.nodule, n, effect=e)
            for n, e in zip(self.reviewed.nodules, effects, strict=True)
        ]
        uid = view.ct.series_uid
        for request in self.requests:
            if request.series_uid != uid:
                continue  # waits until its series is shown again
            matched = self.item_at(request.center_xyz_mm)
            if matched is not None:
                matched.request = request
            elif request.kind == REQUEST_ADD:
                nodule = Nodule(uid, request.center_xyz_mm, request.diameter_mm)
                self.items.append(ReviewItem(nodule, request=request))
        for item in self.items:
            item.suspicion = self.suspicion_of(uid, item.nodule.center_xyz_mm)
        self.index = min(self.index, max(len(self.items) - 1, 0))

    def item_at(self, center_xyz_mm: Sequence[float]) -> ReviewItem | None:
        """The row of the nodule at ``center_xyz_mm`` (world mm, the core's matching rule)."""
        k = same_nodule_index([i.nodule.center_xyz_mm for i in self.items], center_xyz_mm)
        return None if k is None else self.items[k]

    def index_of(self, center_xyz_mm: Sequence[float]) -> int:
        """The row index of the nodule at ``center_xyz_mm`` (the current row if none)."""
        item = self.item_at(center_xyz_mm)
        return self.items.index(item) if item is not None else self.index

    def first_unreviewed(self) -> int:
        """The first row without a verdict (a proposal counts as one), else 0."""
        for k, item in enumerate(self.items):
            if item.proposal or not item.reviewed or not item.reviewed.status:
                return k
        return 0

    @property
    def current(self) -> ReviewItem | None:
        """The current row (None when the series has none)."""
        return self.items[self.index] if self.items else None

    def clamp(self, index: int) -> int:
        """Make row ``index`` (clipped to the rows) current and return it."""
        self.index = int(np.clip(index, 0, max(len(self.items) - 1, 0)))
        return self.index

    def neighbour(self, step: int) -> str | None:
        """The series with nodules after (``step`` 1) or before (-1) this one, by UID order;
        None when there is none."""
        if self.folder is None or self.book is None or self.view is None:
            return None
        progress = review_progress(self.book, self.folder.nodules_by_series)
        with_nodules = [s.series_uid for s in progress.series if s.nodules]
        uid = self.view.ct.series_uid
        later = [u for u in with_nodules if (u > uid if step > 0 else u < uid)]
        if not later:
            return None
        return later[0] if step > 0 else later[-1]

    # -- verdicts ----------------------------------------------------------------------------
    def check_writable(self, reviewer: str) -> tuple[SeriesView, ReviewBook]:
        """The series and book verdicts are saved to; :class:`ReviewError` unless verdicts can
        be saved (a data folder, a reviewer's name)."""
        if self.view is None or self.book is None:
            raise ReviewError(NO_FOLDER)
        if not reviewer.strip():
            raise ReviewError(NO_REVIEWER)
        return self.view, self.book

    def ready(self, reviewer: str) -> ReviewItem:
        """The current row when a verdict can be recorded on it; else :class:`ReviewError`."""
        self.check_writable(reviewer)
        item = self.current
        if item is None:
            raise ReviewError(NO_NODULE)
        return item

    def record(
        self, status: str, reviewer: str, note: str = "", diameter_mm: float | None = None
    ) -> UndoEntry:
        """Record ``status`` on the current row (``diameter_mm`` for a proposal); returns the
        entry for undo. The rows are rebuilt; the caller decides where to go next."""
        item = self.ready(reviewer)
        view, book = self.check_writable(reviewer)
        diameter = (diameter_mm or ADD_DIAMETER_MM) if item.proposal else item.nodule.diameter_mm
        entry, read = record_verdict(
            book.dir,
            view.ct.series_uid,
            item.nodule.center_xyz_mm,
            diameter,
            status,
            reviewer,
            note,
        )
        self._after(entry, read)
        return entry

    def accept(self, reviewer: str, note: str = "", diameter_mm: float | None = None) -> UndoEntry:
        """Accept the current row (a proposed spot is added as a nodule)."""
        item = self.ready(reviewer)
        return self.record(ADDED if item.proposal else ACCEPTED, reviewer, note, diameter_mm)

    def reject(self, reviewer: str, note: str = "") -> UndoEntry | None:
        """Reject the current row; a proposed spot is dismissed (nothing recorded, None)."""
        item = self.ready(reviewer)
        if item.proposal and item.request is not None:
            self.requests.remove(item.request)
            self.recompute()
            return None
        return self.record(REJECTED, reviewer, note)

    def add(
        self, center_xyz_mm: Sequence[float], diameter_mm: float, reviewer: str, note: str = ""
    ) -> UndoEntry:
        """Add a nodule the annotators missed at ``center_xyz_mm`` (world mm)."""
        view, book = self.check_writable(reviewer)
        entry, read = record_verdict(
            book.dir,
            view.ct.series_uid,
            tuple(float(v) for v in center_xyz_mm),
            float(diameter_mm),
            ADDED,
            reviewer,
            note,
        )
        self._after(entry, read)
        return entry

    def correction_voxels(self, item: ReviewItem) -> np.ndarray:
        """The voxels a correction of ``item`` starts from (its reviewed or generated mask),
        uint8 ``(index, row, col)`` over the whole CT."""
        if self.view is None:
            raise ReviewError(NO_FOLDER)
        if item.proposal:
            raise ReviewError(
                "A proposed spot is no nodule yet: add it first (A), then correct it."
            )
        voxels = np.zeros(self.view.ct.shape_irc, dtype=np.uint8)
        record = item.reviewed.record if item.reviewed is not None else None
        if record is None and item.reviewed is not None and not item.reviewed.added:
            annotations = self.view.annotations
            index = annotations.index(item.nodule) if item.nodule in annotations else -1
            record = self.view.generated[index] if index >= 0 else None
        if record is not None and not record.skipped:
            voxels[record.box_slices] = record.local_mask
        return voxels

    def save_correction(
        self, item: ReviewItem, voxels: np.ndarray, reviewer: str, note: str = ""
    ) -> UndoEntry:
        """Save ``voxels`` (non-zero = nodule, ``(index, row, col)``) as ``item``'s correction."""
        view, book = self.check_writable(reviewer)
        entry, read = record_correction(
            book.dir,
            view.ct.geometry,
            view.ct.series_uid,
            item.nodule.center_xyz_mm,
            item.nodule.diameter_mm,
            np.asarray(voxels) != 0,
            reviewer,
            note,
        )
        self._after(entry, read)
        return entry

    def undo(self) -> UndoEntry | None:
        """Take back this session's last verdict (the file keeps both rows); None if none."""
        if not self.undo_stack or self.book is None:
            return None
        entry = self.undo_stack[-1]
        read = undo(self.book.dir, entry)
        self.undo_stack.pop()
        self.book.set_rows(read)
        self.recompute()
        return entry

    def _after(self, entry: UndoEntry, read: Any) -> None:
        """After a write: keep it for undo, take the file as written, drop the request it
        answered, rebuild the rows."""
        self.undo_stack.append(entry)
        if self.book is not None:
            self.book.set_rows(read)
        done = self.item_at(entry.row.center_xyz_mm)
        if done is not None and done.request is not None:
            self.requests.remove(done.request)
        self.recompute()

    def take_requests(self, requests: Sequence[ReviewRequest]) -> None:
        """Add nodules other widgets sent to review (shown once their series is)."""
        self.requests += list(requests)

    # -- what the panel shows ----------------------------------------------------------------
    def table_rows(self) -> list[list[Any]]:
        """The review table as rows of values."""
        return table_rows(self.items)

    def progress_line(self) -> str:
        """How far the review of the folder got (empty without a folder)."""
        if self.book is None or self.folder is None:
            return ""
        return review_progress(self.book, self.folder.nodules_by_series).line()

    def current_line(self) -> str:
        """Where the review is: series k/n, nodule i/m, size, verdict, why it was sent."""
        if self.view is not None and self.book is None:
            return NO_FOLDER
        if self.view is None:
            return ""
        uid = self.view.ct.series_uid
        item = self.current
        if item is None:
            return f"{short_name(uid)}: no nodule to review."
        uids = self.folder.series_uids if self.folder is not None else [uid]
        where = f"series {uids.index(uid) + 1}/{len(uids)}" if uid in uids else short_name(uid)
        size = f"{item.nodule.diameter_mm:.1f} mm" if item.nodule.diameter_mm else "no diameter"
        status = self.table_rows()[self.index][2]
        reason = f" — {item.request.reason}" if item.request is not None else ""
        suspicion = suspicion_text(item.suspicion)
        suspicion = f" · suspicion {suspicion}" if suspicion else ""
        return (
            f"{where} · nodule {self.index + 1}/{len(self.items)} · {size} · {status}{reason}"
            f"{suspicion}"
        )
