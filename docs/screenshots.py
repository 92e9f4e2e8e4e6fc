"""Render the README's screenshots from a real napari viewer (run it under Xvfb in CI).

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python docs/screenshots.py [--only NAME]

Writes PNGs into ``docs/img/``: the Mask QA widget on the synthetic sample (2-D and 3-D), the
inference widget after a run of the shipped demo checkpoint, the training widget following
a tiny run, and review mode (a correction being painted, then the review table with verdicts).
Everything is generated from fixed seeds, so the pictures are reproducible.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
IMG_DIR = ROOT / "docs" / "img"
WINDOW_SIZE = (1500, 950)
PLUGIN = "napari-lunaseg"
#: Longest wait for a background job, s.
JOB_TIMEOUT_S = 600.0
#: Epochs the training screenshot waits for.
TRAIN_EPOCHS_SHOWN = 3
#: 3-D view of the CT as a maximum intensity projection of bone, HU.
BONE_WINDOW_HU = (100, 800)
#: Camera zoom of the 3-D view (the volume fills the canvas's width).
MIP_ZOOM = 1.8
#: Field of view around the nodule in the inference screenshot, mm.
ERROR_VIEW_MM = 160.0

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


def shot_view() -> None:
    """What ``lunaseg view`` shows: a synthetic series, its masks, the widgets docked."""
    from napari_lunaseg._cli import default_series
    from napari_lunaseg._launch import open_viewer
    from src_train import DEFAULT_DATA_DIR

    with tempfile.TemporaryDirectory(prefix="lunaseg-shots-") as tmp:
        # the folder `lunaseg view` would write, kept out of the repository
        path = default_series(Path(tmp) / DEFAULT_DATA_DIR, seed=0)
        viewer = open_viewer(path)
        viewer.window._qt_window.resize(*WINDOW_SIZE)
        _save(viewer, "view")
        viewer.close()


def shot_mask_qa() -> None:
    """Mask QA on the synthetic sample: table, boxes, growth replay of a nodule."""
    from napari_lunaseg._mask_qa import MaskQAWidget

    viewer = _viewer()
    _open_sample(viewer)
    widget = MaskQAWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Mask QA", area="right")
    widget.select_nodule(0)  # jumps to the nodule, zoomed, and loads its growth steps
    replay = widget.replay
    replay.step.value = replay.step.max  # the last step: the box the growth reached
    _save(viewer, "mask_qa")

    viewer.dims.ndisplay = 3
    viewer.scene.camera.angles = (10, -30, 75)
    viewer.scene.camera.zoom = MIP_ZOOM
    for layer in viewer.layers:
        if layer.name.endswith(("growth", "growth probes", "boxes")):
            layer.visible = False
    image = viewer.layers[0]
    image.rendering = "mip"
    image.contrast_limits = BONE_WINDOW_HU
    _save(viewer, "mask_qa_3d")
    viewer.close()


def shot_inference() -> None:
    """The demo checkpoint run on the sample: probability, TP/FN/FP colours, candidates."""
    from napari_lunaseg._inference import InferenceWidget
    from src_train.infer import DEMO_CHECKPOINT

    if not DEMO_CHECKPOINT.is_file():
        raise SystemExit(f"the demo checkpoint {DEMO_CHECKPOINT} is missing")
    viewer = _viewer()
    _open_sample(viewer)
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Inference", area="right")
    widget.device.value = "auto"
    widget.run()
    if not _wait(lambda: not widget.running, JOB_TIMEOUT_S):
        raise SystemExit("inference did not finish in time")
    for layer in viewer.layers:
        if layer.name.endswith(("mask", "prediction", "true shapes", "nodules")):
            layer.visible = False
    if widget.table.rowCount():
        widget.table.selectRow(_candidate_on_a_nodule(viewer, widget))  # jumps to it
    _show_error_slice(viewer)
    _save(viewer, "inference")
    viewer.close()


def _candidate_on_a_nodule(viewer: napari.Viewer, widget) -> int:
    """Row of the candidate nearest to an annotated nodule (the table lists every candidate)."""
    from napari_lunaseg._layers import layer_info

    nodules = layer_info(viewer.layers[0]).get("nodules") or []
    candidates = widget.result.candidates
    if not nodules or not candidates:
        return 0
    ref = np.array([n.center_xyz_mm for n in nodules])
    cand = np.array([c.center_xyz_mm for c in candidates])
    dist = np.linalg.norm(cand[:, None, :] - ref[None, :, :], axis=-1).min(axis=1)
    return int(np.argmin(dist))


def _show_error_slice(viewer: napari.Viewer) -> None:
    """Go to the axial slice showing most kinds of error voxels (TP, FN, FP), each the largest.

    Centers the camera on that slice's nodule voxels (TP + FN) with :data:`ERROR_VIEW_MM` of
    context, so the colours are visible whatever checkpoint produced them.
    """
    from napari_lunaseg._viewer_utils import jump_to
    from src_train.colors import ERROR_FN, ERROR_FP, ERROR_TP

    layer = next((ly for ly in viewer.layers if ly.name.endswith(" errors")), None)
    if layer is None:
        log.warning("no error layer (no generated mask?): the view is left as is")
        return
    errors = np.asarray(layer.data)
    codes = (ERROR_TP, ERROR_FN, ERROR_FP)
    counts = np.stack([(errors == code).sum(axis=(1, 2)) for code in codes])
    kinds = (counts > 0).sum(axis=0)
    if not (counts[0] + counts[1]).any():
        log.warning("no annotated voxel in the error layer: the view is left as is")
        return
    # most kinds shown, then the rarest of them as large as possible
    rarest = np.where(counts > 0, counts, counts.max() + 1).min(axis=0)
    index = int(np.lexsort((rarest, kinds))[-1])
    rows, cols = np.nonzero(np.isin(errors[index], (ERROR_TP, ERROR_FN)))
    center_irc = np.array([index, rows.mean(), cols.mean()])
    center_zyx_mm = np.asarray(layer.data_to_world(center_irc))
    jump_to(viewer, center_zyx_mm[::-1], zoom_mm=ERROR_VIEW_MM)
    viewer.layers.selection.active = layer  # its controls, not the hidden nodules'


def shot_training() -> None:
    """The training widget following a tiny run on a tiny synthetic data set."""
    from napari_lunaseg._training import TrainingWidget
    from src_train.synth import SynthConfig, write_dataset

    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="lunaseg-shots-") as tmp:
        os.chdir(tmp)  # relative folders in the picture, as a user would type them
        try:
            data = Path("lunaseg-data")
            write_dataset(data, n_scans=3, seed=1, config=SynthConfig.tiny())
            viewer = _viewer()
            viewer.open(str(sorted((data / "subset0").glob("*.mhd"))[0]), plugin=PLUGIN)
            widget = TrainingWidget(viewer)
            viewer.window.add_dock_widget(widget, name="Training", area="right")
            widget.data_dir.value = str(data)
            widget.run_dir.value = "runs/unet"
            widget.epochs.value = 20
            widget.epoch_samples.value = 32
            widget.batch_size.value = 8
            widget.device.value = "cpu"
            widget.start()
            if not _wait(lambda: len(widget.epochs_seen) >= TRAIN_EPOCHS_SHOWN, JOB_TIMEOUT_S):
                raise SystemExit(f"training did not finish {TRAIN_EPOCHS_SHOWN} epochs in time")
            _save(viewer, "training")
            widget.stop_and_wait()
            viewer.close()
        finally:
            os.chdir(cwd)


#: Seed and size of the data set the review screenshots walk through.
REVIEW_SEED = 5
REVIEW_NODULES = 5


def shot_review() -> None:
    """Review mode on a synthetic folder: painting a correction, then the verdicts' table."""
    from napari_lunaseg._viewer_utils import jump_to
    from src_train.synth import SynthConfig, write_dataset

    with tempfile.TemporaryDirectory(prefix="lunaseg-shots-") as tmp:
        os.environ["LUNASEG_CONFIG_DIR"] = str(Path(tmp) / "config")  # no name remembered
        config = SynthConfig(nodules_per_scan_range=(REVIEW_NODULES, REVIEW_NODULES))
        folder = write_dataset(Path(tmp) / "data", n_scans=2, seed=REVIEW_SEED, config=config)
        uid = folder.series_uids[0]
        missed = folder.nodules(uid)[-1]  # the annotators "missed" it: added in review
        lines = (folder.root / "annotations.csv").read_text().splitlines(keepends=True)
        last = max(k for k, line in enumerate(lines) if line.startswith(uid))
        (folder.root / "annotations.csv").write_text("".join(lines[:last] + lines[last + 1 :]))
        viewer = _viewer()
        viewer.open(str(folder.series_path(uid)), plugin=PLUGIN)
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Mask QA")
        panel = widget.review
        widget.tools.setCurrentWidget(panel)
        panel.reviewer.setText("Ann")
        panel.set_active(True)
        panel.accept()
        panel.note.setText("a vessel in cross-section")
        panel.reject()
        panel.start_correction()
        edit = panel.edit_layer
        center = np.argwhere(edit.data > 0).mean(axis=0).round().astype(int)
        edit.mode = "erase"
        edit.brush_size = 4
        edit.paint(tuple(center + np.array((0, 2, 2))), 0)
        _save(viewer, "review_correct")
        panel.save_correction()
        jump_to(viewer, missed.center_xyz_mm, zoom_mm=40.0)
        panel.diameter.setValue(round(missed.diameter_mm or 6.0, 1))
        panel.start_add()
        click_irc = widget.ct.geometry.xyz_to_irc(missed.center_xyz_mm)
        viewer.layers.selection.active.add(click_irc[None, :])  # where a click would put it
        _wait(lambda: len(panel.items) == len(folder.nodules(uid)), 5.0)
        panel.go_to(2)
        _save(viewer, "review")
        viewer.close()


SHOTS: dict[str, Callable[[], None]] = {
    "view": shot_view,
    "mask_qa": shot_mask_qa,
    "inference": shot_inference,
    "training": shot_training,
    "review": shot_review,
}


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
