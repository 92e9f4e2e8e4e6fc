"""GUI tests of what the canvas shows per task: layer visibility, colours at voxels, the legend,
the candidate table, the zoom around a nodule, the 3-D view, and the run's ground truth in the
error layer (issue 24 items 1-4, issue 21 defect 8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, dock, first_annotated_series, layer_with_role

from src_train.colors import (
    ERROR_COLORS_RGB,
    ERROR_FN,
    ERROR_FP,
    ERROR_TP,
    LUNG_WINDOW_HU,
    MIP_WINDOW_HU,
    TP_RGB,
)
from src_train.luna import LunaFolder

pytestmark = pytest.mark.gui

JOB_TIMEOUT_MS = 120_000
#: RGB distance (0-1 scale) under which a colour reads as one of TP/FN/FP.
CONFUSABLE = 0.25
MASK_QA_ROLES = ("mask", "truth", "nodules", "boxes")
INFERENCE_ROLES = ("error", "candidates")


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("LUNASEG_CONFIG_DIR", str(folder))
    return folder


def _visible(viewer, role: str) -> bool:  # type: ignore[no-untyped-def]
    layer = layer_with_role(viewer, role)
    assert layer is not None, f"no {role} layer"
    return bool(layer.visible)


def _layer_colours(layer) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Every RGB colour (0-1) a non-error layer draws with, as an ``(n, 3)`` array."""
    kind = type(layer).__name__
    if kind == "Labels":
        values = np.unique(np.asarray(layer.data))
        values = values[values > 0]
        return np.asarray(layer.colormap.map(values))[:, :3].reshape(-1, 3)
    if kind == "Points":
        return np.concatenate([layer.border_color, layer.face_color])[:, :3]
    if kind == "Shapes":
        return np.asarray(layer.edge_color)[:, :3].reshape(-1, 3)
    return np.zeros((0, 3))


def _assert_no_error_colours(viewer) -> None:  # type: ignore[no-untyped-def]
    """Green, orange and red mean TP, FN and FP only: no other LunaSeg layer draws them."""
    from napari_lunaseg._layers import layer_info

    code = np.array(list(ERROR_COLORS_RGB.values()), dtype=float) / 255.0
    for layer in viewer.layers:
        role = layer_info(layer).get("role")
        if role in (None, "ct", "error", "probability"):
            continue
        colours = _layer_colours(layer)
        colours = colours[np.asarray(colours).any(axis=1)] if len(colours) else colours
        if not len(colours):
            continue
        dist = np.linalg.norm(colours[:, None, :] - code[None, :, :], axis=-1)
        assert dist.min() > CONFUSABLE, f"{layer.name} ({role}) draws a TP/FN/FP colour"


def _run_demo(viewer, qtbot):  # type: ignore[no-untyped-def]
    widget = dock(viewer, "Inference")
    widget.device.value = "cpu"
    widget.score_threshold.value = 0.2
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    assert widget.result is not None, widget.status.text()
    return widget


def test_each_task_shows_its_layers_in_its_own_colours_with_a_legend(
    viewer, qtbot, tiny_synth_dir: Path
) -> None:
    viewer.open(str(first_annotated_series(tiny_synth_dir)), plugin=PLUGIN)
    mask_qa = dock(viewer, "Mask QA")
    mask_qa.select_nodule(0)
    assert all(_visible(viewer, role) for role in MASK_QA_ROLES)
    assert not _visible(viewer, "growth") and not _visible(viewer, "probes")
    text = viewer.canvas.overlays.text.text
    assert "blue: mask grown from the points" in text and "green" not in text
    # the true shapes are violet at their voxels, not a label colour that may be green or red
    truth = layer_with_role(viewer, "truth")
    voxel = tuple(np.argwhere(np.asarray(truth.data) > 0)[0])
    assert truth.colormap.map(np.array([truth.data[voxel]]))[0][:3] == pytest.approx(
        np.array((180, 120, 255)) / 255.0, abs=1e-3
    )

    mask_qa.replay.toggle()  # growth replay: its box and probes, not the Mask QA boxes
    mask_qa.replay.stop()
    assert _visible(viewer, "growth") and _visible(viewer, "probes") and _visible(viewer, "mask")
    assert not _visible(viewer, "boxes") and not _visible(viewer, "nodules")
    _assert_no_error_colours(viewer)

    inference = _run_demo(viewer, qtbot)  # Inference: errors and candidates only
    assert all(_visible(viewer, role) for role in INFERENCE_ROLES)
    for role in (*MASK_QA_ROLES, "growth", "probes", "prediction", "probability"):
        assert not _visible(viewer, role), role
    errors = layer_with_role(viewer, "error")
    tp = tuple(np.argwhere(np.asarray(errors.data) == ERROR_TP)[0])
    assert errors.colormap.map(np.array([errors.data[tp]]))[0][:3] == pytest.approx(
        np.array(TP_RGB) / 255.0, abs=1e-3
    )
    text = viewer.canvas.overlays.text.text
    assert "green TP, orange FN (missed), red FP voxels" in text and "blue" not in text
    _assert_no_error_colours(viewer)

    layer_with_role(viewer, "mask").visible = True  # the user can turn any layer back on
    inference.score_threshold.value = 0.3  # ... and it stays on while the task goes on
    assert _visible(viewer, "mask") and "blue: mask" in viewer.canvas.overlays.text.text

    mask_qa.select_nodule(1)  # back to Mask QA: the inference layers go
    assert not any(_visible(viewer, role) for role in INFERENCE_ROLES)


def test_candidate_table_greys_rows_below_the_threshold_and_follows_the_view(
    viewer, qtbot, tiny_synth_dir: Path
) -> None:
    from napari_lunaseg._inference_model import CANDIDATE_HEADERS
    from napari_lunaseg._viewer_utils import nodule_view_mm

    viewer.open(str(first_annotated_series(tiny_synth_dir)), plugin=PLUGIN)
    widget = _run_demo(viewer, qtbot)
    table, candidates = widget.table, widget.result.candidates
    assert len(candidates) >= 2
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers == list(CANDIDATE_HEADERS)
    truth_column, slice_column = headers.index("truth"), headers.index("slice")
    assert not table.isColumnHidden(truth_column)
    outcomes = [table.item(r, truth_column).text() for r in range(table.rowCount())]
    assert set(outcomes) <= {"TP", "FP", "unscored"} and "TP" in outcomes
    for row, c in enumerate(candidates):
        assert int(table.item(row, slice_column).text()) == round(c.center_irc[0])

    cut = (candidates[0].probability + candidates[-1].probability) / 2
    widget.score_threshold.value = cut
    below = [r for r, c in enumerate(candidates) if c.probability < cut]
    above = [r for r, c in enumerate(candidates) if c.probability >= cut]
    assert below and above
    grey = table.item(below[0], 0).foreground().color().getRgb()[:3]
    normal = table.item(above[0], 0).foreground().color().getRgb()[:3]
    assert grey == (150, 150, 150) and normal != grey

    table.selectRow(0)  # a row jumps to its candidate with the nodule zoom
    canvas = min(viewer.canvas.size)
    expected = canvas / nodule_view_mm(candidates[0].diameter_mm)
    assert viewer.scene.camera.zoom == pytest.approx(expected)
    # the user moves the view onto another candidate: its row follows
    other = candidates[-1]
    x, y, z = other.center_xyz_mm
    viewer.scene.camera.center = (y, x)
    point = list(viewer.dims.point)
    point[0] = z
    viewer.dims.point = point
    assert table.currentRow() == len(candidates) - 1


def test_the_error_layer_uses_the_runs_reviewed_truth_not_the_mask_qa_slider(
    viewer, qtbot, tiny_synth_dir: Path, tmp_path: Path
) -> None:
    from src_train.masks import DEFAULT_THRESHOLD_HU, REFERENCE_METHOD, build_masks
    from src_train.reviews import REJECTED, record_verdict, reviews_dir

    root = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, root)
    folder = LunaFolder(root)
    uid = next(u for u in folder.series_uids if len(folder.nodules(u)) >= 2)
    rejected = folder.nodules(uid)[0]
    reviews_dir(root).mkdir(parents=True, exist_ok=True)
    record_verdict(
        reviews_dir(root), uid, rejected.center_xyz_mm, rejected.diameter_mm, REJECTED, "Ann", ""
    )
    viewer.open(str(folder.series_path(uid)), plugin=PLUGIN)
    mask_qa = dock(viewer, "Mask QA")
    mask_qa.threshold.value = -200  # the slider shows other masks than the run's
    mask_qa.update_details()
    widget = _run_demo(viewer, qtbot)
    widget.score_threshold.value = 0.0
    errors = np.asarray(layer_with_role(viewer, "error").data)
    truth = np.isin(errors, (ERROR_TP, ERROR_FN))

    ct = folder.load(uid)
    kept = [n for n in folder.nodules(uid) if n is not rejected and n.is_nodule]
    canonical, turn = ct.canonical()
    expected, _ = build_masks(
        canonical, kept, DEFAULT_THRESHOLD_HU, REFERENCE_METHOD, on_outside="skip"
    )
    np.testing.assert_array_equal(truth, turn.to_file(expected))
    rejected_mask, _ = build_masks(ct, [rejected], DEFAULT_THRESHOLD_HU, REFERENCE_METHOD)
    assert not (truth & rejected_mask & ~turn.to_file(expected)).any()
    assert not np.array_equal(truth, np.asarray(mask_qa.mask_layer.data, dtype=bool))
    assert (errors == ERROR_FP).any() or (errors == ERROR_TP).any()
    assert "with the folder's reviews" in widget.metrics_label.text()


def test_growth_slider_counts_steps_as_the_text_does(viewer, tiny_synth_dir: Path) -> None:
    viewer.open(str(first_annotated_series(tiny_synth_dir)), plugin=PLUGIN)
    mask_qa = dock(viewer, "Mask QA")
    mask_qa.select_nodule(0)
    replay, steps = mask_qa.replay, len(mask_qa.state.records[0].steps)
    assert (replay.step.min, replay.step.max) == (1, steps)
    replay.step.value = replay.step.max
    assert f"step {replay.step.value}/{steps}:" in replay.text.text()
    replay.step.value = 1
    assert f"step 1/{steps}:" in replay.text.text()


def test_mask_qa_table_follows_the_review_and_zooms_alike(
    viewer, qtbot, tiny_synth_dir: Path, tmp_path: Path
) -> None:
    from napari_lunaseg._viewer_utils import nodule_view_mm

    root = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, root)
    folder = LunaFolder(root)
    uid = next(u for u in folder.series_uids if len(folder.nodules(u)) >= 3)
    viewer.open(str(folder.series_path(uid)), plugin=PLUGIN)
    mask_qa = dock(viewer, "Mask QA")
    panel = mask_qa.review
    mask_qa.select_nodule(0)
    panel.set_active(True)
    assert _visible(viewer, "review box") and not _visible(viewer, "boxes")
    panel.go_to(0)
    panel.next()
    assert panel.index == 1 and mask_qa.table.currentRow() == 1
    record = mask_qa.state.records[1]
    canvas = min(viewer.canvas.size)
    expected = canvas / nodule_view_mm(record.nodule.diameter_mm)
    assert viewer.scene.camera.zoom == pytest.approx(expected)
    mask_qa.select_nodule(2)  # Mask QA zooms the same way
    expected = canvas / nodule_view_mm(mask_qa.state.records[2].nodule.diameter_mm)
    assert viewer.scene.camera.zoom == pytest.approx(expected)
    panel.set_active(False)


def test_3d_view_drops_the_slice_caption_and_shows_the_whole_volume_unsaturated(
    viewer, tiny_synth_dir: Path
) -> None:
    from napari_lunaseg._viewer_utils import follow_ct_slices

    viewer.open(str(first_annotated_series(tiny_synth_dir)), plugin=PLUGIN)
    ct = layer_with_role(viewer, "ct")
    follow_ct_slices(viewer, ct)
    mask_qa = dock(viewer, "Mask QA")
    mask_qa.select_nodule(0)  # zoomed on one nodule
    assert viewer.canvas.overlays.text.text.startswith("slice ")
    nodule_zoom = viewer.scene.camera.zoom
    viewer.dims.ndisplay = 3
    assert "slice" not in viewer.canvas.overlays.text.text
    assert ct.rendering == "mip" and tuple(ct.contrast_limits) == MIP_WINDOW_HU
    assert viewer.scene.camera.zoom < nodule_zoom / 2  # the whole volume, not the close-up
    viewer.dims.ndisplay = 2
    assert tuple(ct.contrast_limits) == LUNG_WINDOW_HU
    assert viewer.canvas.overlays.text.text.startswith("slice ")


def test_a_scan_opened_through_file_open_counts_its_slices_like_lunaseg_view(
    viewer, tiny_synth_dir: Path
) -> None:
    from napari_lunaseg._layers import layer_info
    from napari_lunaseg._screen import screen_for

    path = first_annotated_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)  # what File > Open does: no follow_ct_slices call
    ct = layer_with_role(viewer, "ct")
    n_slices = ct.data.shape[0]
    z = sorted(float(ct.data_to_world((i, 0.0, 0.0))[0]) for i in (0, n_slices - 1))
    step = (z[1] - z[0]) / (n_slices - 1)
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")
    assert np.allclose(tuple(viewer.dims.range[0]), (z[0], z[1], step))
    assert viewer.dims.nsteps[0] == n_slices  # one slider step per slice
    viewer.dims.set_current_step(0, 2)
    text = viewer.canvas.overlays.text.text
    index = int(np.round(ct.world_to_data(viewer.dims.point[-3:])[0]))
    assert text.startswith(f"slice {index} of 0-{n_slices - 1} ")
    # opening the same series again follows the new CT layer, once
    viewer.open(str(path), plugin=PLUGIN)
    cts = [ly for ly in viewer.layers if layer_info(ly).get("role") == "ct"]
    assert len(cts) == 2 and screen_for(viewer).followed[0] is cts[-1]
    assert viewer.dims.nsteps[0] == n_slices


def test_the_sample_from_file_open_sample_counts_its_slices_too(viewer) -> None:
    viewer.open_sample(PLUGIN, "synthetic_chest_ct")
    ct = layer_with_role(viewer, "ct")
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")
    assert viewer.dims.nsteps[0] == ct.data.shape[0]
    assert viewer.canvas.overlays.text.text.startswith("slice ")
