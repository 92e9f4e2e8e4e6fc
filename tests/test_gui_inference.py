"""GUI tests of the inference widget: results as layers, colours, cancel, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, dock, first_annotated_series
from conftest import layer_with_role as _role

from src_train.colors import ERROR_FN, ERROR_FP, ERROR_TP, FN_RGB, FP_RGB, TP_RGB
from src_train.commands.infer_folder import DEMO_CHECKPOINT
from src_train.records.truth import SPLIT_LABELS

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
    inside = mask & predicted
    assert inside.any(), "the demo checkpoint should find some nodule voxels"
    # every candidate shown: the most probable nodule voxel is a true positive
    widget.score_threshold.value = widget.score_threshold.min
    errors = _role(viewer, "error")
    voxel = np.unravel_index(np.argmax(np.where(inside, prob.data, -1)), inside.shape)
    assert errors.data[voxel] == ERROR_TP
    expected = {ERROR_TP: TP_RGB, ERROR_FN: FN_RGB, ERROR_FP: FP_RGB}
    for value, rgb in expected.items():
        colour = errors.colormap.map(np.array([value]))[0]
        np.testing.assert_allclose(colour[:3], np.array(rgb) / 255, atol=1e-3)
    tp_rgba = errors.colormap.map(np.array([errors.data[voxel]]))[0]
    assert tp_rgba[1] > 0.7 and tp_rgba[0] < 0.1  # a TP voxel is green
    assert "recall" in widget.metrics_label.text()
    assert widget.table.rowCount() == len(widget.result.candidates)
    if max(c.probability for c in widget.result.candidates) < widget.score_threshold.max:
        widget.score_threshold.value = widget.score_threshold.max  # no candidate shown
        assert _role(viewer, "error").data[voxel] == ERROR_FN  # the error layer follows
        widget.score_threshold.value = widget.score_threshold.min
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


def test_mirror_box_reaches_the_core_and_the_result_line(
    viewer, widget, qtbot, monkeypatch, tiny_synth_dir: Path, untrained_checkpoint: Path
) -> None:
    import napari_lunaseg._inference as inference

    asked: list[bool] = []
    real_job = inference.inference_job

    def recording_job(ct, checkpoint, options, *args):
        asked.append(options.mirror)
        return (yield from real_job(ct, checkpoint, options, *args))

    monkeypatch.setattr(inference, "inference_job", recording_job)
    _open_first(viewer, tiny_synth_dir)
    widget.checkpoint.value = str(untrained_checkpoint)
    widget.device.value = "cpu"
    assert widget.mirror.value is False  # off by default: it doubles the model time
    for mirror in (True, False):
        widget.mirror.value = mirror
        widget.run_button.native.click()
        qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
        assert widget.result is not None
        assert ("(mirrored left-right)" in widget.status.text()) is mirror
    assert asked == [True, False]


def test_the_probability_threshold_follows_the_chosen_checkpoint(widget, tmp_path) -> None:
    from src_train.model import ModelConfig, build_model, load_checkpoint, save_checkpoint
    from src_train.records.threshold import checkpoint_threshold

    demo = checkpoint_threshold(load_checkpoint(DEMO_CHECKPOINT))
    assert widget.threshold.value == pytest.approx(demo)
    config = ModelConfig()
    low = tmp_path / "low.pt"
    save_checkpoint(low, build_model(config), config, train_config={"detection_threshold": 0.35})
    widget.checkpoint.value = str(low)
    assert widget.threshold.value == pytest.approx(0.35)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    widget.checkpoint.value = str(broken)  # unreadable: the value stays, Run will say why
    assert widget.threshold.value == pytest.approx(0.35)


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


def _demo_as_run_checkpoint(path: Path, train: list[str]) -> Path:
    """The demo weights in a checkpoint whose run trained on ``train``."""
    from src_train.model import build_model, load_checkpoint, save_checkpoint
    from src_train.records.contract import CONTRACT_KEY, DataContract

    demo = load_checkpoint(DEMO_CHECKPOINT)
    model = build_model(demo.model_config)
    model.load_state_dict(demo.model_state)
    contract = DataContract(tuple(train), (), {"mask_method": "grow", "threshold_hu": -700}, {})
    extra = {**demo.extra, CONTRACT_KEY: contract.to_dict()}
    save_checkpoint(path, model, demo.model_config, train_config=demo.train_config, extra=extra)
    return path


def test_score_threshold_drives_points_and_errors_and_training_series_are_flagged(
    viewer, widget, qtbot, tmp_path: Path, tiny_synth_dir: Path
) -> None:
    from src_train.luna import LunaFolder

    series = first_annotated_series(tiny_synth_dir)
    uid = series.name[: -len(".mhd")]
    others = [u for u in LunaFolder(tiny_synth_dir).series_uids if u != uid]
    _open_first(viewer, tiny_synth_dir)
    widget.checkpoint.value = str(_demo_as_run_checkpoint(tmp_path / "run.pt", [uid, *others]))
    widget.device.value = "cpu"
    widget.score_threshold.value = 0.0
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    assert f"checkpoint's {SPLIT_LABELS['train']}: the model was trained" in widget.status.text()
    scores = [c.probability for c in widget.result.candidates]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 2
    assert widget.table.rowCount() == len(scores)
    assert float(widget.table.item(0, 3).text()) == pytest.approx(scores[0], abs=1e-3)
    points = _role(viewer, "candidates")
    assert len(points.data) == len(scores)
    errors = _role(viewer, "error")
    assert (errors.data == ERROR_FP).any() or (errors.data == ERROR_TP).any()

    # only the top candidate: the points and the predicted voxels of the error layer follow
    widget.score_threshold.value = (scores[0] + scores[1]) / 2 if scores[1] < scores[0] else 1.0
    shown = widget.shown_candidates()
    assert len(_role(viewer, "candidates").data) == len(shown) < len(scores)
    errors = _role(viewer, "error").data
    predicted = (errors == ERROR_TP) | (errors == ERROR_FP)
    assert predicted.sum() <= sum(c.voxel_count for c in shown)
    if scores[0] < 1.0:  # above every score: nothing predicted, every nodule voxel missed
        widget.score_threshold.value = 1.0
        assert not widget.shown_candidates()
        errors = _role(viewer, "error").data
        assert not ((errors == ERROR_TP) | (errors == ERROR_FP)).any()
        assert (errors == ERROR_FN).any() and "nodule recall 0/" in widget.metrics_label.text()
