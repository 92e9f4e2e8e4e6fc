"""Review in suspicion order: walk the folder's nodules most suspicious first (``lunaseg qa``).

:class:`SuspicionOrder` (no Qt) holds ``DATA/qa/suspicious.csv`` as the core reads it
(:func:`src_train.qa.read_suspicious`): for a nodule of a series its suspicion and reasons,
and which nodule comes before or after it. :class:`SuspicionControls` is the row the Review tab
shows: *most suspicious first* (on when the file exists), *Score…* (runs QA over the folder in
a worker and writes the file, as ``lunaseg qa`` does) and a line saying what is loaded. The
Review panel asks :meth:`SuspicionControls.step` where N / Shift+N / a verdict lead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from src_train.errors import LunaSegError
from src_train.luna import LunaFolder
from src_train.qa import (
    QA_DIR,
    SUSPICIOUS_CSV,
    SuspicionEntry,
    iter_qa,
    read_suspicious,
    write_qa,
)
from src_train.reviews import UNDONE, ReviewBook, find_history, same_nodule_index


class SuspicionOrder:
    """The rows of ``suspicious.csv``, most suspicious first, found by series and center."""

    def __init__(self, entries: Sequence[SuspicionEntry], path: Path | None = None) -> None:
        self.entries = list(entries)
        self.path = path
        self._by_series: dict[str, list[SuspicionEntry]] = {}
        for entry in self.entries:
            self._by_series.setdefault(entry.series_uid, []).append(entry)

    @classmethod
    def of_folder(cls, root: str | Path) -> SuspicionOrder | None:
        """The order of ``root/qa/suspicious.csv``; None when the file does not exist."""
        path = Path(root) / QA_DIR / SUSPICIOUS_CSV
        return cls(read_suspicious(path), path) if path.is_file() else None

    def entry(self, series_uid: str, center_xyz_mm: Sequence[float]) -> SuspicionEntry | None:
        """The row of the nodule at ``center_xyz_mm`` (world mm, within 0.5 mm), or None."""
        rows = self._by_series.get(series_uid, [])
        k = same_nodule_index([e.center_xyz_mm for e in rows], center_xyz_mm)
        return None if k is None else rows[k]

    def step(
        self, series_uid: str, center_xyz_mm: Sequence[float], step: int
    ) -> SuspicionEntry | None:
        """The row ``step`` places after (+1) or before (-1) the nodule's; from the top (or
        the end) when the nodule has no row. None past either end."""
        here = self.entry(series_uid, center_xyz_mm)
        start = 0 if step > 0 else len(self.entries) - 1
        k = start if here is None else here.rank + step
        return self.entries[k] if 0 <= k < len(self.entries) else None

    def first_unreviewed(self, book: ReviewBook, reviewer: str = "") -> SuspicionEntry | None:
        """The most suspicious row whose nodule has no verdict yet (None: all have one); with
        ``reviewer``, no verdict of theirs (a second reviewer for agreement starts at the top)."""
        for entry in self.entries:
            history = find_history(book.histories(entry.series_uid), entry.center_xyz_mm)
            if history is None or not history.status:
                return entry
            mine = [r for r in history.rows if r.reviewer == reviewer.strip()]
            if reviewer.strip() and (not mine or mine[-1].status == UNDONE):
                return entry
        return None


class SuspicionControls(QWidget):
    """*most suspicious first*, *Score…* and what is loaded (see the module docstring)."""

    def __init__(self, on_change: Any) -> None:
        super().__init__()
        self.on_change = on_change
        self.folder: LunaFolder | None = None
        self.order: SuspicionOrder | None = None
        self.worker: Any = None
        self.walk = QCheckBox("most suspicious first")
        self.walk.setToolTip(
            "walk the folder's nodules in the order of DATA/qa/suspicious.csv (lunaseg qa)"
        )
        self.walk.toggled.connect(lambda *_: self.on_change())
        self.score_button = QPushButton("Score…")
        self.score_button.setToolTip("rank every annotation of the folder (as 'lunaseg qa')")
        self.score_button.clicked.connect(lambda *_: self.score())
        self.status = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.walk)
        row.addWidget(self.score_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self._show()

    @property
    def walking(self) -> bool:
        """True when the panel should walk in suspicion order."""
        return self.order is not None and self.walk.isChecked()

    def set_folder(self, folder: LunaFolder | None) -> None:
        """Load the folder's ``qa/suspicious.csv`` (if any) when the folder changes."""
        if folder is not None and self.folder is not None and folder.root == self.folder.root:
            return
        self.folder = folder
        self._load()

    def _load(self) -> None:
        self.order = None
        if self.folder is not None:
            try:
                self.order = SuspicionOrder.of_folder(self.folder.root)
            except LunaSegError as exc:
                show_error(str(exc))
        self.walk.blockSignals(True)  # loading is no user's choice: nothing moves
        self.walk.setChecked(self.order is not None)
        self.walk.blockSignals(False)
        self._show()

    def _show(self) -> None:
        self.walk.setEnabled(self.order is not None)
        self.score_button.setEnabled(self.folder is not None)
        self.score_button.setText("Stop scoring" if self.worker is not None else "Score…")
        if self.order is not None and self.order.path is not None:
            flagged = sum(e.suspicion >= 0.5 for e in self.order.entries)
            self.status.setText(
                f"suspicion: {len(self.order.entries)} annotations scored, {flagged} >= 0.5 "
                f"({self.order.path.parent.name}/{self.order.path.name})"
            )
        elif self.folder is not None:
            self.status.setText("suspicion: not scored yet (Score…, or 'lunaseg qa DATA')")
        else:
            self.status.setText("")

    def entry(self, series_uid: str, center_xyz_mm: Sequence[float]) -> SuspicionEntry | None:
        """The nodule's row, None without scores."""
        return None if self.order is None else self.order.entry(series_uid, center_xyz_mm)

    def step(
        self, series_uid: str, center_xyz_mm: Sequence[float], step: int
    ) -> SuspicionEntry | None:
        """Where a walk in suspicion order goes from this nodule (None: the end)."""
        return None if self.order is None else self.order.step(series_uid, center_xyz_mm, step)

    def score(self) -> None:
        """Run QA over the folder in a worker; write ``DATA/qa/`` and load it when done. While
        it runs the button stops it (between two series; nothing is written then)."""
        if self.worker is not None:
            self.worker.quit()
            return
        if self.folder is None:
            return
        folder = self.folder

        def job() -> Any:
            result = yield from iter_qa(folder, book=ReviewBook.for_folder(folder))
            write_qa(result, folder.root / QA_DIR)
            return result

        worker = thread_worker(job, start_thread=False)()
        worker.yielded.connect(lambda p: self.status.setText(f"scoring: {p.done}/{p.total} series"))
        worker.returned.connect(lambda _r: self._scored())
        worker.errored.connect(lambda exc: show_error(str(exc)))
        worker.finished.connect(self._finished)
        self.worker = worker
        self._show()
        worker.start()

    def _scored(self) -> None:
        show_info("Suspicion scored: the Review walks the most suspicious nodules first.")
        self._load()
        self.on_change()

    def _finished(self) -> None:
        self.worker = None
        self._show()


def walk_suspicion(panel: Any, step: int) -> None:
    """Move the Review panel ``step`` nodules on in suspicion order, opening the series the
    next one belongs to; rows of the current series the panel does not list are passed over."""
    if panel.view is None or not panel.items:
        return
    uid = panel.view.ct.series_uid
    center = panel.items[panel.index].nodule.center_xyz_mm
    target = panel.suspicion.step(uid, center, step)
    while (
        target is not None
        and target.series_uid == uid
        and panel._item_at(target.center_xyz_mm) is None
    ):
        target = panel.suspicion.step(uid, target.center_xyz_mm, step)
    if target is None:
        show_info("This was the " + ("last" if step > 0 else "first") + " in suspicion order.")
    elif target.series_uid == uid:
        panel.go_to(panel._index_of(target.center_xyz_mm))
    else:
        panel._open_series(target.series_uid, target.center_xyz_mm)


def start_suspicion_walk(panel: Any) -> None:
    """With review mode on and suspicion order chosen: go to the most suspicious nodule that
    has no verdict of this reviewer yet (opening its series)."""
    order = panel.suspicion.order
    if not (panel.active and panel.suspicion.walking and order and panel.book):
        return
    first = order.first_unreviewed(panel.book, panel.reviewer.text())
    if first is None:
        show_info("Every scored nodule has a verdict.")
    elif first.series_uid == panel.view.ct.series_uid:
        panel.go_to(panel._index_of(first.center_xyz_mm))
    else:
        panel._open_series(first.series_uid, first.center_xyz_mm)
