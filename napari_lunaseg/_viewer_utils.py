"""Small helpers shared by the widgets: find/replace layers, jump the view, build widgets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.layers import Image, Layer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
)

from napari_lunaseg._layers import ROLE_CT, LayerDataTuple, layer_info


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
    if existing is not None and existing._type_string == layer_type:
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


def jump_to(viewer: Any, center_zyx_mm: Sequence[float]) -> None:
    """Move the slice and the camera to a world ``(z, y, x)`` mm position."""
    center = np.asarray(center_zyx_mm, dtype=float)
    if viewer.dims.ndim >= 3:
        point = list(viewer.dims.point)
        point[-3:] = center
        viewer.dims.point = point
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple(center[-viewer.dims.ndisplay :])


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
    """A read-only, row-selecting table with the given column headers."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
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
    """Update only ``boxes`` (IRC slices) of a labels layer shown in 3-D; False if not possible.

    ``layer.refresh()`` re-colours and re-uploads the whole volume in 3-D (seconds for a
    512x512x300 scan). This re-colours the boxes and sends each as a sub-texture, the way
    napari's own painting does; it relies on napari internals, so any mismatch (other napari
    version, transposed axes, contours, 2-D display) returns False and the caller refreshes.
    """
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
