"""GUI tests of the reader and writer contributions: what a user sees after File > Open / Save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, first_annotated_series, layer_with_role

from src_train.ct import Geometry, load_ct, save_volume
from src_train.luna import LunaFolder
from src_train.masks import build_masks

pytestmark = pytest.mark.gui


def test_reader_opens_the_ct_in_the_lung_window(viewer, tiny_synth_dir: Path) -> None:
    path = first_annotated_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    image = layer_with_role(viewer, "ct")
    np.testing.assert_array_equal(image.data, load_ct(path).hu)
    assert tuple(image.contrast_limits) == (-1350, 150)


def test_nodule_points_map_back_to_their_center_voxels(viewer, tiny_synth_dir: Path) -> None:
    path = first_annotated_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    ct = load_ct(path)
    nodules = LunaFolder(tiny_synth_dir).nodules(ct.series_uid)
    image, points = layer_with_role(viewer, "ct"), layer_with_role(viewer, "nodules")
    assert len(points.data) == len(nodules)
    np.testing.assert_allclose(points.size, [n.diameter_mm for n in nodules])
    for point, nodule in zip(points.data, nodules, strict=True):
        irc = image.world_to_data(points.data_to_world(point))  # the CT's voxel under the point
        np.testing.assert_allclose(irc, ct.geometry.xyz_to_irc(nodule.center_xyz_mm), atol=1e-6)
    world_zyx = np.asarray(points.data_to_world(points.data[0]))  # world (z, y, x) mm
    np.testing.assert_allclose(world_zyx[::-1], nodules[0].center_xyz_mm, atol=1e-6)


def test_reader_adds_the_generated_mask_and_the_true_shapes(viewer, tiny_synth_dir: Path) -> None:
    path = first_annotated_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    ct = load_ct(path)
    expected, _ = build_masks(ct, LunaFolder(tiny_synth_dir).nodules(ct.series_uid))
    np.testing.assert_array_equal(layer_with_role(viewer, "mask").data.astype(bool), expected)
    assert layer_with_role(viewer, "truth").data.max() >= 1


def test_reader_places_flipped_series_in_world_mm(viewer, tmp_path: Path) -> None:
    hu = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    geometry = Geometry(
        (6, 7, 8), (10.0, -20.0, 30.0), (0.7, 0.8, 2.5), (-1, 0, 0, 0, 1, 0, 0, 0, -1)
    )
    path = save_volume(hu, geometry, tmp_path / "flipped.nii.gz")
    viewer.open(str(path), plugin=PLUGIN)
    image = layer_with_role(viewer, "ct")
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


def test_saving_the_mask_layer_keeps_the_ct_geometry(
    viewer, tiny_synth_dir: Path, tmp_path: Path
) -> None:
    path = first_annotated_series(tiny_synth_dir)
    viewer.open(str(path), plugin=PLUGIN)
    mask = layer_with_role(viewer, "mask")
    assert mask.save(str(tmp_path / "mask.mhd"), plugin=PLUGIN)
    back = load_ct(tmp_path / "mask.mhd")
    assert back.geometry == load_ct(path).geometry
    np.testing.assert_array_equal(back.hu.astype(bool), mask.data.astype(bool))
