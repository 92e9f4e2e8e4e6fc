"""Render the README's screenshots from a real napari viewer (run it under Xvfb in CI).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots.py [--only NAME]

Writes PNGs into ``docs/img/``: the Mask QA widget on the synthetic sample (2-D and 3-D), the
inference widget after a run of the shipped demo checkpoint, the training widget following
a tiny run, and review mode (a correction being painted, then the review table with verdicts).
Everything is generated from fixed seeds, so the pictures are reproducible.

Each picture is the state a user gets by the same clicks: the window fills the screen as
``lunaseg view`` makes it, widgets are driven through what a user presses (a table row, a
slider, Run, the 2-D/3-D toggle, a camera turn), and no layer is hidden or restyled by this
script: what is shown is what each task shows (:mod:`napari_lunaseg._screen`).
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
sys.path.insert(0, str(ROOT))  # this checkout's napari_lunaseg and src_train, not an installed copy
IMG_DIR = ROOT / "docs" / "img"
PLUGIN = "napari-lunaseg"
#: Longest wait for a background job, s.
JOB_TIMEOUT_S = 600.0
#: Epochs the training screenshot waits for.
TRAIN_EPOCHS_SHOWN = 3
#: Camera angles of the 3-D picture (a turn a user makes with the mouse), degrees.
CAMERA_ANGLES_3D = (10, -30, 75)

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
    from napari_lunaseg._launch import fit_to_screen

    viewer = napari.Viewer(title="LunaSeg", show=True)
    fit_to_screen(viewer)  # as `lunaseg view` opens it
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
        _save(viewer, "view")
        viewer.close()


def shot_mask_qa() -> None:
    """Mask QA on the synthetic sample: a nodule's row clicked (its mask, box and true shape,
    Dice per method), then the 2-D/3-D toggle and a camera turn."""
    from napari_lunaseg._mask_qa import MaskQAWidget

    viewer = _viewer()
    _open_sample(viewer)
    widget = MaskQAWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Mask QA", area="right")
    _settle()  # the dock takes its place, as it has by the time a user clicks
    widget.table.selectRow(0)  # a click on the first row: its slice, zoomed, its growth loaded
    _save(viewer, "mask_qa")

    viewer.dims.ndisplay = 3  # the toggle: a projection of the whole volume
    viewer.scene.camera.angles = CAMERA_ANGLES_3D
    _save(viewer, "mask_qa_3d")
    viewer.close()


def shot_inference() -> None:
    """The demo checkpoint run on the sample, then a click on the candidate on a nodule."""
    from napari_lunaseg._inference import InferenceWidget
    from src_train.commands.infer_folder import DEMO_CHECKPOINT

    if not DEMO_CHECKPOINT.is_file():
        raise SystemExit(f"the demo checkpoint {DEMO_CHECKPOINT} is missing")
    viewer = _viewer()
    _open_sample(viewer)
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Inference", area="right")
    _settle()
    widget.run()  # Run, with the widget's defaults
    if not _wait(lambda: not widget.running, JOB_TIMEOUT_S):
        raise SystemExit("inference did not finish in time")
    if widget.table.rowCount():
        widget.table.selectRow(_candidate_on_a_nodule(viewer, widget))  # jumps to it
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
    from napari_lunaseg._viewer_utils import zoom_to_nodule
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
        zoom_to_nodule(viewer, missed.center_xyz_mm, missed.diameter_mm)  # scrolled to it
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
