"""GUI tests: reader, writer, sample data and the Mask QA widget, driven as a user would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src_train.ct import CtVolume, Geometry, load_ct, save_volume
from src_train.luna import LunaFolder
from src_train.masks import available_methods, build_masks

pytestmark = pytest.mark.gui

PLUGIN = "napari-lunaseg"


def _first_series(folder: Path) -> Path:
    luna = LunaFolder(folder)
    uid = next(u for u in luna.series_uids if luna.nodules(u))
    return luna.series_path(uid)


def _role(viewer, role: str):
    from napari_lunaseg._layers import layer_info

    return next(ly for ly in viewer.layers if layer_info(ly).get("role") == role)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer(show=True)


def test_reader_opens_series_with_nodules_and_mask(viewer, tiny_synth_dir: Path) -> None:
    path = _first_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    ct = load_ct(path)
    luna = LunaFolder(tiny_synth_dir)
    nodules = luna.nodules(ct.series_uid)

    image = _role(viewer, "ct")
    np.testing.assert_array_equal(image.data, ct.hu)
    assert tuple(image.contrast_limits) == (-1350, 150)
    # Every layer lines up in world mm: a nodule point maps back to its center voxel.
    points = _role(viewer, "nodules")
    assert len(points.data) == len(nodules)
    np.testing.assert_allclose(points.size, [n.diameter_mm for n in nodules])
    for point, nodule in zip(points.data, nodules, strict=True):
        irc = image.world_to_data(point)
        np.testing.assert_allclose(irc, ct.geometry.xyz_to_irc(nodule.center_xyz_mm), atol=1e-6)
    mask = _role(viewer, "mask")
    expected, _ = build_masks(ct, nodules)
    np.testing.assert_array_equal(mask.data.astype(bool), expected)
    assert _role(viewer, "truth").data.max() >= 1


def test_reader_places_flipped_series_in_world_mm(viewer, tmp_path: Path) -> None:
    hu = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    geometry = Geometry(
        (6, 7, 8), (10.0, -20.0, 30.0), (0.7, 0.8, 2.5), (-1, 0, 0, 0, 1, 0, 0, 0, -1)
    )
    path = save_volume(hu, geometry, tmp_path / "flipped.nii.gz")
    viewer.open(str(path), plugin=PLUGIN)
    image = _role(viewer, "ct")
    irc = np.array([5.0, 2.0, 7.0])
    world_zyx = np.asarray(image.data_to_world(irc))
    np.testing.assert_allclose(world_zyx[::-1], geometry.irc_to_xyz(irc), atol=1e-6)


@pytest.mark.parametrize("content", [b"not an image at all", b"ObjectType = Image\nNDims = 3\n"])
def test_reader_reports_corrupt_file(viewer, tmp_path: Path, content: bytes) -> None:
    from napari.utils.notifications import notification_manager

    bad = tmp_path / "broken.mhd"
    bad.write_bytes(content)
    before = len(notification_manager.records)
    viewer.open(str(bad), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    messages = [str(n.message) for n in notification_manager.records[before:]]
    assert any("broken.mhd" in m for m in messages), messages


def test_sample_data_and_mask_qa_threshold(viewer, qtbot) -> None:
    from napari_lunaseg._mask_qa import MaskQAWidget

    viewer.open_sample(PLUGIN, "synthetic_chest_ct")
    widget = MaskQAWidget(viewer)
    viewer.window.add_dock_widget(widget)
    state = widget.state
    assert state is not None
    image = _role(viewer, "ct")
    ct = CtVolume(np.asarray(image.data), widget.ct.geometry, widget.ct.series_uid)
    # The table lists every nodule with a Dice to its true shape.
    assert widget.table.rowCount() == len(state.nodules) == 5
    dice_col = widget.table_headers().index("Dice grow")
    assert all(widget.table.item(r, dice_col).text() for r in range(5))

    widget.threshold.value = -450  # as a user drags the slider
    mask_layer = _role(viewer, "mask")
    expected, _ = build_masks(ct, state.nodules, threshold_hu=-450)
    np.testing.assert_array_equal(mask_layer.data.astype(bool), expected)
    assert widget.last_update_ms is not None

    # Selecting a row jumps the view to the nodule's slice.
    widget.table.selectRow(2)
    record = state.records[2]
    z_world = record.center_xyz_mm[2]
    assert viewer.dims.point[0] == pytest.approx(z_world, abs=ct.geometry.spacing_xyz_mm[2])
    # Replaying the growth shows each step and says which side stopped it.
    widget._replay_timer.setInterval(5)  # the user sees 350 ms per step; the test needs none
    widget.play_button.native.click()
    qtbot.waitUntil(lambda: widget.step.value == widget.step.max, timeout=10_000)
    assert "stopped by" in widget.step_text.text()
    growth = next(ly for ly in viewer.layers if ly.name.endswith(" growth"))
    assert len(growth.data) >= 1

    # Another mask method: the layer follows, and each method's Dice is in the table.
    other = next(m for m in available_methods() if m != "grow")
    widget.method.value = other
    expected, _ = build_masks(ct, state.nodules, threshold_hu=-450, method=other)
    np.testing.assert_array_equal(mask_layer.data.astype(bool), expected)
    assert f"Dice {other}" in widget.table_headers()


def test_mask_export_keeps_geometry(viewer, tiny_synth_dir: Path, tmp_path: Path) -> None:
    from napari_lunaseg._mask_qa import MaskQAWidget

    path = _first_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    widget = MaskQAWidget(viewer)
    mask = _role(viewer, "mask")
    written = mask.save(str(tmp_path / "mask.mhd"), plugin=PLUGIN)
    assert written
    back = load_ct(tmp_path / "mask.mhd")
    assert back.geometry == load_ct(path).geometry
    np.testing.assert_array_equal(back.hu.astype(bool), mask.data.astype(bool))
    table = widget.export_table(tmp_path / "nodules.csv")
    assert len(table.read_text().splitlines()) == 1 + len(widget.state.records)


def test_threshold_in_3d_updates_only_the_boxes(viewer, monkeypatch, tiny_synth_dir: Path) -> None:
    """In 3-D the changed boxes are re-uploaded; the displayed volume equals a full refresh."""
    from napari_lunaseg._mask_qa import MaskQAWidget

    path = _first_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    widget = MaskQAWidget(viewer)
    viewer.dims.ndisplay = 3
    mask = _role(viewer, "mask")
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
    from napari_lunaseg._mask_qa import MaskQAWidget

    widget = MaskQAWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open(str(_first_series(tiny_synth_dir)), plugin=PLUGIN)
    qtbot.waitUntil(lambda: widget.state is not None, timeout=5000)
    masks = [ly for ly in viewer.layers if ly.name.endswith(" mask")]
    assert len(masks) == 1 and masks[0].data.base is widget.state.mask
    assert "Dice grow" in widget.table_headers()  # the true shapes were found
