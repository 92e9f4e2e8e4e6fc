"""CT geometry (world xyz mm <-> array IRC) and volume I/O (src_train/ct.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from src_train.ct import Geometry, load_ct, save_volume, series_uid_from_path
from src_train.errors import (
    ConfigError,
    GeometryError,
    OutputExistsError,
    OutputWriteError,
    SeriesReadError,
)


def _rotation(axis_xyz: tuple[float, float, float], degrees: float) -> tuple[float, ...]:
    """Row-major 3x3 rotation about ``axis_xyz`` (Rodrigues)."""
    axis = np.asarray(axis_xyz, dtype=float)
    axis /= np.linalg.norm(axis)
    angle = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    matrix = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    return tuple(matrix.ravel())


GEOMETRIES = {
    "identity-512": Geometry((150, 512, 512), (-180.0, -175.5, -310.25), (0.7, 0.7, 2.5)),
    "flip-x": Geometry((40, 96, 80), (170.0, -160.0, 12.0), (0.65, 0.65, 1.25),
                       (-1, 0, 0, 0, 1, 0, 0, 0, 1)),
    "flip-y": Geometry((33, 70, 71), (-160.0, 170.0, -12.0), (0.8, 0.8, 2.0),
                       (1, 0, 0, 0, -1, 0, 0, 0, 1)),
    "flip-z": Geometry((17, 64, 65), (-160.0, -170.0, 120.0), (0.9, 0.9, 1.0),
                       (1, 0, 0, 0, 1, 0, 0, 0, -1)),
    "flip-xyz": Geometry((21, 45, 39), (50.0, 60.0, 70.0), (0.6, 0.75, 1.5),
                         (-1, 0, 0, 0, -1, 0, 0, 0, -1)),
    "oblique": Geometry((23, 57, 61), (-12.5, 40.0, -200.0), (0.6, 0.9, 2.2),
                        _rotation((1.0, 2.0, 0.5), 23.0)),
    "anisotropic-odd": Geometry((7, 301, 123), (0.0, 0.0, 0.0), (0.3, 1.7, 5.0)),
}  # fmt: skip


@pytest.fixture(params=sorted(GEOMETRIES), ids=sorted(GEOMETRIES))
def geometry(request: pytest.FixtureRequest) -> Geometry:
    return GEOMETRIES[request.param]


def _voxel_centers(geometry: Geometry, n: int = 500, seed: int = 0) -> np.ndarray:
    """Random integer IRC indices inside the volume, corners included."""
    rng = np.random.default_rng(seed)
    shape = np.asarray(geometry.shape_irc)
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(3, -1).T
    return np.vstack([corners, rng.integers(0, shape, size=(n, 3))])


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
def test_world_irc_round_trip_on_voxel_centers(geometry: Geometry) -> None:
    irc = _voxel_centers(geometry)
    xyz = geometry.irc_to_xyz(irc)
    back = geometry.xyz_to_irc(xyz)
    spacing_irc = np.asarray(geometry.spacing_irc_mm)
    # 1e-6 mm in the world: the index error times the voxel size
    assert np.max(np.abs(back - irc) * spacing_irc) < 1e-6
    assert np.array_equal(geometry.xyz_to_irc_index(xyz), irc)
    assert geometry.contains_irc(geometry.xyz_to_irc_index(xyz)).all()


def test_conversion_matches_simpleitk(geometry: Geometry) -> None:
    """SimpleITK is the reference: TransformIndexToPhysicalPoint takes (col, row, index)."""
    image = sitk.Image([int(s) for s in geometry.shape_irc[::-1]], sitk.sitkInt16)
    geometry.apply_to(image)
    for irc in _voxel_centers(geometry, n=20):
        expected = image.TransformIndexToPhysicalPoint([int(v) for v in irc[::-1]])
        assert np.allclose(geometry.irc_to_xyz(irc), expected, atol=1e-6)
    assert Geometry.from_sitk(image) == geometry


def test_single_point_and_batch_shapes(geometry: Geometry) -> None:
    irc = np.array([1.0, 2.0, 3.0])
    assert geometry.irc_to_xyz(irc).shape == (3,)
    assert geometry.xyz_to_irc(geometry.irc_to_xyz(irc)).shape == (3,)
    batch = np.zeros((2, 4, 3))
    assert geometry.xyz_to_irc(geometry.irc_to_xyz(batch)).shape == (2, 4, 3)


def test_known_point_identity() -> None:
    geometry = Geometry((100, 512, 512), (-200.0, -150.0, -300.0), (0.5, 0.75, 2.0))
    # voxel (index=10, row=20, col=30) -> x = -200 + 30*0.5, y = -150 + 20*0.75, z = -300 + 10*2
    assert np.allclose(geometry.irc_to_xyz([10, 20, 30]), [-185.0, -135.0, -280.0])
    assert np.allclose(geometry.xyz_to_irc([-185.0, -135.0, -280.0]), [10, 20, 30])
    # a point 0.4 voxel off the center still belongs to that voxel
    assert geometry.xyz_to_irc_index([-185.2, -134.7, -279.2]).tolist() == [10, 20, 30]


def test_known_point_flipped_axes() -> None:
    geometry = Geometry((10, 20, 30), (100.0, 50.0, 0.0), (1.0, 2.0, 3.0),
                        (-1, 0, 0, 0, -1, 0, 0, 0, 1))  # fmt: skip
    # columns run towards -x, rows towards -y
    assert np.allclose(geometry.irc_to_xyz([2, 3, 4]), [96.0, 44.0, 6.0])
    affine = geometry.affine_irc_to_zyx()
    assert np.allclose(affine @ [2, 3, 4, 1], [6.0, 44.0, 96.0, 1.0])


def test_affine_irc_to_zyx_agrees_with_irc_to_xyz(geometry: Geometry) -> None:
    irc = _voxel_centers(geometry, n=10).astype(float)
    homogeneous = np.hstack([irc, np.ones((len(irc), 1))])
    zyx = (geometry.affine_irc_to_zyx() @ homogeneous.T).T[:, :3]
    assert np.allclose(zyx[:, ::-1], geometry.irc_to_xyz(irc), atol=1e-9)


def test_contains_irc_edges() -> None:
    geometry = Geometry((5, 6, 7), (0, 0, 0), (1, 1, 1))
    inside = geometry.contains_irc(
        np.array([[0, 0, 0], [4, 5, 6], [-1, 0, 0], [5, 0, 0], [0, 6, 0]])
    )
    assert inside.tolist() == [True, True, False, False, False]


def test_geometry_dict_round_trip_and_validation(geometry: Geometry) -> None:
    assert Geometry.from_dict(geometry.to_dict()) == geometry
    assert geometry.voxel_volume_mm3 == pytest.approx(float(np.prod(geometry.spacing_xyz_mm)))
    with pytest.raises(GeometryError, match="spacing"):
        Geometry((2, 2, 2), (0, 0, 0), (1.0, 0.0, 1.0))
    with pytest.raises(GeometryError, match="direction"):
        Geometry((2, 2, 2), (0, 0, 0), (1, 1, 1), (2, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(GeometryError):
        Geometry((0, 2, 2), (0, 0, 0), (1, 1, 1))


@pytest.mark.parametrize(
    ("origin", "spacing", "direction", "match"),
    [
        ((0, 0, 0), (1.0, math.nan, 1.0), None, "spacing"),
        ((0, 0, 0), (1.0, 1.0), None, "spacing"),
        ((0, math.inf, 0), (1, 1, 1), None, "origin"),
        ((0, 0, 0), (1, 1, 1), (1, 0, 0, 0, 1, 0), "direction"),
        ((0, 0, 0), (1, 1, 1), (1, 0, 0, 0, math.nan, 0, 0, 0, 1), "direction"),
    ],
)
def test_geometry_rejects_malformed_headers(origin, spacing, direction, match) -> None:
    """Bad header values are a GeometryError naming the field, not a numpy reshape error or a
    NaN that silently poisons every conversion."""
    extra = () if direction is None else (direction,)
    with pytest.raises(GeometryError, match=match):
        Geometry((2, 2, 2), origin, spacing, *extra)


def test_geometry_from_incomplete_dict() -> None:
    data = SMALL.to_dict()
    del data["direction"]
    with pytest.raises(GeometryError, match="direction"):
        Geometry.from_dict(data)


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
def _volume(geometry: Geometry, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3072, size=geometry.shape_irc).astype(np.int16)


SMALL = Geometry((9, 14, 11), (-120.25, 33.5, -301.0), (0.71, 0.71, 1.25),
                 _rotation((0.0, 0.0, 1.0), 180.0))  # fmt: skip


@pytest.mark.parametrize(
    ("name", "compress", "data_suffix"),
    [
        ("scan.mhd", False, ".raw"),
        ("scan.mhd", True, ".zraw"),
        ("scan.nii.gz", False, None),
        ("scan.nii", False, None),
        ("scan.nrrd", False, None),
        ("scan.mha", False, None),
    ],
)
def test_save_load_round_trip(
    tmp_path: Path, name: str, compress: bool, data_suffix: str | None
) -> None:
    array = _volume(SMALL)
    path = save_volume(array, SMALL, tmp_path / name, compress=compress)
    assert path == tmp_path / name
    if data_suffix:
        assert (tmp_path / f"scan{data_suffix}").is_file()
    # nothing temporary is left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    ct = load_ct(path)
    assert ct.hu.dtype == np.int16
    assert np.array_equal(ct.hu, array)
    assert ct.series_uid == "scan"
    assert ct.shape_irc == SMALL.shape_irc
    assert np.allclose(ct.geometry.origin_xyz_mm, SMALL.origin_xyz_mm, atol=1e-4)
    assert np.allclose(ct.geometry.spacing_xyz_mm, SMALL.spacing_xyz_mm, atol=1e-5)
    assert np.allclose(ct.geometry.direction, SMALL.direction, atol=1e-5)


def test_float_and_uint8_volumes(tmp_path: Path) -> None:
    geometry = Geometry((3, 4, 5), (0, 0, 0), (1, 1, 1))
    prob = np.linspace(0, 1, 60, dtype=np.float32).reshape(3, 4, 5)
    save_volume(prob, geometry, tmp_path / "p.nrrd")
    assert load_ct(tmp_path / "p.nrrd").hu.dtype == np.float32
    labels = (np.arange(60) % 4).astype(np.uint8).reshape(3, 4, 5)
    save_volume(labels, geometry, tmp_path / "l.mhd", compress=True)
    assert np.array_equal(load_ct(tmp_path / "l.mhd").hu, labels)


def test_bool_mask_is_saved_as_uint8(tmp_path: Path) -> None:
    geometry = Geometry((3, 4, 5), (0, 0, 0), (1, 1, 1))
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1, 2, 3] = True
    save_volume(mask, geometry, tmp_path / "m.mhd", compress=True)
    image = sitk.ReadImage(str(tmp_path / "m.mhd"))
    assert image.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(image).astype(bool), mask)


def _write_dicom_series(array: np.ndarray, geometry: Geometry, folder: Path) -> None:
    """One file per slice with the tags a reader needs to restore the geometry."""
    folder.mkdir()
    image = sitk.GetImageFromArray(array)
    geometry.apply_to(image)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = np.asarray(geometry.direction).reshape(3, 3)
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1]))
    for k in range(array.shape[0]):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (
            ("0008|0060", "CT"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1"),
            ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2"),
            ("0020|0037", orientation),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in position)),
            ("0020|0013", str(k + 1)),
        ):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)


def test_dicom_folder_round_trip(tmp_path: Path) -> None:
    geometry = Geometry((5, 12, 10), (-100.0, -120.0, -50.0), (0.7, 0.8, 2.5))
    array = _volume(geometry)
    _write_dicom_series(array, geometry, tmp_path / "series")
    ct = load_ct(tmp_path / "series")
    assert ct.hu.dtype == np.int16
    assert np.array_equal(ct.hu, array)
    assert np.allclose(ct.geometry.spacing_xyz_mm, geometry.spacing_xyz_mm, atol=1e-4)
    assert np.allclose(ct.geometry.origin_xyz_mm, geometry.origin_xyz_mm, atol=1e-4)
    assert ct.series_uid == "1.2.826.0.1.3680043.2.1125.1.2"  # its SeriesInstanceUID


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    array = _volume(SMALL)
    save_volume(array, SMALL, tmp_path / "a.mhd")
    with pytest.raises(OutputExistsError, match=r"a\.mhd"):
        save_volume(np.zeros_like(array), SMALL, tmp_path / "a.mhd")
    assert np.array_equal(load_ct(tmp_path / "a.mhd").hu, array)
    save_volume(np.zeros_like(array), SMALL, tmp_path / "a.mhd", overwrite=True)
    assert not load_ct(tmp_path / "a.mhd").hu.any()


def test_save_into_unwritable_place_is_a_lunaseg_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(OutputWriteError, match=r"afile.*writable folder"):
        save_volume(_volume(SMALL), SMALL, tmp_path / "afile" / "scan.mhd")
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_save_rejects_bad_suffix_and_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scan\.png"):
        save_volume(_volume(SMALL), SMALL, tmp_path / "scan.png")
    with pytest.raises(GeometryError, match="shape"):
        save_volume(np.zeros((2, 2, 2), np.int16), SMALL, tmp_path / "scan.mhd")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# read errors name the file
# ---------------------------------------------------------------------------------------------
def test_missing_raw(tmp_path: Path) -> None:
    save_volume(_volume(SMALL), SMALL, tmp_path / "scan.mhd")
    (tmp_path / "scan.raw").unlink()
    with pytest.raises(SeriesReadError, match=r"scan\.raw.*missing"):
        load_ct(tmp_path / "scan.mhd")


def test_truncated_raw(tmp_path: Path) -> None:
    save_volume(_volume(SMALL), SMALL, tmp_path / "scan.mhd")
    raw = tmp_path / "scan.raw"
    raw.write_bytes(raw.read_bytes()[:-100])
    with pytest.raises(SeriesReadError, match=r"scan\.raw is truncated"):
        load_ct(tmp_path / "scan.mhd")


def test_corrupt_compressed_data(tmp_path: Path) -> None:
    save_volume(_volume(SMALL), SMALL, tmp_path / "scan.mhd", compress=True)
    zraw = tmp_path / "scan.zraw"
    zraw.write_bytes(b"not zlib data" * 10)
    with pytest.raises(SeriesReadError, match=r"scan\.mhd"):
        load_ct(tmp_path / "scan.mhd")


def test_header_without_data_file(tmp_path: Path) -> None:
    (tmp_path / "odd.mhd").write_text("NDims = 3\nDimSize = 2 2 2\n")
    with pytest.raises(SeriesReadError, match=r"odd\.mhd.*ElementDataFile"):
        load_ct(tmp_path / "odd.mhd")


def test_sheared_direction_in_header_names_the_file(tmp_path: Path) -> None:
    save_volume(_volume(SMALL), SMALL, tmp_path / "scan.mhd")
    header = tmp_path / "scan.mhd"
    lines = [
        "TransformMatrix = 2 0 0 0 1 0 0 0 1" if line.startswith("TransformMatrix") else line
        for line in header.read_text().splitlines()
    ]
    header.write_text("\n".join(lines) + "\n")
    with pytest.raises(GeometryError, match=r"scan\.mhd: The direction matrix"):
        load_ct(header)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(SeriesReadError, match=r"scan\.png.*unsupported"):
        load_ct(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SeriesReadError, match=r"nowhere\.mhd does not exist"):
        load_ct(tmp_path / "nowhere.mhd")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeriesReadError, match="empty"):
        load_ct(tmp_path / "empty")


def test_garbage_nifti(tmp_path: Path) -> None:
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"garbage")
    with pytest.raises(SeriesReadError, match=r"junk\.nii\.gz"):
        load_ct(path)


@pytest.mark.parametrize(
    ("name", "uid"),
    [
        ("1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260.mhd",
         "1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260"),
        ("case.nii.gz", "case"),
        ("case.NRRD", "case"),
        ("folder", "folder"),
    ],
)  # fmt: skip
def test_series_uid_from_path(name: str, uid: str) -> None:
    assert series_uid_from_path(Path("/data/subset0") / name) == uid


# ---------------------------------------------------------------------------------------------
# a data file that does not match its header is refused, whichever way it differs
# ---------------------------------------------------------------------------------------------
def test_raw_larger_than_its_header_says_is_refused_with_both_sizes(tmp_path: Path) -> None:
    """A user copies another series' .raw beside this header: refused, not read as garbage."""
    save_volume(_volume(SMALL), SMALL, tmp_path / "scan.mhd")
    raw = tmp_path / "scan.raw"
    needed = raw.stat().st_size
    assert needed == 9 * 14 * 11 * 2  # int16 voxels
    raw.write_bytes(raw.read_bytes() + b"\x00" * 512)
    with pytest.raises(SeriesReadError) as caught:
        load_ct(tmp_path / "scan.mhd")
    message = str(caught.value)
    assert str(raw) in message and "larger than its header says" in message
    assert f"{needed + 512:,} bytes" in message and f"needs {needed:,}" in message
    assert "11x14x9 MET_SHORT" in message
    assert "Re-download or re-extract" in message


def test_header_size_is_counted_and_minus_one_accepts_a_leading_block(tmp_path: Path) -> None:
    """MetaImage's HeaderSize skips bytes before the voxels; -1 means 'the voxels end the file'."""
    array = _volume(SMALL)
    save_volume(array, SMALL, tmp_path / "scan.mhd")
    header = (tmp_path / "scan.mhd").read_text()
    raw = tmp_path / "scan.raw"
    raw.write_bytes(b"\x07" * 100 + raw.read_bytes())
    for skip in ("100", "-1"):
        (tmp_path / "scan.mhd").write_text(
            header.replace("ElementDataFile", f"HeaderSize = {skip}\nElementDataFile")
        )
        assert np.array_equal(load_ct(tmp_path / "scan.mhd").hu, array)
    (tmp_path / "scan.mhd").write_text(
        header.replace("ElementDataFile", "HeaderSize = 40\nElementDataFile")
    )
    with pytest.raises(SeriesReadError, match="larger than its header says"):
        load_ct(tmp_path / "scan.mhd")
