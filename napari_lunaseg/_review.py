"""Review mode of Mask QA: a verdict on every nodule, corrections, additions, keys, undo.

The panel walks through the nodules of the open series, then on to the next series of its data
folder. For each it jumps and zooms to the nodule and outlines its box; the generated mask,
the true shapes (synthetic data) and a model's prediction stay visible as Mask QA and Inference
show them. Verdicts (keys A accept, R reject, N next, Shift+N previous, U undo; buttons for all
of them and for Correct / Add) are written at once to ``DATA/reviews/`` by the core
(:mod:`src_train.reviews`), which also says what the reviewed ground truth is, how far the
review got and what each verdict did to the Dice against the true shapes. The panel keeps no
rule of its own.

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
    ROLE_REVIEWED,
    hex_color,
    labels_layer_data,
    layer_info,
    lunaseg_meta,
    rgba,
    short_name,
    single_label_colormap,
)
from napari_lunaseg._review_inbox import inbox_for
from napari_lunaseg._review_inbox import send_to_review as send_to_review  # the Inference widget's
from napari_lunaseg._review_order import (
    SuspicionControls,
    start_suspicion_walk,
    walk_suspicion,
)
from napari_lunaseg._review_table import (
    HEADER_TIPS,
    TABLE_HEADERS,
    ReviewItem,
    suspicion_text,
    table_rows,
)
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
    upsert_layer,
    zoom_to_nodule,
)
from src_train.colors import CURRENT_BOX_RGB, REVIEW_EDIT_RGB, REVIEWED_RGB
from src_train.errors import LunaSegError
from src_train.evaluate.review_requests import REQUEST_ADD, ReviewRequest
from src_train.luna import LunaFolder, Nodule
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

#: Colours: the reviewed ground truth (outline), the voxels being corrected, the current box.
REVIEWED_RGBA = rgba(REVIEWED_RGB)
EDIT_RGBA = rgba(REVIEW_EDIT_RGB)
CURRENT_BOX_COLOR = hex_color(CURRENT_BOX_RGB)
#: Outline width (voxels) of the reviewed ground truth.
REVIEWED_CONTOUR_VOXELS = 1
#: Brush of a correction, voxels.
BRUSH_SIZE_VOXELS = 3
#: Diameter offered for an addition, and its range, mm.
ADD_DIAMETER_MM = 6.0
ADD_DIAMETER_RANGE_MM = (1.0, 60.0)
#: Keys of review mode (napari key names) -> panel method.
KEYS = {"A": "accept", "R": "reject", "N": "next", "Shift-N": "previous", "U": "undo"}
KEYS_HELP = "keys: A accept · R reject · N next · Shift+N previous · U undo"
NO_FOLDER = (
    "Review needs a series of a data folder (File > Open subset*/<uid>.mhd of a LUNA16 or "
    "'lunaseg synth' folder): verdicts are saved in DATA/reviews/."
)


class ReviewPanel(QWidget):
    """Review the nodules of the series Mask QA shows (see the module docstring).

    ``host`` is the Mask QA widget: it calls :meth:`set_series` when its series or masks change
    and offers ``select_ct_layer(layer)`` to move to another series.
    """

    def __init__(self, viewer: Any, host: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.host = host
        self.view: SeriesView | None = None
        self.folder: LunaFolder | None = None
        self.book: ReviewBook | None = None
        self.reviewed: ReviewedSeries | None = None
        self.items: list[ReviewItem] = []
        self.index = 0
        self.active = False
        self.undo_stack: list[UndoEntry] = []
        self.requests: list[ReviewRequest] = []
        self._pending_position: str | tuple[float, float, float] | None = None
        self._edit_item: ReviewItem | None = None

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
        self.suspicion = SuspicionControls(self._on_order_changed)

        form = QGridLayout()
        form.addWidget(QLabel("reviewer"), 0, 0)
        form.addWidget(self.reviewer, 0, 1)
        form.addWidget(QLabel("note"), 1, 0)
        form.addWidget(self.note, 1, 1)
        form.addWidget(QLabel("add diameter"), 2, 0)
        form.addWidget(self.diameter, 2, 1)
        rows = [
            (self.start_button, self.previous_button, self.next_button),
            (self.accept_button, self.reject_button, self.undo_button),
            (self.correct_button, self.save_button, self.add_button),
        ]
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.suspicion)
        for row in rows:
            line = QHBoxLayout()
            for button in row:
                line.addWidget(button)
            layout.addLayout(line)
        layout.addWidget(QLabel(KEYS_HELP))
        layout.addWidget(self.progress)
        layout.addWidget(self.current)
        layout.addWidget(self.table, stretch=1)

        self.reviewer.editingFinished.connect(lambda: remember_reviewer(self.reviewer.text()))
        self.note.returnPressed.connect(self.note.clearFocus)
        self.inbox = inbox_for(viewer)
        self.inbox.listening += 1
        self.inbox.received.connect(self._on_requests)
        self.destroyed.connect(lambda *_: self._detach())
        self._update_buttons()

    def _button(self, text: str, slot: Any) -> QPushButton:
        button = QPushButton(text)
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys keep going to the canvas
        button.clicked.connect(lambda *_: slot())
        return button

    # -- series ------------------------------------------------------------------------------
    def set_series(self, view: SeriesView | None) -> None:
        """Show the review of ``view``'s series (None: no series)."""
        same = (
            view is not None
            and self.view is not None
            and view.ct.series_uid == self.view.ct.series_uid
        )
        self.view = view
        if view is None or view.luna_root is None:
            self.folder = self.book = self.reviewed = None
            self.items = []
            self.suspicion.set_folder(None)
            self._show()
            return
        if self.folder is None or self.folder.root != view.luna_root:
            self.folder = LunaFolder(view.luna_root, lenient=True)  # as the reader
            self.book = ReviewBook.for_folder(self.folder)
            if self.book.problems:
                show_warning(
                    f"{len(self.book.problems)} review row(s) not applied; first: "
                    f"{self.book.problems[0]}"
                )
        elif not same and self.book is not None:
            self.book.reload()  # another window may have written since
        self.suspicion.set_folder(self.folder)
        self.requests += self.inbox.take(view.ct.series_uid)
        self._recompute()
        if not same:
            position, self._pending_position = self._pending_position, None
            if position == "last":
                self.index = max(len(self.items) - 1, 0)
            elif isinstance(position, tuple):
                self.index = self._index_of(position)
            else:
                self.index = self._first_unreviewed()
            if self.active:
                self.go_to(self.index)

    def _recompute(self) -> None:
        """Apply the reviews (core) and rebuild items, layers, table and progress."""
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
        for request in self.requests:
            if request.series_uid != view.ct.series_uid:
                continue  # waits until its series is shown again
            matched = self._item_at(request.center_xyz_mm)
            if matched is not None:
                matched.request = request
            elif request.kind == REQUEST_ADD:
                nodule = Nodule(view.ct.series_uid, request.center_xyz_mm, request.diameter_mm)
                self.items.append(ReviewItem(nodule, request=request))
        for item in self.items:
            item.suspicion = self.suspicion.entry(view.ct.series_uid, item.nodule.center_xyz_mm)
        self.index = min(self.index, max(len(self.items) - 1, 0))
        self._show_reviewed_layer()
        self._show()

    def _item_at(self, center_xyz_mm: Sequence[float]) -> ReviewItem | None:
        k = same_nodule_index([i.nodule.center_xyz_mm for i in self.items], center_xyz_mm)
        return None if k is None else self.items[k]

    def _first_unreviewed(self) -> int:
        for k, item in enumerate(self.items):
            if item.proposal or not item.reviewed or not item.reviewed.status:
                return k
        return 0

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
        if not self.items or self.view is None:
            return
        self.index = int(np.clip(index, 0, len(self.items) - 1))
        item = self.items[self.index]
        diameter = item.nodule.diameter_mm or ADD_DIAMETER_MM
        zoom_to_nodule(self.viewer, item.nodule.center_xyz_mm, diameter)
        self.host.follow_nodule(item.nodule.center_xyz_mm)  # Mask QA's table moves on too
        record = item.reviewed.record if item.reviewed is not None else None
        rects = box_rectangles(record.box_lo_irc, record.box_hi_irc) if record is not None else []
        set_box_shapes(
            self.viewer,
            self.view.ct,
            ROLE_REVIEW_BOX,
            f"{short_name(self.view.ct.series_uid)} current box",
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
            self._walk(+1)
        elif self.index + 1 < len(self.items):
            self.go_to(self.index + 1)
        else:
            self._open_neighbour(+1)

    def previous(self) -> None:
        """The previous nodule; before the first one, the last of the previous series."""
        if self.suspicion.walking:
            self._walk(-1)
        elif self.index > 0:
            self.go_to(self.index - 1)
        else:
            self._open_neighbour(-1)

    def _open_neighbour(self, step: int) -> bool:
        """Open the next (``step`` 1) or previous (-1) series with nodules; False if none."""
        if self.folder is None or self.book is None or self.view is None:
            return False
        progress = review_progress(self.book, self.folder.nodules_by_series)
        with_nodules = [s.series_uid for s in progress.series if s.nodules]
        uid = self.view.ct.series_uid
        later = [u for u in with_nodules if (u > uid if step > 0 else u < uid)]
        if not later:
            show_info(
                "This was the last series with nodules."
                if step > 0
                else "This was the first series."
            )
            return False
        target = later[0] if step > 0 else later[-1]
        return self._open_series(target, "first" if step > 0 else "last")

    def _open_series(self, target: str, position: str | tuple[float, float, float]) -> bool:
        """Open series ``target`` of the folder at ``position`` ("first", "last" or a nodule's
        center, world mm) in place of the current one; False (and a message) if it fails."""
        if self.folder is None or self.view is None:
            return False
        uid = self.view.ct.series_uid
        self._pending_position = position
        old = [ly for ly in self.viewer.layers if layer_info(ly).get("series_uid") == uid]
        try:
            layers = self.viewer.open(str(self.folder.series_path(target)), plugin=PLUGIN)
        except (LunaSegError, OSError) as exc:
            self._pending_position = None
            show_error(str(exc))
            return False
        ct_layer = next((ly for ly in layers if isinstance(ly, Image)), None)
        for layer in old:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        if ct_layer is not None:
            self.host.select_ct_layer(ct_layer)
        return True

    def _walk(self, step: int) -> None:
        walk_suspicion(self, step)

    def _on_order_changed(self) -> None:
        if self.view is not None:
            self._recompute()
            start_suspicion_walk(self)

    # -- verdicts ----------------------------------------------------------------------------
    def _can_write(self) -> bool:
        """True when verdicts can be saved (a data folder, a reviewer's name); else says why."""
        if self.view is None or self.book is None:
            show_error(NO_FOLDER)
            return False
        if not self.reviewer.text().strip():
            show_error("Type your name in 'reviewer' first: every verdict records who gave it.")
            self.reviewer.setFocus()
            return False
        return True

    def _ready(self) -> ReviewItem | None:
        """The current item when a verdict can be recorded on it (else a message, None)."""
        if not self._can_write():
            return None
        if not self.items:
            show_error("This series has no nodule to review; Add… one or go to the next series.")
            return None
        return self.items[self.index]

    def _after(self, entry: UndoEntry, read: Any, advance: bool) -> None:
        """After a verdict: keep it for undo, show the file as written, move on."""
        if self.book is None or self.view is None:
            return
        self.undo_stack.append(entry)
        self.book.set_rows(read)
        self.note.clear()
        done = self._item_at(entry.row.center_xyz_mm)
        if done is not None and done.request is not None:
            self.requests.remove(done.request)
        self._recompute()
        target = self._index_of(entry.row.center_xyz_mm)
        if advance and self.suspicion.walking:
            self.index = target
            self._walk(+1)
        elif advance and target + 1 < len(self.items):
            self.go_to(target + 1)
        elif not (advance and self._open_neighbour(+1)):
            self.go_to(target)  # the last nodule of the last series stays in view

    def _index_of(self, center_xyz_mm: Sequence[float]) -> int:
        item = self._item_at(center_xyz_mm)
        return self.items.index(item) if item is not None else self.index

    def _record(self, status: str) -> None:
        """Record a verdict on the current item and go on to the next one, except for an item
        another widget sent to review (a side trip: the view stays on it)."""
        item = self._ready()
        if item is None or self.view is None or self.book is None:
            return
        try:
            entry, read = record_verdict(
                self.book.dir,
                self.view.ct.series_uid,
                item.nodule.center_xyz_mm,
                self.diameter.value() if item.proposal else item.nodule.diameter_mm,
                status,
                self.reviewer.text(),
                self.note.text(),
            )
        except LunaSegError as exc:
            show_error(str(exc))
            return
        self._after(entry, read, advance=item.request is None)

    def accept(self) -> None:
        """Accept the current nodule (a proposed spot is added as a nodule); go to the next."""
        item = self._ready()
        if item is not None:
            self._record(ADDED if item.proposal else ACCEPTED)

    def reject(self) -> None:
        """Reject the current nodule (not a nodule / bad annotation); go to the next. A proposed
        spot is dismissed (nothing is recorded for it)."""
        item = self._ready()
        if item is None:
            return
        if item.proposal and item.request is not None:
            self.requests.remove(item.request)
            self._recompute()
            self.go_to(self.index)
            return
        self._record(REJECTED)

    def undo(self) -> None:
        """Take back this session's last verdict (the file keeps both rows)."""
        if not self.undo_stack or self.book is None:
            show_info("Nothing to undo in this session.")
            return
        entry = self.undo_stack.pop()
        try:
            read = undo(self.book.dir, entry)
        except LunaSegError as exc:
            show_error(str(exc))
            return
        self.book.set_rows(read)
        self._recompute()
        if self.view is not None and entry.row.series_uid != self.view.ct.series_uid:
            show_info(f"Undone: the {entry.row.status} verdict in series {entry.row.series_uid}.")
            return
        self.go_to(self._index_of(entry.row.center_xyz_mm))

    # -- correction --------------------------------------------------------------------------
    def start_correction(self) -> None:
        """Open the current nodule's voxels on a labels layer to paint or erase, then Save."""
        item = self._ready()
        if item is None or self.view is None:
            return
        if item.proposal:
            show_info("A proposed spot is no nodule yet: add it first (A), then correct it.")
            return
        ct = self.view.ct
        voxels = np.zeros(ct.shape_irc, dtype=np.uint8)
        record = item.reviewed.record if item.reviewed is not None else None
        if record is None and item.reviewed is not None and not item.reviewed.added:
            index = (
                self.view.annotations.index(item.nodule)
                if item.nodule in self.view.annotations
                else -1
            )
            record = self.view.generated[index] if index >= 0 else None
        if record is not None and not record.skipped:
            voxels[record.box_slices] = record.local_mask
        number = self.index + 1
        layer = upsert_layer(
            self.viewer,
            labels_layer_data(
                voxels,
                ct,
                role=ROLE_REVIEW_EDIT,
                name=f"{short_name(ct.series_uid)} nodule {number} correction",
                colormap=single_label_colormap(EDIT_RGBA),
                opacity=0.7,
            ),
        )
        layer.selected_label = 1
        layer.brush_size = BRUSH_SIZE_VOXELS
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
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
        if not self._can_write():
            return
        try:
            entry, read = record_correction(
                self.book.dir,
                self.view.ct.geometry,
                self.view.ct.series_uid,
                item.nodule.center_xyz_mm,
                item.nodule.diameter_mm,
                np.asarray(layer.data) != 0,
                self.reviewer.text(),
                self.note.text(),
            )
        except LunaSegError as exc:
            show_error(str(exc))
            return
        self._close_edit_layer()
        self._after(entry, read, advance=False)

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
        if not self._can_write() or self.view is None:
            return
        ct = self.view.ct
        old = find_layer(self.viewer, ROLE_REVIEW_ADD, ct.series_uid)
        if old is not None:
            self.viewer.layers.remove(old)
        layer = self.viewer.add_points(
            ndim=3,
            name="click a nodule to add it",
            affine=ct.geometry.affine_irc_to_zyx(),
            metadata=lunaseg_meta(ROLE_REVIEW_ADD, ct.geometry, ct.series_uid),
            face_color="transparent",
            border_color=CURRENT_BOX_COLOR,
        )
        layer.mode = "add"
        layer.events.data.connect(self._on_add_click)
        self.viewer.layers.selection.active = layer

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
        try:
            entry, read = record_verdict(
                self.book.dir,
                self.view.ct.series_uid,
                center_xyz,
                self.diameter.value(),
                ADDED,
                self.reviewer.text(),
                self.note.text(),
            )
        except LunaSegError as exc:
            show_error(str(exc))
            return
        self._after(entry, read, advance=False)

    # -- requests ----------------------------------------------------------------------------
    def _on_requests(self) -> None:
        if self.view is None:
            return
        mine = self.inbox.take(self.view.ct.series_uid)
        if not mine:
            waiting = {r.series_uid for r in self.inbox.pending}
            show_info(f"Review requests wait for series {', '.join(sorted(waiting))}: open it.")
            return
        self.requests += mine
        self._recompute()
        if not self.active:
            self.set_active(True)
        self.go_to(self._index_of(mine[0].center_xyz_mm))

    # -- display -----------------------------------------------------------------------------
    def _show_reviewed_layer(self) -> None:
        if self.view is None or self.reviewed is None:
            return
        ct = self.view.ct
        shown = find_layer(self.viewer, ROLE_REVIEWED, ct.series_uid)
        if shown is not None and np.array_equal(shown.data, self.reviewed.mask):
            return  # e.g. an accepted nodule: the ground truth did not change
        layer = upsert_layer(
            self.viewer,
            labels_layer_data(
                self.reviewed.mask.view(np.uint8),
                ct,
                role=ROLE_REVIEWED,
                name=f"{short_name(ct.series_uid)} reviewed",
                colormap=single_label_colormap(REVIEWED_RGBA),
                opacity=0.9,
            ),
        )
        layer.contour = REVIEWED_CONTOUR_VOXELS

    def table_rows(self) -> list[list[Any]]:
        """The review table as rows of values."""
        return table_rows(self.items)

    def _show(self) -> None:
        fill_table(self.table, self.table_rows())
        if self.book is not None and self.folder is not None:
            self.progress.setText(review_progress(self.book, self.folder.nodules_by_series).line())
        else:
            self.progress.setText("")
        self._show_current()
        self._update_buttons()

    def _show_current(self) -> None:
        if self.view is not None and self.book is None:
            self.current.setText(NO_FOLDER)
            return
        if self.view is None or not self.items:
            if self.view is not None:
                self.current.setText(f"{short_name(self.view.ct.series_uid)}: no nodule to review.")
            return
        item = self.items[self.index]
        uid = self.view.ct.series_uid
        uids = self.folder.series_uids if self.folder is not None else [uid]
        where = f"series {uids.index(uid) + 1}/{len(uids)}" if uid in uids else short_name(uid)
        size = f"{item.nodule.diameter_mm:.1f} mm" if item.nodule.diameter_mm else "no diameter"
        status = self.table_rows()[self.index][2]
        reason = f" — {item.request.reason}" if item.request is not None else ""
        suspicion = suspicion_text(item.suspicion)
        suspicion = f" · suspicion {suspicion}" if suspicion else ""
        self.current.setText(
            f"{where} · nodule {self.index + 1}/{len(self.items)} · {size} · {status}{reason}"
            f"{suspicion}"
        )

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
        self.undo_button.setEnabled(bool(self.undo_stack))

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
