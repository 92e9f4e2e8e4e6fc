"""Mask QA widget: see, tune and export the masks grown from point annotations, and review them.

The generated mask layer shares its memory with :class:`src_train.masks.MaskState` (a uint8 view
of the state's bool volume), so a threshold change touches only the nodules' boxes in
``MaskState.set_threshold`` and the layer only needs a refresh. The table, boxes and per-method
Dice follow a moment later (debounced) so dragging the slider stays smooth. Below the table,
tabs hold the growth replay and the review panel (:mod:`napari_lunaseg._review`), which gets the
series and its current masks through :meth:`MaskQAWidget.series_view`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, Slider
from napari.layers import Image
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QLabel, QTabWidget, QVBoxLayout, QWidget

from napari_lunaseg._growth_replay import GrowthReplay
from napari_lunaseg._layers import (
    ROLE_BOXES,
    ROLE_CT,
    ROLE_MASK,
    ROLE_TRUTH,
    ct_from_layer,
    hex_color,
    layer_info,
    mask_layer_data,
    short_name,
)
from napari_lunaseg._mask_qa_model import TABLE_HEADERS_FIRST, TABLE_HEADERS_LAST, MaskQAModel
from napari_lunaseg._review import ReviewPanel
from napari_lunaseg._screen import MASK_QA, screen_for, show_task
from napari_lunaseg._series_view import SeriesView
from napari_lunaseg._viewer_utils import (
    box_rectangles,
    ct_layers,
    fill_table,
    find_layer,
    make_table,
    refresh_labels_boxes,
    set_box_shapes,
    upsert_layer,
    zoom_to_nodule,
)
from src_train.colors import ANNOTATION_RGB
from src_train.ct import CtVolume
from src_train.errors import LunaSegError
from src_train.masks import (
    DEFAULT_THRESHOLD_HU,
    REFERENCE_METHOD,
    MaskState,
    SeriesTruth,
    available_methods,
)

log = logging.getLogger(__name__)

#: Threshold slider range, HU.
THRESHOLD_RANGE_HU = (-1000, 400)
#: Delay before the table, boxes and Dice follow a threshold change, ms.
DETAIL_DELAY_MS = 150
#: Dock width that shows the table's Dice columns without scrolling, px.
MIN_WIDTH_PX = 430
#: Outline width (screen pixels) of the true shapes, so the mask shows through.
TRUTH_CONTOUR_PX = 1
BOX_COLOR = hex_color(ANNOTATION_RGB)


class MaskQAWidget(QWidget):
    """Threshold, method, nodule table, box growth replay and export for one CT layer."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model = MaskQAModel(REFERENCE_METHOD, DEFAULT_THRESHOLD_HU)
        self._layer: Image | None = None
        self.last_update_ms: float | None = None

        self.ct_choice = ComboBox(label="CT layer", choices=self._ct_choices)
        self.method = ComboBox(label="method", choices=available_methods(), value=REFERENCE_METHOD)
        self.threshold = Slider(
            label="threshold (HU)",
            min=THRESHOLD_RANGE_HU[0],
            max=THRESHOLD_RANGE_HU[1],
            value=DEFAULT_THRESHOLD_HU,
            tracking=True,
        )
        self.save_mask_button = PushButton(text="Save mask…")
        self.save_table_button = PushButton(text="Save table (CSV)…")
        controls = Container(widgets=[self.ct_choice, self.method, self.threshold], labels=True)
        buttons = Container(
            widgets=[self.save_mask_button, self.save_table_button], layout="horizontal"
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = make_table(TABLE_HEADERS_FIRST + TABLE_HEADERS_LAST)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.replay = GrowthReplay(self.viewer)
        self.review = ReviewPanel(self.viewer, self)
        self.tools = QTabWidget()
        self.tools.addTab(self.replay, "Growth replay")
        self.tools.addTab(self.review, "Review")

        self.setMinimumWidth(MIN_WIDTH_PX)
        layout = QVBoxLayout(self)
        layout.addWidget(controls.native)
        layout.addWidget(self.status)
        layout.addWidget(self.table, stretch=1)
        layout.addWidget(self.tools)
        layout.addWidget(buttons.native)

        self._detail_timer = QTimer(self)
        self._detail_timer.setSingleShot(True)
        self._detail_timer.setInterval(DETAIL_DELAY_MS)
        self._detail_timer.timeout.connect(self.update_details)

        self.ct_choice.changed.connect(self._on_ct_changed)
        self.threshold.changed.connect(self.set_threshold)
        self.method.changed.connect(self.set_method)
        self.save_mask_button.changed.connect(self._save_mask_dialog)
        self.save_table_button.changed.connect(self._save_table_dialog)
        # A reader adds a series' layers one by one (CT, true shapes, mask, points): react once
        # they are all in, so the reader's mask layer is reused and the true shapes are found.
        self._choices_timer = QTimer(self)
        self._choices_timer.setSingleShot(True)
        self._choices_timer.setInterval(0)
        self._choices_timer.timeout.connect(self._reset_choices)
        self.viewer.layers.events.inserted.connect(self._schedule_reset_choices)
        self.viewer.layers.events.removed.connect(self._schedule_reset_choices)
        screen_for(self.viewer)  # the legend, the 3-D view
        self._reset_choices()

    @property
    def state(self) -> MaskState | None:
        """The masks of the current series (None without annotated nodules)."""
        return self.model.state

    @property
    def ct(self) -> CtVolume | None:
        """The current series."""
        return self.model.ct

    @property
    def truth(self) -> SeriesTruth | None:
        """The true shapes of the current series, paired with its nodules (synthetic data)."""
        return self.model.truth

    # -- layer bookkeeping -------------------------------------------------------------------
    def _ct_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in ct_layers(self.viewer)]

    def _schedule_reset_choices(self, _event: Any = None) -> None:
        self._choices_timer.start()

    def _reset_choices(self, _event: Any = None) -> None:
        self.ct_choice.reset_choices()
        if self.ct_choice.value is not self._layer:
            self._on_ct_changed(self.ct_choice.value)

    @property
    def mask_layer(self) -> Any:
        """The generated-mask labels layer of the current series (None before a series)."""
        return None if self.ct is None else find_layer(self.viewer, ROLE_MASK, self.ct.series_uid)

    def select_ct_layer(self, layer: Image) -> None:
        """Show ``layer``'s series (the review panel moves on to the next series this way)."""
        self.ct_choice.reset_choices()
        self.ct_choice.value = layer
        self._on_ct_changed(layer)

    def series_view(self) -> SeriesView | None:
        """The current series and its masks, as the review panel needs them."""
        if self.ct is None or self._layer is None:
            return None
        info = layer_info(self._layer)
        root = info.get("luna_root")
        return SeriesView(
            ct=self.ct,
            ct_layer=self._layer,
            annotations=list(info.get("nodules") or []),
            generated=list(self.state.records) if self.state is not None else [],
            method=self.state.method if self.state is not None else str(self.method.value),
            threshold_hu=float(self.threshold.value),
            truth=self.truth,
            luna_root=Path(root) if root and info.get("role") == ROLE_CT else None,
        )

    def _on_ct_changed(self, layer: Image | None) -> None:
        if layer is self._layer:
            return
        self._load_series(layer)
        if self.state is None:  # no masks, so update_details did not tell the review panel
            self.review.set_series(self.series_view())

    def _load_series(self, layer: Image | None) -> None:
        self._layer = layer
        self.model.load(None)
        self.replay.stop()
        if layer is None:
            self._set_status("Open a CT (File > Open or File > Open Sample > LunaSeg).")
            fill_table(self.table, [])
            return
        try:
            ct = ct_from_layer(layer)
        except LunaSegError as exc:
            self._set_status(str(exc))
            return
        self.model.load(ct)
        info = layer_info(layer)
        nodules = list(info.get("nodules") or [])
        if not nodules:
            self._set_status(
                f"{ct.series_uid}: no annotated nodules. Open a series from a LUNA16 folder "
                "(with annotations.csv) or the synthetic sample."
            )
            fill_table(self.table, [])
            return
        truth_layer = find_layer(self.viewer, ROLE_TRUTH, ct.series_uid)
        true_nodules = list(info.get("true_nodules") or [])
        truth = None
        if truth_layer is not None and true_nodules:
            truth = SeriesTruth.from_labels(
                ct.series_uid, np.asarray(truth_layer.data), nodules, true_nodules
            )
            truth_layer.contour = TRUTH_CONTOUR_PX
        self.model.method = str(self.method.value)
        self.model.threshold_hu = float(self.threshold.value)
        try:
            self.model.load(ct, nodules, truth)
        except LunaSegError as exc:
            self._set_status(str(exc))
            show_error(str(exc))
            return
        self._attach_mask_layer()
        self.update_details()
        if not self.review.active:  # a review moving on to this series stays a review
            show_task(self.viewer, MASK_QA)

    def _attach_mask_layer(self) -> None:
        """Show the state's mask (a uint8 view, no copy) in the series' mask layer."""
        if self.state is None or self.ct is None:
            return
        layer = upsert_layer(
            self.viewer,
            mask_layer_data(
                self.state.mask.view(np.uint8),
                self.ct,
                threshold_hu=self.state.threshold_hu,
                method=self.state.method,
            ),
        )
        layer.metadata["lunaseg"].update(
            threshold_hu=self.state.threshold_hu, method=self.state.method
        )

    # -- threshold and method ----------------------------------------------------------------
    def set_threshold(self, threshold_hu: float) -> None:
        """Recompute the masks at ``threshold_hu`` (HU) and refresh only what changed."""
        if self.state is None:
            return
        start = time.perf_counter()
        boxes, changed = self.model.set_threshold(float(threshold_hu))
        layer = self.mask_layer
        if layer is None or layer.data.base is not self.state.mask:
            self._attach_mask_layer()
        elif changed:
            layer.metadata["lunaseg"]["threshold_hu"] = float(threshold_hu)
            # 2-D: a refresh re-slices one plane (ms). 3-D: only the boxes are re-uploaded.
            if self.viewer.dims.ndisplay == 2:
                layer.refresh()
            else:
                refresh_labels_boxes(layer, boxes)
        self.last_update_ms = (time.perf_counter() - start) * 1000.0
        self._set_status(
            f"threshold {threshold_hu:.0f} HU: mask updated in {self.last_update_ms:.1f} ms"
        )
        self._detail_timer.start()

    def set_method(self, method: str) -> None:
        """Switch the mask method (one of ``available_methods()``)."""
        if self.state is None:
            return
        try:
            self.model.set_method(method)
        except LunaSegError as exc:
            show_error(str(exc))
            return
        layer = self.mask_layer
        if layer is None or layer.data.base is not self.state.mask:
            self._attach_mask_layer()
        else:
            layer.metadata["lunaseg"]["method"] = method
            layer.refresh()
        self.update_details()

    # -- details: table, boxes, Dice ----------------------------------------------------------
    def method_dice(self) -> dict[str, list[float | None]]:
        """Per method, each nodule's Dice against its true shape (None: no true shape)."""
        return self.model.update_dice()

    def table_rows(self) -> list[list[Any]]:
        """The nodule table as rows of values (what the widget shows)."""
        return self.model.table_rows()

    def table_headers(self) -> list[str]:
        """Column names of :meth:`table_rows`."""
        return self.model.table_headers()

    def update_details(self) -> None:
        """Refresh the nodule table, the per-method Dice and the boxes layer."""
        if self.state is None or self.ct is None:
            return
        self.model.update_dice()
        headers = self.table_headers()
        if self.table.columnCount() != len(headers):
            self.table.setColumnCount(len(headers))
            self.table.setHorizontalHeaderLabels(headers)
        fill_table(self.table, self.table_rows())
        rects: list[np.ndarray] = []
        for rec in self.state.records:
            if not rec.skipped:
                rects.extend(box_rectangles(rec.box_lo_irc, rec.box_hi_irc))
        name = f"{short_name(self.ct.series_uid)} boxes"
        set_box_shapes(self.viewer, self.ct, ROLE_BOXES, name, rects, BOX_COLOR)
        latency = (
            "" if self.last_update_ms is None else f"; last update {self.last_update_ms:.1f} ms"
        )
        self._set_status(self.model.status_line() + latency)
        row = self.table.currentRow()
        if 0 <= row < len(self.state.records):
            self.replay.load(self.ct, self.state.records[row], row + 1)
        self.review.set_series(self.series_view())

    # -- table selection ---------------------------------------------------------------------
    def _on_row_selected(self) -> None:
        row = self.table.currentRow()
        if self.state is None or not 0 <= row < len(self.state.records):
            return
        self.select_nodule(row)

    def select_nodule(self, index: int) -> None:
        """Select nodule ``index`` (0-based): jump and zoom to it, load its growth steps."""
        if self.state is None or self.ct is None:
            return
        record = self.state.records[index]
        if self.table.currentRow() != index:
            self.table.selectRow(index)
        zoom_to_nodule(self.viewer, record.center_xyz_mm, record.nodule.diameter_mm)
        self.replay.load(self.ct, record, index + 1)
        show_task(self.viewer, MASK_QA)

    def follow_nodule(self, center_xyz_mm: Any) -> None:
        """Highlight the row of the nodule at ``center_xyz_mm`` (world mm) without moving the
        view, or no row when it is none of the table's (e.g. an addition in review): the
        table follows the review as it moves on."""
        if self.state is None or self.ct is None:
            return
        index = self.model.index_of(center_xyz_mm)
        self.table.blockSignals(True)
        if index is None:
            self.table.clearSelection()
            self.table.setCurrentCell(-1, -1)
        else:
            self.table.selectRow(index)
            self.replay.load(self.ct, self.state.records[index], index + 1)
        self.table.blockSignals(False)

    # -- export ------------------------------------------------------------------------------
    def export_mask(self, path: str | os.PathLike[str]) -> Path:
        """Write the generated mask (uint8, the CT's geometry) to ``.mhd``/``.nii.gz``/..."""
        return self.model.export_mask(path)

    def export_table(self, path: str | os.PathLike[str]) -> Path:
        """Write the nodule table as ``nodules.csv`` (``lunaseg mask``'s format, Dice per
        method after its columns), atomically."""
        return self.model.export_table(path)

    def _save_mask_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save mask", "mask.nii.gz", "Volumes (*.nii.gz *.mhd *.nii *.nrrd)"
        )
        if path:
            self._try(lambda: self.export_mask(path), f"Mask saved to {path}")

    def _save_table_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save table", "nodules.csv", "CSV (*.csv)")
        if path:
            self._try(lambda: self.export_table(path), f"Table saved to {path}")

    def _try(self, action: Any, done: str) -> None:
        try:
            action()
        except (LunaSegError, OSError) as exc:
            show_error(str(exc))
        else:
            show_info(done)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
