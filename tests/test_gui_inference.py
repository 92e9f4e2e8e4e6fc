"""GUI tests of the inference widget: results as layers, colours, cancel, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, dock, first_annotated_series
from conftest import layer_with_role as _role

from src_train.colors import ERROR_FN, ERROR_FP, ERROR_TP, FN_RGB, FP_RGB, TP_RGB
from src_train.infer import DEMO_CHECKPOINT

pytestmark = pytest.mark.gui

JOB_TIMEOUT_MS = 120_000


def _open_first(viewer, folder: Path) -> None:
    viewer.open(str(first_annotated_series(folder)), plugin=PLUGIN)


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A valid checkpoint of an untrained U-Net (for tests that do not look at its output)."""
    import torch

    from src_train.model import ModelConfig, build_model, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig()
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(path, build_model(config), config)
    return path


@pytest.fixture
def widget(viewer):
    return dock(viewer, "Inference")


def _notifications_since(before: int) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[before:]]


def _n_notifications() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def test_demo_checkpoint_colours_errors(viewer, widget, qtbot, tiny_synth_dir: Path) -> None:
    if not Path(DEMO_CHECKPOINT).is_file():
        pytest.fail(f"the shipped demo checkpoint {DEMO_CHECKPOINT} is missing")
    _open_first(viewer, tiny_synth_dir)
    assert Path(str(widget.checkpoint.value)) == Path(DEMO_CHECKPOINT)  # the default choice
    widget.device.value = "cpu"
    widget.run_button.native.click()  # press Run
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)

    prob, pred, errors = _role(viewer, "probability"), _role(viewer, "prediction"), None
    errors = _role(viewer, "error")
    assert prob is not None and pred is not None and errors is not None
    mask = _role(viewer, "mask").data.astype(bool)
    predicted = pred.data.astype(bool)
    np.testing.assert_array_equal(predicted, prob.data >= widget.threshold.value)
    tp = np.argwhere(mask & predicted)
    assert len(tp), "the demo checkpoint should find some nodule voxels"
    voxel = tuple(tp[len(tp) // 2])
    assert errors.data[voxel] == ERROR_TP
    expected = {ERROR_TP: TP_RGB, ERROR_FN: FN_RGB, ERROR_FP: FP_RGB}
    for value, rgb in expected.items():
        colour = errors.colormap.map(np.array([value]))[0]
        np.testing.assert_allclose(colour[:3], np.array(rgb) / 255, atol=1e-3)
    tp_rgba = errors.colormap.map(np.array([errors.data[voxel]]))[0]
    assert tp_rgba[1] > 0.7 and tp_rgba[0] < 0.1  # a TP voxel is green
    assert "recall" in widget.metrics_label.text()
    assert widget.table.rowCount() == len(widget.result.candidates)
    if widget.table.rowCount():
        widget.table.selectRow(0)
        z_mm = widget.result.candidates[0].center_xyz_mm[2]
        assert viewer.dims.point[0] == pytest.approx(z_mm, abs=3.0)


def test_cancel_leaves_no_layers(
    viewer, widget, qtbot, tiny_synth_dir: Path, untrained_checkpoint: Path
) -> None:
    _open_first(viewer, tiny_synth_dir)
    widget.checkpoint.value = str(untrained_checkpoint)
    widget.device.value = "cpu"
    widget.run_button.native.click()
    assert widget.running and widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    assert "cancelled" in widget.status.text()
    assert _role(viewer, "probability") is None
    assert widget.run_button.enabled


def test_no_image_layer_is_reported(viewer, widget) -> None:
    before = _n_notifications()
    assert widget.run() is None
    assert any("No image layer" in m for m in _notifications_since(before))


def test_foreign_checkpoint_is_reported(viewer, widget, qtbot, tmp_path, tiny_synth_dir) -> None:
    import torch

    other = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    _open_first(viewer, tiny_synth_dir)
    widget.checkpoint.value = str(other)
    before = _n_notifications()
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    assert "resnet.pt" in widget.status.text()
    assert any("not a LunaSeg checkpoint" in m for m in _notifications_since(before))
    assert _role(viewer, "probability") is None


def test_closing_viewer_stops_the_job(
    make_napari_viewer, qtbot, tiny_synth_dir: Path, untrained_checkpoint: Path
) -> None:
    viewer = make_napari_viewer(show=True)
    _open_first(viewer, tiny_synth_dir)
    widget = dock(viewer, "Inference")
    widget.checkpoint.value = str(untrained_checkpoint)
    worker = widget.run()
    finished: list[bool] = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=JOB_TIMEOUT_MS)
    assert worker.abort_requested
