"""Small helpers shared by the widgets: find/replace layers, jump the view, build widgets."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Layer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
)

from napari_lunaseg._layers import ROLE_CT, LayerDataTuple, layer_info, lunaseg_meta
from src_train.ct import CtVolume, xyz_to_zyx_mm

#: Canvas size assumed when the viewer has no window (headless tests), pixels.
DEFAULT_CANVAS_PX = 600
#: Tissue shown on each side of a nodule the view zooms to (:func:`zoom_to_nodule`), mm.
NODULE_CONTEXT_MM = 25.0
#: napari's world axes, in order, as the dims sliders name them.
WORLD_AXIS_LABELS = ("z", "y", "x")
#: Notices the overlay lists one by one before "and N more".
OVERLAY_NOTICES = 5
#: Characters per line of the overlay's notices (the canvas's text overlay does not wrap).
OVERLAY_LINE_CHARS = 80


def find_layer(viewer: Any, role: str, series_uid: str) -> Layer | None:
    """The (topmost) layer of this plugin with the given role for a series, if any."""
    for layer in reversed(list(viewer.layers)):
        info = layer_info(layer)
        if info.get("role") == role and info.get("series_uid") == series_uid:
            return layer
    return None


@contextmanager
def keep_selection(viewer: Any) -> Iterator[None]:
    """Add helper layers without stealing the user's layer selection."""
    active = viewer.layers.selection.active
    selected = set(viewer.layers.selection)
    try:
        yield
    finally:
        if active is not None and active in viewer.layers:
            viewer.layers.selection = {ly for ly in selected if ly in viewer.layers}
            viewer.layers.selection.active = active


def upsert_layer(viewer: Any, layer_data: LayerDataTuple) -> Layer:
    """Replace the data of the matching layer (same role and series) or add a new layer."""
    data, kwargs, layer_type = layer_data
    info = kwargs.get("metadata", {}).get("lunaseg", {})
    existing = find_layer(viewer, info.get("role", ""), info.get("series_uid", ""))
    if existing is not None and type(existing).__name__.lower() == layer_type:
        existing.data = data
        existing.metadata.update(kwargs.get("metadata", {}))
        return existing
    layer = Layer.create(data, kwargs, layer_type)
    with keep_selection(viewer):
        viewer.add_layer(layer)
    return layer


def ct_layers(viewer: Any) -> list[Image]:
    """3-D image layers that can be a CT (not this plugin's outputs), LunaSeg CTs first."""
    images = [
        ly
        for ly in viewer.layers
        if isinstance(ly, Image)
        and ly.data.ndim == 3
        and layer_info(ly).get("role", ROLE_CT) == ROLE_CT  # not our probability maps
    ]
    return sorted(images, key=lambda ly: layer_info(ly).get("role") != ROLE_CT)


def jump_to(viewer: Any, center_xyz_mm: Sequence[float], *, zoom_mm: float | None = None) -> None:
    """Move the slice and the camera to a world ``(x, y, z)`` mm position.

    With ``zoom_mm``, zoom so that about that many millimetres fill the canvas's shorter side
    (a 4 mm nodule should not be a few pixels).
    """
    center = xyz_to_zyx_mm(center_xyz_mm)[0]
    if viewer.dims.ndim >= 3:
        point = list(viewer.dims.point)
        point[-3:] = center
        viewer.dims.point = point
    camera = camera_of(viewer)
    camera.center = tuple(center[-viewer.dims.ndisplay :])
    if zoom_mm is not None and zoom_mm > 0:
        size = getattr(getattr(viewer, "canvas", None), "size", None)
        size_px = min(size) if size else DEFAULT_CANVAS_PX
        camera.zoom = size_px / zoom_mm


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def nodule_view_mm(diameter_mm: float | None) -> float:
    """The field of view (mm) around a nodule of this diameter (mm): the nodule and
    :data:`NODULE_CONTEXT_MM` of tissue on each side."""
    return float(diameter_mm or 0.0) + 2.0 * NODULE_CONTEXT_MM


def zoom_to_nodule(viewer: Any, center_xyz_mm: Sequence[float], diameter_mm: float | None) -> None:
    """Show the slice through a nodule (world ``(x, y, z)`` mm), centred, with
    :func:`nodule_view_mm` millimetres across the canvas's shorter side. Every widget zooms
    to a nodule this way."""
    jump_to(viewer, center_xyz_mm, zoom_mm=nodule_view_mm(diameter_mm))


def slice_index_text(viewer: Any, layer: Any) -> str:
    """``"slice 45 of 0-128 (z -89.1 mm)"``: the slice shown, as the tables count it (array
    index of ``layer``, a 3-D CT), next to the world position of the plane."""
    point = np.asarray(viewer.dims.point, dtype=float)[-3:]
    index = int(np.round(np.asarray(layer.world_to_data(point), dtype=float)[0]))
    last = int(layer.data.shape[0]) - 1
    where = "outside the scan" if not 0 <= index <= last else f"{index} of 0-{last}"
    return f"slice {where} (z {point[0]:.1f} mm)"


def notice_lines(problems: Sequence[dict[str, Any]]) -> list[str]:
    """Overlay lines for annotation rows the reader passed over (``{"path", "line", "reason"}``
    dicts of the CT layer's metadata): a title, each row's file, line and reason (wrapped, at
    most :data:`OVERLAY_NOTICES`), then the files' full paths."""
    if not problems:
        return []
    lines = ["", f"{len(problems)} annotation row(s) not shown (the commands refuse the file):"]
    for problem in problems[:OVERLAY_NOTICES]:
        name, line = Path(str(problem["path"])).name, problem.get("line")
        where = f"{name}, line {line}" if line else name
        lines += textwrap.wrap(
            f"{where}: {problem['reason']}", OVERLAY_LINE_CHARS, subsequent_indent="    "
        )
    rest = len(problems) - OVERLAY_NOTICES
    if rest > 0:
        lines.append(f"... and {rest} more")
    lines += [f"file: {path}" for path in sorted({str(p["path"]) for p in problems})]
    return lines


def _slice_range(layer: Any) -> tuple[float, float, float]:
    """World z ``(first, last, step)`` mm of the slice centers of a 3-D layer (lowest first)."""
    last = int(layer.data.shape[0]) - 1
    z0 = float(layer.data_to_world((0.0, 0.0, 0.0))[0])
    z1 = float(layer.data_to_world((float(last), 0.0, 0.0))[0])
    step = abs(z1 - z0) / last if last > 0 else 1.0
    return (min(z0, z1), max(z0, z1), step or 1.0)


def follow_ct_slices(viewer: Any, layer: Any) -> None:
    """Make the slice slider count the CT's slices, and say which one is shown.

    The layers live in world millimetres (the CT's affine), so napari's slider would step by
    the smallest spacing of any layer (1 mm for layers given in mm) and count steps from the
    lowest world z. Here its range is the CT's slice centers with the slice spacing as step
    (restored whenever napari recomputes it, e.g. when a layer is added), so a step is a slice;
    the axes are named (z, y, x); and the canvas's text overlay (:mod:`._screen`) gives the
    slice index as the tables count it in 2-D (exact also for a flipped or oblique scan), the
    legend, then the layer's notices (``metadata["lunaseg"]["problems"]``: e.g. annotation
    rows the reader passed over). A viewer follows one CT, the last one given; following the
    same layer again changes nothing. Every CT layer the LunaSeg reader opens into a viewer is
    followed this way, also through File > Open (:meth:`._screen.Screen.follow_new_ct`).
    """
    from napari_lunaseg._screen import screen_for

    dims = viewer.dims
    if dims.ndim != len(WORLD_AXIS_LABELS) or layer.data.ndim != len(WORLD_AXIS_LABELS):
        return
    screen = screen_for(viewer)
    if screen.followed is not None:
        if screen.followed[0] is layer:
            return  # already followed (the reader's viewer follows each CT it adds)
        dims.events.range.disconnect(screen.followed[1])  # the newest CT sets the slices
    dims.axis_labels = WORLD_AXIS_LABELS
    slices = _slice_range(layer)
    screen.notices = notice_lines(layer_info(layer).get("problems", []))

    def keep_slice_steps(event: Any = None) -> None:
        if layer not in viewer.layers:
            dims.events.range.disconnect(keep_slice_steps)
            if screen.followed is not None and screen.followed[0] is layer:
                screen.followed = None
            return
        if not np.allclose(tuple(dims.range[0]), slices):
            dims.set_range(0, slices)

    def caption() -> list[str]:
        return [slice_index_text(viewer, layer)] if layer in viewer.layers else []

    screen.followed = (layer, keep_slice_steps)
    dims.events.range.connect(keep_slice_steps)
    keep_slice_steps()
    screen.caption = caption
    screen.update_text()


def make_progress_bar() -> QProgressBar:
    """A progress bar at rest: range 0..1 at 0 (a job sets its own range when it runs)."""
    bar = QProgressBar()
    bar.setRange(0, 1)
    bar.setValue(0)
    return bar


def make_wrapping_label(text: str = "") -> QLabel:
    """A label that wraps long messages instead of widening the dock widget."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def make_table(headers: Sequence[str]) -> QTableWidget:
    """A read-only, row-selecting table with the given column headers, each column as wide as
    its header (or its widest cell, see :func:`fill_table`): no header is ever cut short."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    # Qt keeps each column as wide as its header and cells, also after napari's theme changes
    # the font (a width set once at creation would cut the header short again).
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    return table


def fill_table(table: QTableWidget, rows: Sequence[Sequence[Any]]) -> None:
    """Replace a table's rows (cells shown with ``str``), keeping the selected row if any."""
    selected = table.currentRow()
    table.blockSignals(True)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            item = table.item(r, c)
            text = "" if value is None else str(value)
            if item is None:
                table.setItem(r, c, QTableWidgetItem(text))
            elif item.text() != text:
                item.setText(text)
    if 0 <= selected < len(rows):
        table.selectRow(selected)
    table.blockSignals(False)
    table.resizeColumnsToContents()


def refresh_labels_boxes(layer: Any, boxes: Sequence[tuple[slice, slice, slice]]) -> bool:
    """Show the current voxels of ``boxes`` (IRC slices) of a labels layer whose data changed
    in place; True when only the boxes were re-uploaded, False when the layer was refreshed
    whole (napari's public ``refresh``).

    In 3-D ``layer.refresh()`` re-colours and re-uploads the whole volume (seconds for a
    512x512x300 scan); :func:`_upload_boxes` sends only the boxes, the way napari's own painting
    does. That needs napari internals, so it is the one place that touches them and any
    mismatch falls back to the public refresh (``tests/test_gui_mask_qa.py`` fails when a napari
    release takes the fast path away).
    """
    if _upload_boxes(layer, boxes):
        return True
    layer.refresh()
    return False


def _upload_boxes(layer: Any, boxes: Sequence[tuple[slice, slice, slice]]) -> bool:
    """Re-colour ``boxes`` of a 3-D labels layer and send each as a sub-texture (napari
    internals: ``_slice_input``, ``_slice``, ``_data_to_texture``, ``_accumulate_updated_slice``,
    ``_partial_labels_refresh``); False when that is not possible here."""
    try:
        displayed = tuple(layer._slice_input.displayed)
        if layer.ndim != 3 or displayed != (0, 1, 2) or layer.contour or not layer.loaded:
            return False
        view = layer._slice.image.view
        if tuple(view.shape) != tuple(layer.data.shape):
            return False
        for box in boxes:
            view[box] = layer.colormap._data_to_texture(np.asarray(layer.data[box]))
            layer._accumulate_updated_slice(box)
            layer._partial_labels_refresh()
    except (AttributeError, TypeError, ValueError, IndexError):
        return False
    return True


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


#: Edge width of box outlines, in voxels.
BOX_EDGE_WIDTH = 0.6


def set_box_shapes(
    viewer: Any, ct: CtVolume, role: str, name: str, rects: list[np.ndarray], color: str
) -> Layer:
    """Replace the rectangles of the series' shapes layer with this role (made if missing)."""
    layer = find_layer(viewer, role, ct.series_uid)
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_shapes(
                name=name,
                affine=ct.geometry.affine_irc_to_zyx(),
                metadata=lunaseg_meta(role, ct.geometry, ct.series_uid),
                edge_width=BOX_EDGE_WIDTH,
                face_color="transparent",
                ndim=3,
            )
        layer.editable = False
    layer.data = []
    if rects:
        layer.add_rectangles(
            rects, edge_color=color, face_color="transparent", edge_width=BOX_EDGE_WIDTH
        )
    return layer
