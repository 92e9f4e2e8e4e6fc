"""What ``lunaseg view`` opens: a viewer with a series and the LunaSeg widgets docked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLUGIN = "napari-lunaseg"
#: Widgets docked on the right, as tabs; the first one is shown.
DOCKED_WIDGETS = ("Mask QA", "Inference", "Training")
#: Zoom factor applied on opening, centered on the first nodule.
OPEN_ZOOM = 2.0


def open_viewer(path: Path | None, *, show: bool = True, title: str = "LunaSeg") -> Any:
    """A napari viewer with ``path`` opened by the LunaSeg reader and the widgets docked."""
    import napari

    viewer = napari.Viewer(title=title if path is None else f"{title} - {path.name}", show=show)
    if path is not None:
        viewer.open(str(path), plugin=PLUGIN)
    from qtpy.QtCore import QTimer

    docked = [
        viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True) for name in DOCKED_WIDGETS
    ]
    first_dock, mask_qa = docked[0]
    QTimer.singleShot(0, first_dock.raise_)  # after the tabs exist
    if getattr(mask_qa, "state", None) is not None and mask_qa.state.records:
        mask_qa.select_nodule(0)  # open on the first nodule, its growth ready to replay
        viewer.scene.camera.zoom *= OPEN_ZOOM
    return viewer
