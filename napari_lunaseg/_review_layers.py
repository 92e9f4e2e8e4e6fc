"""The layers of review mode: the reviewed ground truth (an outline), the labels layer a
correction is painted on and the points layer an addition is clicked on."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_lunaseg._layers import (
    ROLE_REVIEW_ADD,
    ROLE_REVIEW_EDIT,
    ROLE_REVIEWED,
    hex_color,
    labels_layer_data,
    lunaseg_meta,
    rgba,
    short_name,
    single_label_colormap,
)
from napari_lunaseg._viewer_utils import find_layer, upsert_layer
from src_train.colors import CURRENT_BOX_RGB, REVIEW_EDIT_RGB, REVIEWED_RGB
from src_train.ct import CtVolume

#: Colours: the reviewed ground truth (outline), the voxels being corrected, the current box.
REVIEWED_RGBA = rgba(REVIEWED_RGB)
EDIT_RGBA = rgba(REVIEW_EDIT_RGB)
CURRENT_BOX_COLOR = hex_color(CURRENT_BOX_RGB)
#: Outline width (voxels) of the reviewed ground truth.
REVIEWED_CONTOUR_VOXELS = 1
#: Brush of a correction, voxels.
BRUSH_SIZE_VOXELS = 3


def show_reviewed_layer(viewer: Any, ct: CtVolume, mask: np.ndarray) -> None:
    """Show the reviewed ground truth ``mask`` (bool ``(index, row, col)``) as an outline; an
    unchanged mask is left as shown."""
    shown = find_layer(viewer, ROLE_REVIEWED, ct.series_uid)
    if shown is not None and np.array_equal(shown.data, mask):
        return  # e.g. an accepted nodule: the ground truth did not change
    layer = upsert_layer(
        viewer,
        labels_layer_data(
            mask.view(np.uint8),
            ct,
            role=ROLE_REVIEWED,
            name=f"{short_name(ct.series_uid)} reviewed",
            colormap=single_label_colormap(REVIEWED_RGBA),
            opacity=0.9,
        ),
    )
    layer.contour = REVIEWED_CONTOUR_VOXELS


def open_correction_layer(viewer: Any, ct: CtVolume, voxels: np.ndarray, number: int) -> Any:
    """A labels layer holding ``voxels`` (uint8 ``(index, row, col)``) of nodule ``number``
    (1-based), active, with the paint brush; returns it."""
    layer = upsert_layer(
        viewer,
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
    viewer.layers.selection.active = layer
    return layer


def open_add_layer(viewer: Any, ct: CtVolume, on_click: Any) -> Any:
    """A points layer in add mode (replacing an earlier one) whose clicks call ``on_click``
    with the layer's data event; active; returns it."""
    old = find_layer(viewer, ROLE_REVIEW_ADD, ct.series_uid)
    if old is not None:
        viewer.layers.remove(old)
    layer = viewer.add_points(
        ndim=3,
        name="click a nodule to add it",
        affine=ct.geometry.affine_irc_to_zyx(),
        metadata=lunaseg_meta(ROLE_REVIEW_ADD, ct.geometry, ct.series_uid),
        face_color="transparent",
        border_color=CURRENT_BOX_COLOR,
    )
    layer.mode = "add"
    layer.events.data.connect(on_click)
    viewer.layers.selection.active = layer
    return layer
