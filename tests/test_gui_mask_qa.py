"""GUI tests of the Mask QA widget, opened from the plugin manifest and driven as a user would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, dock, first_annotated_series, layer_with_role

from src_train.ct import CtVolume, load_ct
from src_train.luna import TRUE_NODULE_KINDS, LunaFolder
from src_train.masks import available_methods, build_masks, mask_report

pytestmark = pytest.mark.gui


@pytest.fixture
def sample_qa(viewer):  # type: ignore[no-untyped-def]
    """The synthetic sample (one nodule of each kind) with Mask QA docked."""
    viewer.open_sample(PLUGIN, "synthetic_chest_ct")
    widget = dock(viewer, "Mask QA")
    assert widget.state is not None
    return widget


def _ct_of(widget) -> CtVolume:  # type: ignore[no-untyped-def]
    return widget.ct


def test_table_lists_every_nodule_with_its_dice(sample_qa) -> None:
    widget = sample_qa
    assert widget.table.rowCount() == len(widget.state.nodules) == len(TRUE_NODULE_KINDS)
    dice_col = widget.table_headers().index("Dice grow")
    values = [float(widget.table.item(r, dice_col).text()) for r in range(len(TRUE_NODULE_KINDS))]
    assert all(0.0 <= v <= 1.0 for v in values) and max(values) > 0.5


def test_dragging_the_threshold_updates_the_mask_layer(viewer, sample_qa) -> None:
    widget = sample_qa
    widget.threshold.value = -450  # as a user drags the slider
    expected, _ = build_masks(_ct_of(widget), widget.state.nodules, threshold_hu=-450)
    np.testing.assert_array_equal(layer_with_role(viewer, "mask").data.astype(bool), expected)
    assert widget.last_update_ms is not None


def test_selecting_a_row_jumps_and_zooms_to_the_nodule(viewer, sample_qa) -> None:
    widget = sample_qa
    zoom_before = viewer.scene.camera.zoom
    widget.table.selectRow(2)
    record = widget.state.records[2]
    spacing_z = widget.ct.geometry.spacing_xyz_mm[2]
    assert viewer.dims.point[0] == pytest.approx(record.center_xyz_mm[2], abs=spacing_z)
    np.testing.assert_allclose(
        viewer.scene.camera.center[-2:], record.center_xyz_mm[1::-1], atol=1.0
    )
    assert viewer.scene.camera.zoom > 2 * zoom_before  # a few-mm nodule fills the view


def test_replaying_growth_names_the_side_that_stopped_it(viewer, sample_qa, qtbot) -> None:
    widget = sample_qa
    widget.table.selectRow(2)
    widget.replay.interval_ms = 5  # the user sees 350 ms per step; the test needs none
    widget.replay.play_button.native.click()
    qtbot.waitUntil(lambda: widget.replay.step.value == widget.replay.step.max, timeout=10_000)
    assert "stopped by" in widget.replay.text.text()
    growth = layer_with_role(viewer, "growth")
    assert growth is not None and len(growth.data) >= 1


def test_switching_the_method_updates_layer_and_dice_columns(viewer, sample_qa) -> None:
    widget = sample_qa
    other = next(m for m in available_methods() if m != "grow")
    widget.method.value = other
    expected, _ = build_masks(_ct_of(widget), widget.state.nodules, method=other)
    np.testing.assert_array_equal(layer_with_role(viewer, "mask").data.astype(bool), expected)
    assert f"Dice {other}" in widget.table_headers()


def test_mask_qa_and_mask_report_give_the_same_dice(viewer, tiny_synth_dir: Path) -> None:
    """One pairing and one Dice in the core: the table and 'lunaseg mask-report' agree."""
    path = first_annotated_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    widget = dock(viewer, "Mask QA")
    uid = widget.ct.series_uid
    report = mask_report(LunaFolder(tiny_synth_dir))
    shown = widget.method_dice()
    assert set(shown) == set(report.methods)
    compared = 0
    for method, values in shown.items():
        by_label = {
            s.label: s.dice for s in report.nodules if s.series_uid == uid and s.method == method
        }
        for record, value in zip(widget.state.records, values, strict=True):
            truth = widget.truth.truth_of(record.nodule)
            if truth is None:
                continue
            assert value == pytest.approx(by_label[truth.label], abs=1e-12)
            compared += 1
    assert compared >= len(report.methods)


def test_nodule_table_export_has_one_row_per_nodule(viewer, tiny_synth_dir, tmp_path) -> None:
    viewer.open(str(first_annotated_series(tiny_synth_dir)), plugin=PLUGIN)
    widget = dock(viewer, "Mask QA")
    table = widget.export_table(tmp_path / "nodules.csv")
    assert len(table.read_text().splitlines()) == 1 + len(widget.state.records)


def test_threshold_in_3d_updates_only_the_boxes(viewer, monkeypatch, tiny_synth_dir: Path) -> None:
    """In 3-D the changed boxes are re-uploaded; the displayed volume equals a full refresh.

    This test fails when a napari release changes the internals ``refresh_labels_boxes``'s fast
    path uses (it then falls back to a full refresh). napari has no public view of a labels
    layer's uploaded texture, so the test reads ``_slice`` and ``_data_to_texture``.
    """
    path = first_annotated_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    widget = dock(viewer, "Mask QA")
    viewer.dims.ndisplay = 3
    mask = layer_with_role(viewer, "mask")
    full_refreshes: list[int] = []
    monkeypatch.setattr(mask, "refresh", lambda *a, **k: full_refreshes.append(1))
    widget.threshold.value = -400
    assert not full_refreshes
    ct = load_ct(path)
    expected, _ = build_masks(ct, LunaFolder(tiny_synth_dir).nodules(ct.series_uid), -400)
    np.testing.assert_array_equal(mask.data.astype(bool), expected)
    shown = np.asarray(mask._slice.image.view)
    np.testing.assert_array_equal(shown, mask.colormap._data_to_texture(np.asarray(mask.data)))


def test_widget_docked_before_opening_reuses_the_readers_layers(viewer, qtbot, tiny_synth_dir):
    widget = dock(viewer, "Mask QA")
    viewer.open(str(first_annotated_series(tiny_synth_dir)), plugin=PLUGIN)
    qtbot.waitUntil(lambda: widget.state is not None, timeout=5000)
    masks = [ly for ly in viewer.layers if ly.name.endswith(" mask")]
    assert len(masks) == 1 and masks[0].data.base is widget.state.mask
    assert "Dice grow" in widget.table_headers()  # the true shapes were found


def test_without_the_fast_path_the_mask_is_refreshed_with_public_api(
    viewer, monkeypatch, tiny_synth_dir: Path
) -> None:
    from napari_lunaseg import _viewer_utils

    viewer.open(str(first_annotated_series(tiny_synth_dir)), plugin=PLUGIN)
    widget = dock(viewer, "Mask QA")
    viewer.dims.ndisplay = 3
    mask = layer_with_role(viewer, "mask")
    monkeypatch.setattr(_viewer_utils, "_upload_boxes", lambda layer, boxes: False)
    full_refreshes: list[int] = []
    monkeypatch.setattr(mask, "refresh", lambda *a, **k: full_refreshes.append(1))
    widget.threshold.value = -400
    assert full_refreshes == [1]
