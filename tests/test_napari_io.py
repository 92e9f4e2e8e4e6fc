"""Reader and writer contributions without a viewer: what napari would get, geometry kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src_train.ct import Geometry, load_ct, save_volume

FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_get_reader_accepts_series_and_declines_others(tmp_path: Path) -> None:
    from napari_lunaseg._reader import get_reader

    for name in ("a.mhd", "a.nii", "a.nii.gz", "a.nrrd"):
        assert get_reader(str(tmp_path / name)) is not None, name
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "photo.png")) is None
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    assert get_reader(str(dicom)) is None  # empty folder: not a series
    (dicom / "IM0001.dcm").write_bytes(b"")
    assert get_reader(str(dicom)) is None  # named like DICOM but no header: nothing to open
    # a LUNA16-layout folder opens (its most-annotated series; the core's series_to_open)
    luna = tmp_path / "luna"
    geometry = Geometry((3, 8, 8), (0.0, 0.0, 0.0), (1.0, 1.0, 2.0))
    save_volume(np.zeros((3, 8, 8), np.int16), geometry, luna / "subset0" / "1.2.mhd")
    assert get_reader(str(luna)) is not None and get_reader(str(luna / "subset0")) is not None


@pytest.mark.parametrize("direction", [IDENTITY, FLIPPED])
def test_series_layers_carry_geometry(tmp_path: Path, direction) -> None:
    from napari.layers import Layer

    from napari_lunaseg._layers import geometry_from_layer
    from napari_lunaseg._reader import read_series

    geometry = Geometry((5, 9, 7), (-3.0, 4.0, 50.0), (0.8, 0.9, 2.5), direction)
    hu = np.arange(5 * 9 * 7, dtype=np.int16).reshape(5, 9, 7)
    path = save_volume(hu, geometry, tmp_path / "scan.nrrd")
    (data, kwargs, layer_type) = read_series(str(path))[0]
    assert layer_type == "image"
    layer = Layer.create(data, kwargs, layer_type)
    assert geometry_from_layer(layer) == geometry
    irc = np.array([4.0, 1.0, 6.0])
    np.testing.assert_allclose(np.asarray(layer.data_to_world(irc))[::-1], geometry.irc_to_xyz(irc))


@pytest.mark.parametrize("direction", [IDENTITY, FLIPPED])
def test_writer_keeps_geometry_of_a_foreign_labels_layer(tmp_path: Path, direction) -> None:
    """A labels layer drawn by the user (no LunaSeg metadata) is written in the CT's frame."""
    from napari.layers import Labels

    from napari_lunaseg._writer import write_labels

    geometry = Geometry((4, 6, 8), (10.0, -20.0, 30.0), (0.7, 0.7, 2.0), direction)
    labels = np.zeros(geometry.shape_irc, dtype=np.uint8)
    labels[1:3, 2:4, 3:6] = 1
    layer = Labels(labels, affine=geometry.affine_irc_to_zyx())
    written = write_labels(str(tmp_path / "drawn.nii.gz"), layer.data, layer._get_state())
    back = load_ct(written[0])
    np.testing.assert_allclose(back.geometry.origin_xyz_mm, geometry.origin_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(back.geometry.spacing_xyz_mm, geometry.spacing_xyz_mm, atol=1e-5)
    np.testing.assert_allclose(back.geometry.direction, geometry.direction, atol=1e-6)
    np.testing.assert_array_equal(back.hu, labels)


def test_writer_refuses_unknown_ending(tmp_path: Path) -> None:
    from napari.layers import Labels

    from napari_lunaseg._writer import write_labels

    layer = Labels(np.zeros((2, 3, 4), dtype=np.uint8))
    assert write_labels(str(tmp_path / "mask.tif"), layer.data, layer._get_state()) == []
    assert not (tmp_path / "mask.tif").exists()


def _write_dicom_series(folder: Path, hu: np.ndarray, geometry: Geometry) -> None:
    """One CT slice per file, with the tags a DICOM reader needs to stack them."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(hu)
    geometry.apply_to(image)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    folder.mkdir()
    for k in range(hu.shape[0]):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.7.2",
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(k + 1),
            "0018|0050": f"{geometry.spacing_xyz_mm[2]}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        writer.Execute(plane)


def test_reader_opens_a_dicom_folder(tmp_path: Path) -> None:
    from napari_lunaseg._reader import get_reader

    geometry = Geometry((5, 8, 9), (1.0, 2.0, 3.0), (0.7, 0.8, 2.5), IDENTITY)
    hu = (np.arange(5 * 8 * 9) % 300 - 100).astype(np.int16).reshape(5, 8, 9)
    _write_dicom_series(tmp_path / "series", hu, geometry)
    reader = get_reader(str(tmp_path / "series"))
    assert reader is not None
    ((data, kwargs, layer_type),) = reader(str(tmp_path / "series"))
    assert layer_type == "image"
    np.testing.assert_array_equal(data, hu)
    np.testing.assert_allclose(kwargs["affine"], geometry.affine_irc_to_zyx(), atol=1e-4)
