"""Mask QA widget: see, tune and export the masks grown from point annotations.

The generated mask layer shares its memory with :class:`src_train.masks.MaskState` (a uint8 view
of the state's bool volume), so a threshold change touches only the nodules' boxes in
``MaskState.set_threshold`` and the layer only needs a refresh. The table, boxes and per-method
Dice follow a moment later (debounced) so dragging the slider stays smooth.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, Slider
from napari.layers import Image
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGroupBox, QLabel, QVBoxLayout, QWidget
from scipy import ndimage

from napari_lunaseg._layers import (
    ROLE_BOXES,
    ROLE_MASK,
    ROLE_TRUTH,
    ct_from_layer,
    layer_info,
    lunaseg_meta,
    mask_layer_data,
    nodules_xyz_to_napari,
    short_name,
)
from napari_lunaseg._viewer_utils import (
    ct_layers,
    fill_table,
    find_layer,
    jump_to,
    keep_selection,
    make_table,
    refresh_labels_boxes,
    upsert_layer,
)
from src_train.atomic import atomic_write
from src_train.ct import CtVolume, save_volume
from src_train.errors import LunaSegError
from src_train.masks import (
    AXIS_NAMES,
    DEFAULT_THRESHOLD_HU,
    REFERENCE_METHOD,
    MaskState,
    NoduleMask,
    available_methods,
    build_masks,
    dice,
)

log = logging.getLogger(__name__)

#: Threshold slider range, HU.
THRESHOLD_RANGE_HU = (-1000, 400)
#: Delay before the table, boxes and Dice follow a threshold change, ms.
DETAIL_DELAY_MS = 150
#: Interval between growth steps when replaying, ms.
REPLAY_INTERVAL_MS = 350

#: Dock width that shows the table's Dice columns without scrolling, px.
MIN_WIDTH_PX = 430
#: Outline width (screen pixels) of the true shapes, so the mask shows through.
TRUTH_CONTOUR_PX = 1
BOX_COLOR = "yellow"
#: How the replay names the side that stopped a growth step (``GrowthStep.stopped_by``).
STOP_REASONS = {
    "minus": "the -r side",
    "plus": "the +r side",
    "both": "both sides",
    "edge": "the volume edge",
}
GROWTH_COLOR = "magenta"
PROBE_DENSE_COLOR = "lime"
PROBE_FAIL_COLOR = "red"


def box_rectangles(lo_irc: Sequence[int], hi_irc: Sequence[int]) -> list[np.ndarray]:
    """One rectangle ``(4, 3)`` in IRC voxel coordinates per slice of a box (hi exclusive)."""
    (z0, r0, c0), (z1, r1, c1) = lo_irc, hi_irc
    rows = (r0 - 0.5, r1 - 0.5)
    cols = (c0 - 0.5, c1 - 0.5)
    return [
        np.array(
            [
                [z, rows[0], cols[0]],
                [z, rows[0], cols[1]],
                [z, rows[1], cols[1]],
                [z, rows[1], cols[0]],
            ]
        )
        for z in range(int(z0), int(z1))
    ]


def truth_label_of(
    record: NoduleMask, truth: np.ndarray, truth_centers_irc: dict[int, np.ndarray]
) -> int:
    """The true-shape label of an annotated nodule: the label at its center, else the nearest."""
    if record.skipped:
        return 0
    label = int(truth[record.center_irc])
    if label or not truth_centers_irc:
        return label
    labels = list(truth_centers_irc)
    dist = [np.linalg.norm(truth_centers_irc[k] - np.asarray(record.center_irc)) for k in labels]
    best = int(np.argmin(dist))
    radius = max(np.asarray(record.radius_irc).max(), 3)
    return labels[best] if dist[best] <= 2 * radius else 0


def nodule_dice(
    record: NoduleMask, truth: np.ndarray, label: int, truth_box: tuple[slice, ...] | None
) -> float | None:
    """Dice between one nodule's mask (inside its box) and its true shape ``truth == label``."""
    if not label or truth_box is None or record.skipped:
        return None
    lo = [min(b.start, t.start) for b, t in zip(record.box_slices, truth_box, strict=True)]
    hi = [max(b.stop, t.stop) for b, t in zip(record.box_slices, truth_box, strict=True)]
    region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    pred = np.zeros([b - a for a, b in zip(lo, hi, strict=True)], dtype=bool)
    inner = tuple(
        slice(s.start - a, s.stop - a) for s, a in zip(record.box_slices, lo, strict=True)
    )
    pred[inner] = record.local_mask
    return dice(pred, truth[region] == label)


class _Truth:
    """True shapes of a series with per-label boxes and centers (computed once)."""

    def __init__(self, truth: np.ndarray) -> None:
        self.labels = truth
        objects = ndimage.find_objects(truth.astype(np.int32, copy=False))
        self.boxes = {i + 1: box for i, box in enumerate(objects) if box is not None}
        self.centers = {
            k: np.array([(s.start + s.stop - 1) / 2 for s in box]) for k, box in self.boxes.items()
        }

    def dice_for(self, record: NoduleMask) -> float | None:
        label = truth_label_of(record, self.labels, self.centers)
        return nodule_dice(record, self.labels, label, self.boxes.get(label))


#: Nodule table columns before the per-method Dice columns (the rest follow them).
TABLE_HEADERS_FIRST = ("#", "diameter (mm)", "voxels")
TABLE_HEADERS_LAST = (
    "radius i,r,c",
    "center i,r,c (voxel)",
    "center x,y,z (mm)",
    "box lo..hi (i,r,c)",
    "notes",
)


class MaskQAWidget(QWidget):
    """Threshold, method, nodule table, box growth replay and export for one CT layer."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state: MaskState | None = None
        self.ct: CtVolume | None = None
        self._layer: Image | None = None
        self._truth: _Truth | None = None
        self._dice: dict[str, list[float | None]] = {}
        self.last_update_ms: float | None = None
        self._step_record: int | None = None  # nodule whose growth the replay shows

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
        controls = Container(
            widgets=[self.ct_choice, self.method, self.threshold],
            labels=True,
        )
        buttons = Container(
            widgets=[self.save_mask_button, self.save_table_button], layout="horizontal"
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = make_table(TABLE_HEADERS_FIRST + TABLE_HEADERS_LAST)
        self.table.itemSelectionChanged.connect(self._on_row_selected)

        self.step = Slider(label="step", min=0, max=0, value=0)
        self.play_button = PushButton(text="▶ Replay growth")
        self.step_text = QLabel("Select a nodule in the table to replay its box growth.")
        self.step_text.setWordWrap(True)
        replay = QGroupBox("Bounding-box growth")
        replay_layout = QVBoxLayout(replay)
        replay_layout.addWidget(Container(widgets=[self.step, self.play_button]).native)
        replay_layout.addWidget(self.step_text)

        self.setMinimumWidth(MIN_WIDTH_PX)
        layout = QVBoxLayout(self)
        layout.addWidget(controls.native)
        layout.addWidget(self.status)
        layout.addWidget(self.table, stretch=1)
        layout.addWidget(replay)
        layout.addWidget(buttons.native)

        self._detail_timer = QTimer(self)
        self._detail_timer.setSingleShot(True)
        self._detail_timer.setInterval(DETAIL_DELAY_MS)
        self._detail_timer.timeout.connect(self.update_details)
        self._replay_timer = QTimer(self)
        self._replay_timer.setInterval(REPLAY_INTERVAL_MS)
        self._replay_timer.timeout.connect(self._replay_tick)

        self.ct_choice.changed.connect(self._on_ct_changed)
        self.threshold.changed.connect(self.set_threshold)
        self.method.changed.connect(self.set_method)
        self.step.changed.connect(self.show_step)
        self.play_button.changed.connect(self._toggle_replay)
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
        self._reset_choices()

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

    def _on_ct_changed(self, layer: Image | None) -> None:
        if layer is self._layer:
            return
        self._layer = layer
        self._replay_timer.stop()
        self.state = None
        self.ct = None
        self._step_record = None
        self._truth = None
        if layer is None:
            self._set_status("Open a CT (File > Open or File > Open Sample > LunaSeg).")
            fill_table(self.table, [])
            return
        try:
            ct = ct_from_layer(layer)
        except LunaSegError as exc:
            self._set_status(str(exc))
            return
        self.ct = ct
        nodules = list(layer_info(layer).get("nodules") or [])
        if not nodules:
            self._set_status(
                f"{ct.series_uid}: no annotated nodules. Open a series from a LUNA16 folder "
                "(with annotations.csv) or the synthetic sample."
            )
            fill_table(self.table, [])
            return
        truth_layer = find_layer(self.viewer, ROLE_TRUTH, ct.series_uid)
        if truth_layer is not None:
            self._truth = _Truth(np.asarray(truth_layer.data))
            truth_layer.contour = TRUTH_CONTOUR_PX
        try:
            self.state = MaskState(
                ct,
                nodules,
                method=self.method.value,
                threshold_hu=float(self.threshold.value),
                on_outside="skip",
            )
        except LunaSegError as exc:
            self._set_status(str(exc))
            show_error(str(exc))
            return
        self._attach_mask_layer()
        self.update_details()

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
        old_boxes = [rec.box_slices for rec in self.state.records if not rec.skipped]
        region = self.state.set_threshold(float(threshold_hu))
        layer = self.mask_layer
        if layer is None or layer.data.base is not self.state.mask:
            self._attach_mask_layer()
        elif region is not None:
            layer.metadata["lunaseg"]["threshold_hu"] = float(threshold_hu)
            boxes = old_boxes + [rec.box_slices for rec in self.state.records if not rec.skipped]
            # 2-D: a refresh re-slices one plane (ms). 3-D: only the boxes are re-uploaded.
            if self.viewer.dims.ndisplay == 2 or not refresh_labels_boxes(layer, boxes):
                layer.refresh()
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
            self.state.set_method(method)
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
    def _method_dice(self) -> dict[str, list[float | None]]:
        if self._truth is None or self.state is None or self.ct is None:
            return {}
        scores: dict[str, list[float | None]] = {}
        for name in available_methods():
            if name == self.state.method:
                records = self.state.records
            else:
                _, records = build_masks(
                    self.ct,
                    self.state.nodules,
                    self.state.threshold_hu,
                    name,
                    on_outside="skip",
                )
            scores[name] = [self._truth.dice_for(rec) for rec in records]
        return scores

    def table_rows(self) -> list[list[Any]]:
        """The nodule table as rows of values (what the widget and the CSV show)."""
        if self.state is None:
            return []
        rows = []
        for k, rec in enumerate(self.state.records):
            x, y, z = rec.center_xyz_mm
            diameter = rec.nodule.diameter_mm
            row: list[Any] = [k + 1, "" if diameter is None else f"{diameter:.1f}", rec.voxel_count]
            for name in self._dice:
                value = self._dice[name][k]
                row.append("" if value is None else f"{value:.3f}")
            row += [
                ", ".join(map(str, rec.radius_irc)),
                ", ".join(map(str, rec.center_irc)),
                f"{x:.1f}, {y:.1f}, {z:.1f}",
                f"{','.join(map(str, rec.box_lo_irc))}..{','.join(map(str, rec.box_hi_irc))}",
                "; ".join(rec.notes),
            ]
            rows.append(row)
        return rows

    def table_headers(self) -> list[str]:
        """Column names of :meth:`table_rows`."""
        dice_headers = [f"Dice {name}" for name in self._dice]
        return [*TABLE_HEADERS_FIRST, *dice_headers, *TABLE_HEADERS_LAST]

    def update_details(self) -> None:
        """Refresh the nodule table, the per-method Dice and the boxes layer."""
        if self.state is None or self.ct is None:
            return
        self._dice = self._method_dice()
        headers = self.table_headers()
        if self.table.columnCount() != len(headers):
            self.table.setColumnCount(len(headers))
            self.table.setHorizontalHeaderLabels(headers)
        fill_table(self.table, self.table_rows())
        self._update_boxes()
        voxels = int(np.count_nonzero(self.state.mask))
        latency = (
            "" if self.last_update_ms is None else f"; last update {self.last_update_ms:.1f} ms"
        )
        self._set_status(
            f"{len(self.state.records)} nodule(s), {voxels:,} mask voxels at "
            f"{self.state.threshold_hu:.0f} HU ({self.state.method}){latency}"
        )
        if self.table.currentRow() >= 0:
            self._load_steps(self.table.currentRow())

    def _update_boxes(self) -> None:
        if self.state is None or self.ct is None:
            return
        rects: list[np.ndarray] = []
        for rec in self.state.records:
            if not rec.skipped:
                rects.extend(box_rectangles(rec.box_lo_irc, rec.box_hi_irc))
        self._set_shapes(ROLE_BOXES, f"{short_name(self.ct.series_uid)} boxes", rects, BOX_COLOR)

    def _set_shapes(self, role: str, name: str, rects: list[np.ndarray], color: str) -> None:
        if self.ct is None:
            return
        layer = find_layer(self.viewer, role, self.ct.series_uid)
        if layer is None:
            with keep_selection(self.viewer):
                layer = self.viewer.add_shapes(
                    name=name,
                    affine=self.ct.geometry.affine_irc_to_zyx(),
                    metadata=lunaseg_meta(role, self.ct.geometry, self.ct.series_uid),
                    edge_width=0.6,
                    face_color="transparent",
                    ndim=3,
                )
            layer.editable = False
        layer.data = []
        if rects:
            layer.add_rectangles(rects, edge_color=color, face_color="transparent", edge_width=0.6)

    # -- table selection and growth replay -----------------------------------------------------
    def _on_row_selected(self) -> None:
        row = self.table.currentRow()
        if self.state is None or not 0 <= row < len(self.state.records):
            return
        self.select_nodule(row)

    def select_nodule(self, index: int) -> None:
        """Select nodule ``index`` (0-based): jump the view to it and load its growth steps."""
        if self.state is None:
            return
        record = self.state.records[index]
        if self.table.currentRow() != index:
            self.table.selectRow(index)
        jump_to(self.viewer, nodules_xyz_to_napari(np.array(record.center_xyz_mm))[0])
        self._load_steps(index)

    def _load_steps(self, index: int) -> None:
        if self.state is None:
            return
        steps = self.state.records[index].steps
        self._step_record = index
        self.step.max = max(len(steps) - 1, 0)
        if self.step.value > self.step.max:
            self.step.value = self.step.max
        self.show_step(self.step.value)

    def show_step(self, step_index: int) -> None:
        """Show growth step ``step_index`` of the selected nodule: box so far and the probes."""
        if self.state is None or self.ct is None or self._step_record is None:
            return
        record = self.state.records[self._step_record]
        if not record.steps:
            self.step_text.setText(
                f"Nodule {self._step_record + 1}: method {record.method!r} has no growth steps."
            )
            return
        step = record.steps[min(step_index, len(record.steps) - 1)]
        radii = [0, 0, 0]
        for axis in range(step.axis):
            radii[axis] = record.radius_irc[axis]
        radii[step.axis] = step.radius
        center = np.asarray(record.center_irc)
        lo = np.maximum(center - radii, 0)
        hi = np.minimum(center + radii + 1, self.ct.shape_irc)
        self._set_shapes(
            "growth",
            f"{short_name(self.ct.series_uid)} growth",
            box_rectangles(lo, hi),
            GROWTH_COLOR,
        )
        self._show_probes(record, step)
        axis_name = AXIS_NAMES[step.axis]
        minus = "outside" if step.hu_minus is None else f"{step.hu_minus:.0f} HU"
        plus = "outside" if step.hu_plus is None else f"{step.hu_plus:.0f} HU"
        outcome = (
            "both sides dense: grow on"
            if step.accepted
            else f"stopped by {STOP_REASONS.get(step.stopped_by, step.stopped_by)}"
            + ("" if step.stopped_by == "edge" else f" (not > {record.threshold_hu:.0f} HU)")
        )
        self.step_text.setText(
            f"Nodule {self._step_record + 1}, step {step_index + 1}/{len(record.steps)}: "
            f"{axis_name} radius {step.radius}: at -r {minus}, at +r {plus}: {outcome}. "
            f"Final radius i,r,c = {', '.join(map(str, record.radius_irc))}."
        )

    def _show_probes(self, record: NoduleMask, step: Any) -> None:
        if self.ct is None:
            return
        center = np.asarray(record.center_irc, dtype=float)
        points, colors = [], []
        for sign, value in ((-1, step.hu_minus), (1, step.hu_plus)):
            if value is None:
                continue
            probe = center.copy()
            probe[step.axis] += sign * step.radius
            points.append(probe)
            colors.append(PROBE_DENSE_COLOR if value > record.threshold_hu else PROBE_FAIL_COLOR)
        layer = find_layer(self.viewer, "probes", self.ct.series_uid)
        data = np.array(points).reshape(-1, 3)
        if layer is None:
            with keep_selection(self.viewer):
                layer = self.viewer.add_points(
                    data,
                    name=f"{short_name(self.ct.series_uid)} growth probes",
                    affine=self.ct.geometry.affine_irc_to_zyx(),
                    size=1.5,
                    face_color=colors or "white",
                    metadata=lunaseg_meta("probes", self.ct.geometry, self.ct.series_uid),
                    ndim=3,
                )
        else:
            layer.data = data
            if colors:
                layer.face_color = colors

    def _toggle_replay(self) -> None:
        if self._replay_timer.isActive():
            self._replay_timer.stop()
            self.play_button.text = "▶ Replay growth"
            return
        if self.state is None or self._step_record is None:
            show_info("Select a nodule in the table first.")
            return
        self.step.value = 0
        self.play_button.text = "■ Stop"
        self._replay_timer.start()

    def _replay_tick(self) -> None:
        if self.step.value >= self.step.max:
            self._replay_timer.stop()
            self.play_button.text = "▶ Replay growth"
            return
        self.step.value = self.step.value + 1

    # -- export ------------------------------------------------------------------------------
    def export_mask(self, path: str | os.PathLike[str]) -> Path:
        """Write the generated mask (uint8, the CT's geometry) to ``.mhd``/``.nii.gz``/..."""
        if self.state is None or self.ct is None:
            raise LunaSegError("No mask to save: open a series with annotations first.")
        dest = Path(path)
        return save_volume(
            self.state.mask.view(np.uint8),
            self.ct.geometry,
            dest,
            compress=dest.name.lower().endswith(".gz"),
            overwrite=True,
        )

    def export_table(self, path: str | os.PathLike[str]) -> Path:
        """Write the nodule table (one row per nodule, Dice per method) as CSV, atomically."""
        if self.state is None:
            raise LunaSegError("No nodule table to save: open a series with annotations first.")
        dest = Path(path)
        with atomic_write(dest) as handle:
            writer = csv.writer(handle)
            writer.writerow(["seriesuid", "method", "threshold_hu", *self.table_headers()])
            for row in self.table_rows():
                writer.writerow(
                    [self.state.ct.series_uid, self.state.method, self.state.threshold_hu, *row]
                )
        return dest

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
