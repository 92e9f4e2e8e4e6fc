"""Review mode of Mask QA: a verdict on every nodule, corrections, additions, keys, undo.

The panel walks through the nodules of the open series, then on to the next series of its data
folder. For each it jumps and zooms to the nodule and outlines its box; the generated mask,
the true shapes (synthetic data) and a model's prediction stay visible as Mask QA and Inference
show them. Verdicts (keys A accept, R reject, N next, Shift+N previous, U undo; buttons for all
of them and for Correct / Add) are written at once to ``DATA/reviews/`` by the core
(:mod:`src_train.reviews`), which also says what the reviewed ground truth is, how far the
review got and what each verdict did to the Dice against the true shapes. The panel keeps no
rule of its own. Its state and actions are :class:`~napari_lunaseg._review_model.ReviewModel`
(no Qt; tests drive it headless); this module shows them as layers, a table, buttons and keys.

Beside the panel: :mod:`napari_lunaseg._series_view` (what Mask QA hands over),
:mod:`napari_lunaseg._review_table` (what each row of its table says),
:mod:`napari_lunaseg._review_inbox` (nodules other widgets send to review: the Inference widget
sends false-positive candidates as proposed additions and missed nodules to check, through
:func:`~napari_lunaseg._review_inbox.send_to_review`) and :mod:`napari_lunaseg._reviewer` (the
remembered reviewer's name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lunaseg import PLUGIN
from napari_lunaseg._layers import (
    ROLE_REVIEW_ADD,
    ROLE_REVIEW_BOX,
    ROLE_REVIEW_EDIT,
    layer_info,
    short_name,
)
from napari_lunaseg._review_inbox import inbox_for
from napari_lunaseg._review_inbox import send_to_review as send_to_review  # the Inference widget's
from napari_lunaseg._review_layers import (
    CURRENT_BOX_COLOR,
    open_add_layer,
    open_correction_layer,
    show_reviewed_layer,
)
from napari_lunaseg._review_model import (
    ADD_DIAMETER_MM,
    NOT_YET_A_NODULE,
    Position,
    ReviewError,
    ReviewModel,
)
from napari_lunaseg._review_order import (
    SuspicionControls,
    start_suspicion_walk,
    walk_suspicion,
)
from napari_lunaseg._review_table import HEADER_TIPS, TABLE_HEADERS, ReviewItem
from napari_lunaseg._reviewer import remember_reviewer, remembered_reviewer
from napari_lunaseg._screen import REVIEW, show_task
from napari_lunaseg._series_view import SeriesView
from napari_lunaseg._viewer_utils import (
    box_rectangles,
    fill_table,
    find_layer,
    make_table,
    make_wrapping_label,
    set_box_shapes,
    zoom_to_nodule,
)
from src_train.errors import LunaSegError
from src_train.luna import LunaFolder
from src_train.reviews import ReviewBook, UndoEntry

#: Range of the diameter offered for an addition, mm.
ADD_DIAMETER_RANGE_MM = (1.0, 60.0)
#: Keys of review mode (napari key names) -> panel method.
KEYS = {"A": "accept", "R": "reject", "N": "next", "Shift-N": "previous", "U": "undo"}
KEYS_HELP = "keys: A accept · R reject · N next · Shift+N previous · U undo"


class ReviewPanel(QWidget):
    """Review the nodules of the series Mask QA shows (see the module docstring).

    ``host`` is the Mask QA widget: it calls :meth:`set_series` when its series or masks change
    and offers ``select_ct_layer(layer)`` to move to another series. The state and the verdicts
    live in :attr:`model` (:class:`~napari_lunaseg._review_model.ReviewModel`, no Qt).
    """

    def __init__(self, viewer: Any, host: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.host = host
        self.active = False
        self._edit_item: ReviewItem | None = None
        self.suspicion = SuspicionControls(self._on_order_changed)
        self.model = ReviewModel(self.suspicion.entry)

        self.reviewer = QLineEdit(remembered_reviewer())
        self.reviewer.setPlaceholderText("your name (remembered)")
        self.note = QLineEdit()
        self.note.setPlaceholderText("note for the next verdict (optional)")
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(*ADD_DIAMETER_RANGE_MM)
        self.diameter.setValue(ADD_DIAMETER_MM)
        self.diameter.setSuffix(" mm")
        self.start_button = self._button("Start review", self.toggle)
        self.start_button.setCheckable(True)
        self.previous_button = self._button("◀ Previous", self.previous)
        self.next_button = self._button("Next ▶", self.next)
        self.accept_button = self._button("Accept (A)", self.accept)
        self.reject_button = self._button("Reject (R)", self.reject)
        self.correct_button = self._button("Correct…", self.start_correction)
        self.save_button = self._button("Save correction", self.save_correction)
        self.add_button = self._button("Add…", self.start_add)
        self.undo_button = self._button("Undo (U)", self.undo)
        self.progress = make_wrapping_label("")
        self.current = make_wrapping_label("")
        self.table = make_table(TABLE_HEADERS)
        for column, tip in HEADER_TIPS.items():
            self.table.horizontalHeaderItem(TABLE_HEADERS.index(column)).setToolTip(tip)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self._lay_out()

        self.reviewer.editingFinished.connect(lambda: remember_reviewer(self.reviewer.text()))
        self.note.returnPressed.connect(self.note.clearFocus)
        self.inbox = inbox_for(viewer)
        self.inbox.listening += 1
        self.inbox.received.connect(self._on_requests)
        self.destroyed.connect(lambda *_: self._detach())
        self._update_buttons()

    def _lay_out(self) -> None:
        form = QGridLayout()
        for row, (label, field) in enumerate(
            (("reviewer", self.reviewer), ("note", self.note), ("add diameter", self.diameter))
        ):
            form.addWidget(QLabel(label), row, 0)
            form.addWidget(field, row, 1)
        rows = [
            (self.start_button, self.previous_button, self.next_button),
            (self.accept_button, self.reject_button, self.undo_button),
            (self.correct_button, self.save_button, self.add_button),
        ]
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.suspicion)
        for row_buttons in rows:
            line = QHBoxLayout()
            for button in row_buttons:
                line.addWidget(button)
            layout.addLayout(line)
        layout.addWidget(QLabel(KEYS_HELP))
        layout.addWidget(self.progress)
        layout.addWidget(self.current)
        layout.addWidget(self.table, stretch=1)

    def _button(self, text: str, slot: Any) -> QPushButton:
        button = QPushButton(text)
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys keep going to the canvas
        button.clicked.connect(lambda *_: slot())
        return button

    # -- the model's state, as the suspicion walk and the tests read it ------------------------
    @property
    def view(self) -> SeriesView | None:
        """The series under review (what Mask QA handed over)."""
        return self.model.view

    @property
    def folder(self) -> LunaFolder | None:
        """Its data folder."""
        return self.model.folder

    @property
    def book(self) -> ReviewBook | None:
        """The folder's reviews."""
        return self.model.book

    @property
    def items(self) -> list[ReviewItem]:
        """The rows of the review table."""
        return self.model.items

    @property
    def index(self) -> int:
        """The current row."""
        return self.model.index

    @index.setter
    def index(self, value: int) -> None:
        self.model.index = value

    # -- series ------------------------------------------------------------------------------
    def set_series(self, view: SeriesView | None) -> None:
        """Show the review of ``view``'s series (None: no series)."""
        same, problems = self.model.set_series(view)
        if problems:
            show_warning(f"{len(problems)} review row(s) not applied; first: {problems[0]}")
        self.suspicion.set_folder(self.model.folder)
        if view is None or self.model.book is None:
            self._show()
            return
        self.model.take_requests(self.inbox.take(view.ct.series_uid))
        self._recompute()
        if not same:
            self.model.place()
            if self.active:
                self.go_to(self.index)

    def _recompute(self) -> None:
        """Apply the reviews (core) and rebuild the table, layers and progress."""
        self.model.recompute()
        self._show_reviewed_layer()
        self._show()

    def _item_at(self, center_xyz_mm: Sequence[float]) -> ReviewItem | None:
        return self.model.item_at(center_xyz_mm)

    def _index_of(self, center_xyz_mm: Sequence[float]) -> int:
        return self.model.index_of(center_xyz_mm)

    # -- review mode and navigation -----------------------------------------------------------
    def toggle(self) -> None:
        """Start or stop review mode (binds / unbinds the keys); in suspicion order, start at
        the most suspicious nodule without a verdict."""
        self.set_active(not self.active)
        start_suspicion_walk(self)

    def set_active(self, active: bool) -> None:
        """Review mode on: keys bound, the view on the current nodule; off: keys unbound."""
        self.active = active
        self.start_button.setChecked(active)
        self.start_button.setText("Stop review" if active else "Start review")
        for key, name in KEYS.items():
            if active:
                self.viewer.bind_key(key, self._key_handler(name), overwrite=True)
            else:
                self.viewer.bind_key(key, None)
        if active:
            show_task(self.viewer, REVIEW)
        if active and self.items:
            self.go_to(self.index)
        self._update_buttons()

    def _key_handler(self, name: str) -> Any:
        def handler(_viewer: Any) -> None:
            getattr(self, name)()

        return handler

    def go_to(self, index: int) -> None:
        """Make item ``index`` current: jump and zoom to it, outline its box."""
        view = self.view
        if not self.items or view is None:
            return
        item = self.items[self.model.clamp(index)]
        diameter = item.nodule.diameter_mm or ADD_DIAMETER_MM
        zoom_to_nodule(self.viewer, item.nodule.center_xyz_mm, diameter)
        self.host.follow_nodule(item.nodule.center_xyz_mm)  # Mask QA's table moves on too
        record = item.reviewed.record if item.reviewed is not None else None
        rects = box_rectangles(record.box_lo_irc, record.box_hi_irc) if record is not None else []
        set_box_shapes(
            self.viewer,
            view.ct,
            ROLE_REVIEW_BOX,
            f"{short_name(view.ct.series_uid)} current box",
            rects,
            CURRENT_BOX_COLOR,
        )
        if item.proposal:
            self.diameter.setValue(diameter)
        self._select_ct_layer()
        if self.table.currentRow() != self.index:
            self.table.blockSignals(True)
            self.table.selectRow(self.index)
            self.table.blockSignals(False)
        self._show_current()

    def _select_ct_layer(self) -> None:
        """Make the CT the active layer (unless a correction or an addition is under way), so
        that review keys are not taken by another layer's keys (a points layer's A)."""
        if self.view is None or self.view.ct_layer not in self.viewer.layers:
            return
        role = layer_info(self.viewer.layers.selection.active).get("role")
        if role not in (ROLE_REVIEW_EDIT, ROLE_REVIEW_ADD):
            self.viewer.layers.selection.active = self.view.ct_layer

    def next(self) -> None:
        """The next nodule; after the last one, the first of the next series with nodules.
        In suspicion order: the next most suspicious nodule, in whichever series."""
        if self.suspicion.walking:
            walk_suspicion(self, +1)
        elif self.index + 1 < len(self.items):
            self.go_to(self.index + 1)
        else:
            self._open_neighbour(+1)

    def previous(self) -> None:
        """The previous nodule; before the first one, the last of the previous series."""
        if self.suspicion.walking:
            walk_suspicion(self, -1)
        elif self.index > 0:
            self.go_to(self.index - 1)
        else:
            self._open_neighbour(-1)

    def _open_neighbour(self, step: int) -> bool:
        """Open the next (``step`` 1) or previous (-1) series with nodules; False if none."""
        if self.folder is None or self.book is None or self.view is None:
            return False
        target = self.model.neighbour(step)
        if target is None:
            show_info(
                "This was the last series with nodules."
                if step > 0
                else "This was the first series."
            )
            return False
        return self._open_series(target, "first" if step > 0 else "last")

    def _open_series(self, target: str, position: Position) -> bool:
        """Open series ``target`` of the folder at ``position`` ("first", "last" or a nodule's
        center, world mm) in place of the current one; False (and a message) if it fails."""
        if self.folder is None or self.view is None:
            return False
        uid = self.view.ct.series_uid
        self.model.pending_position = position
        old = [ly for ly in self.viewer.layers if layer_info(ly).get("series_uid") == uid]
        try:
            layers = self.viewer.open(str(self.folder.series_path(target)), plugin=PLUGIN)
        except (LunaSegError, OSError) as exc:
            self.model.pending_position = None
            show_error(str(exc))
            return False
        ct_layer = next((ly for ly in layers if isinstance(ly, Image)), None)
        for layer in old:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        if ct_layer is not None:
            self.host.select_ct_layer(ct_layer)
        return True

    def _on_order_changed(self) -> None:
        if self.view is not None:
            self._recompute()
            start_suspicion_walk(self)

    # -- verdicts ----------------------------------------------------------------------------
    def _attempt(self, action: Any) -> Any:
        """Run a model action; a :class:`LunaSegError` becomes a message (returns None)."""
        try:
            return action()
        except ReviewError as exc:
            show_error(str(exc))
            if not self.reviewer.text().strip():
                self.reviewer.setFocus()
        except LunaSegError as exc:
            show_error(str(exc))
        return None

    def _moved_on(self, entry: UndoEntry, advance: bool) -> None:
        """After a write: show it, then go to the next nodule (``advance``) or stay."""
        self.note.clear()
        self._show_reviewed_layer()
        self._show()
        target = self._index_of(entry.row.center_xyz_mm)
        if advance and self.suspicion.walking:
            self.index = target
            walk_suspicion(self, +1)
        elif advance and target + 1 < len(self.items):
            self.go_to(target + 1)
        elif not (advance and self._open_neighbour(+1)):
            self.go_to(target)  # the last nodule of the last series stays in view

    def accept(self) -> None:
        """Accept the current nodule (a proposed spot is added as a nodule); go to the next,
        except for an item another widget sent to review (a side trip: the view stays)."""
        item = self.model.current
        entry = self._attempt(
            lambda: self.model.accept(self.reviewer.text(), self.note.text(), self.diameter.value())
        )
        if entry is not None:
            self._moved_on(entry, advance=item is not None and item.request is None)

    def reject(self) -> None:
        """Reject the current nodule (not a nodule / bad annotation); go to the next. A proposed
        spot is dismissed (nothing is recorded for it)."""
        item = self.model.current
        dismissing = item is not None and item.proposal and item.request is not None
        entry = self._attempt(lambda: self.model.reject(self.reviewer.text(), self.note.text()))
        if entry is not None:
            self._moved_on(entry, advance=item is not None and item.request is None)
        elif dismissing and item not in self.items:
            self._show_reviewed_layer()
            self._show()
            self.go_to(self.index)

    def undo(self) -> None:
        """Take back this session's last verdict (the file keeps both rows)."""
        if not self.model.undo_stack or self.book is None:
            show_info("Nothing to undo in this session.")
            return
        entry = self._attempt(self.model.undo)
        if entry is None:
            return
        self._show_reviewed_layer()
        self._show()
        if self.view is not None and entry.row.series_uid != self.view.ct.series_uid:
            show_info(f"Undone: the {entry.row.status} verdict in series {entry.row.series_uid}.")
            return
        self.go_to(self._index_of(entry.row.center_xyz_mm))

    # -- correction --------------------------------------------------------------------------
    def start_correction(self) -> None:
        """Open the current nodule's voxels on a labels layer to paint or erase, then Save."""
        item = self._attempt(lambda: self.model.ready(self.reviewer.text()))
        if item is None or self.view is None:
            return
        if item.proposal:
            show_info(NOT_YET_A_NODULE)
            return
        open_correction_layer(
            self.viewer, self.view.ct, self.model.correction_voxels(item), self.index + 1
        )
        self._edit_item = item
        self.go_to(self.index)
        self._update_buttons()

    @property
    def edit_layer(self) -> Any:
        """The labels layer of the correction in progress (None when there is none)."""
        if self.view is None:
            return None
        return find_layer(self.viewer, ROLE_REVIEW_EDIT, self.view.ct.series_uid)

    def save_correction(self) -> None:
        """Save the painted voxels as the nodule's correction (label volume + a row)."""
        layer, item = self.edit_layer, self._edit_item
        if layer is None or item is None or self.view is None or self.book is None:
            show_info("Press Correct… first, paint the nodule's voxels, then Save.")
            return
        entry = self._attempt(
            lambda: self.model.save_correction(
                item, np.asarray(layer.data), self.reviewer.text(), self.note.text()
            )
        )
        if entry is None:
            return
        self._close_edit_layer()
        self._moved_on(entry, advance=False)

    def _close_edit_layer(self) -> None:
        layer = self.edit_layer
        self._edit_item = None
        if layer is not None:
            self.viewer.layers.remove(layer)
        if self.view is not None and self.view.ct_layer in self.viewer.layers:
            self.viewer.layers.selection.active = self.view.ct_layer
        self._update_buttons()

    # -- addition ----------------------------------------------------------------------------
    def start_add(self) -> None:
        """Click a spot that is a nodule: it is added with the diameter set beside Add."""
        if self._attempt(lambda: self.model.check_writable(self.reviewer.text())) is None:
            return
        if self.view is None:
            return
        open_add_layer(self.viewer, self.view.ct, self._on_add_click)

    def _on_add_click(self, event: Any) -> None:
        if str(getattr(event, "action", "added")) != "added":
            return
        QTimer.singleShot(0, self._add_clicked)  # not inside the layer's own event

    def _add_clicked(self) -> None:
        if self.view is None or self.book is None:
            return
        layer = find_layer(self.viewer, ROLE_REVIEW_ADD, self.view.ct.series_uid)
        if layer is None or not len(layer.data):
            return
        center_xyz = tuple(float(v) for v in self.view.ct.geometry.irc_to_xyz(layer.data[-1]))
        self.viewer.layers.remove(layer)
        if self.view.ct_layer in self.viewer.layers:
            self.viewer.layers.selection.active = self.view.ct_layer
        entry = self._attempt(
            lambda: self.model.add(
                center_xyz, self.diameter.value(), self.reviewer.text(), self.note.text()
            )
        )
        if entry is not None:
            self._moved_on(entry, advance=False)

    # -- requests ----------------------------------------------------------------------------
    def _on_requests(self) -> None:
        if self.view is None:
            return
        mine = self.inbox.take(self.view.ct.series_uid)
        if not mine:
            waiting = {r.series_uid for r in self.inbox.pending}
            show_info(f"Review requests wait for series {', '.join(sorted(waiting))}: open it.")
            return
        self.model.take_requests(mine)
        self._recompute()
        if not self.active:
            self.set_active(True)
        self.go_to(self._index_of(mine[0].center_xyz_mm))

    # -- display -----------------------------------------------------------------------------
    def _show_reviewed_layer(self) -> None:
        if self.view is not None and self.model.reviewed is not None:
            show_reviewed_layer(self.viewer, self.view.ct, self.model.reviewed.mask)

    def table_rows(self) -> list[list[Any]]:
        """The review table as rows of values."""
        return self.model.table_rows()

    def _show(self) -> None:
        fill_table(self.table, self.table_rows())
        self.progress.setText(self.model.progress_line())
        self._show_current()
        self._update_buttons()

    def _show_current(self) -> None:
        line = self.model.current_line()
        if line:
            self.current.setText(line)

    def _update_buttons(self) -> None:
        can = self.book is not None and bool(self.items)
        for button in (
            self.accept_button,
            self.reject_button,
            self.correct_button,
            self.previous_button,
            self.next_button,
        ):
            button.setEnabled(can)
        self.add_button.setEnabled(self.book is not None)
        self.start_button.setEnabled(self.book is not None)
        self.save_button.setEnabled(self._edit_item is not None)
        self.undo_button.setEnabled(bool(self.model.undo_stack))

    def _on_row_selected(self) -> None:
        row = self.table.currentRow()
        if 0 <= row < len(self.items) and row != self.index:
            self.go_to(row)

    def _detach(self) -> None:
        self.inbox.listening -= 1
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            self.inbox.received.disconnect(self._on_requests)
        if self.active:
            for key in KEYS:
                self.viewer.bind_key(key, None)
