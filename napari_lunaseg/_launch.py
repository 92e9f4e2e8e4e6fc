"""What ``lunaseg view`` opens: a viewer with a series and the LunaSeg widgets docked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_lunaseg import PLUGIN

#: Widgets docked on the right, as tabs; the first one is shown.
DOCKED_WIDGETS = ("Mask QA", "Inference", "Training")


def fit_to_screen(viewer: Any) -> None:
    """Give the window the screen's available area (a maximised window without a window
    manager's help; napari would reuse the size of its last window, often small)."""
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    if screen is None:
        return
    area = screen.availableGeometry()
    viewer.window.set_geometry(area.x(), area.y(), area.width(), area.height())


def open_viewer(path: Path | None, *, show: bool = True, title: str = "LunaSeg") -> Any:
    """A napari viewer with ``path`` opened by the LunaSeg reader and the widgets docked.

    The window fills the screen; the first nodule is selected (its slice shown, its growth
    ready to replay) with the whole slice in view; the canvas says which slice is shown, as
    the tables count slices, and lists annotation rows the reader passed over.
    """
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_lunaseg._layers import ROLE_CT, layer_info
    from napari_lunaseg._viewer_utils import follow_ct_slices

    viewer = napari.Viewer(title=title if path is None else f"{title} - {path.name}", show=show)
    if show:
        fit_to_screen(viewer)
    if path is not None:
        viewer.open(str(path), plugin=PLUGIN)
    docked = [
        viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True) for name in DOCKED_WIDGETS
    ]
    first_dock, mask_qa = docked[0]
    QTimer.singleShot(0, first_dock.raise_)  # after the tabs exist
    ct = next((ly for ly in viewer.layers if layer_info(ly).get("role") == ROLE_CT), None)
    if ct is not None:
        follow_ct_slices(viewer, ct)
    if getattr(mask_qa, "state", None) is not None and mask_qa.state.records:
        mask_qa.select_nodule(0)  # its slice, its growth ready to replay
    QApplication.processEvents()  # the canvas takes its final size
    viewer.reset_view()  # the whole slice in view (selecting a row zooms on its nodule)
    return viewer
