"""The LUNA16 layout: CSV parsing, series discovery, partial downloads, splits."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from src_train.ct import Geometry, save_volume
from src_train.errors import AnnotationError, ConfigError, SeriesNotFoundError, SeriesReadError
from src_train.luna import (
    LISTED_UIDS,
    LunaFolder,
    check_annotated_folder,
    find_luna_root,
    list_uids,
    read_annotations,
    read_candidates,
    series_to_open,
)
from src_train.records.split import split_series

#: The real LUNA16 CSVs, in ``../shared`` beside the checkout (skipped where absent).
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "luna16"
needs_real = pytest.mark.skipif(
    not (REAL / "annotations.csv").is_file(), reason="real LUNA16 CSVs not available here"
)
UID_A = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"
UID_B = "1.3.6.1.4.1.14519.5.2.1.6279.6001.265775376735520890308424143898"
UID_C = "1.3.6.1.4.1.14519.5.2.1.6279.6001.276556509002726404418399209377"
HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# the real files
# ---------------------------------------------------------------------------------------------
@needs_real
def test_real_annotations() -> None:
    nodules = read_annotations(REAL / "annotations.csv")
    assert len(nodules) == 1186
    assert len({n.series_uid for n in nodules}) == 601
    first = nodules[0]
    assert first.series_uid == UID_A
    assert first.center_xyz_mm == pytest.approx((-128.6994211, -175.3192718, -298.3875064))
    assert first.diameter_mm == pytest.approx(5.651470635)
    assert first.row == 2 and nodules[-1].row == 1187
    diameters = np.array([n.diameter_mm for n in nodules])
    assert diameters.min() == pytest.approx(3.253, abs=1e-3)
    assert diameters.max() == pytest.approx(32.27, abs=1e-2)
    assert all(n.is_nodule and n.malignant is None for n in nodules)


@needs_real
def test_real_malignancy_file() -> None:
    nodules = read_annotations(REAL / "annotations_with_malignancy.csv")
    assert len(nodules) == 1182
    # the quoted list in mal_details ("[4, 2, 4, 2]") does not shift the columns
    first = nodules[0]
    assert first.center_xyz_mm == pytest.approx((-128.6994211, -175.3192718, -298.3875064))
    assert first.diameter_mm == pytest.approx(5.651470635)
    assert first.malignant is True
    assert nodules[1].malignant is False
    flags = [n.malignant for n in nodules]
    assert set(flags) == {True, False}
    assert [n.row for n in nodules] == list(range(2, 1184))


# ---------------------------------------------------------------------------------------------
# malformed files
# ---------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"annotations\.csv does not exist"):
        read_annotations(tmp_path / "annotations.csv")


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "annotations.csv", "")
    with pytest.raises(AnnotationError, match="empty"):
        read_annotations(path)


def test_header_without_coordinates(tmp_path: Path) -> None:
    path = _write(tmp_path / "annotations.csv", "seriesuid,coordX,coordY,diameter_mm\nx,1,2,3\n")
    with pytest.raises(AnnotationError, match=r"annotations\.csv, line 1.*coordZ"):
        read_annotations(path)


def test_row_with_missing_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "annotations.csv", HEADER + f"{UID_A},1,2,3,4\n{UID_B},1,2\n")
    with pytest.raises(AnnotationError, match=r"annotations\.csv, line 3: 3 field.*coordZ"):
        read_annotations(path)


@pytest.mark.parametrize("bad", ["abc", "", "nan", "inf", "1,5"])
def test_non_numeric_coordinate(tmp_path: Path, bad: str) -> None:
    value = f'"{bad}"' if "," in bad else bad
    path = _write(tmp_path / "a.csv", HEADER + f"{UID_A},1,2,3,4\n\n{UID_A},-1.5,{value},7,4\n")
    with pytest.raises(AnnotationError, match=r"a\.csv, line 4: coordY") as info:
        read_annotations(path)
    assert "fix" in str(info.value)


def test_short_row_without_diameter_field_is_an_error(tmp_path: Path) -> None:
    """A row cut off before diameter_mm is malformed, not 'no diameter' (an empty field is)."""
    path = _write(tmp_path / "a.csv", HEADER + f"{UID_A},1,2,3,\n{UID_B},1,2,3\n")
    with pytest.raises(AnnotationError, match=r"a\.csv, line 3: 4 field.*diameter_mm"):
        read_annotations(path)


@pytest.mark.parametrize("where", ["header", "row"])
def test_non_utf8_file(tmp_path: Path, where: str) -> None:
    bad = b"\xff\xfe\x00binary"
    body = HEADER.encode() + f"{UID_A},1,2,3,4\n".encode()
    data = bad + body if where == "header" else body + bad + b",1,2,3,4\n"
    path = tmp_path / "annotations.csv"
    path.write_bytes(data)
    with pytest.raises(AnnotationError, match=r"annotations\.csv is not UTF-8 text"):
        read_annotations(path)


def test_empty_series_uid(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", HEADER + ",1,2,3,4\n")
    with pytest.raises(AnnotationError, match="line 2: empty seriesuid"):
        read_annotations(path)


def test_bad_diameter(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", HEADER + f"{UID_A},1,2,3,wide\n")
    with pytest.raises(AnnotationError, match="line 2: diameter_mm"):
        read_annotations(path)


def test_optional_diameter_and_tolerated_formatting(tmp_path: Path) -> None:
    text = (
        "\ufeffseriesuid, coordX, coordY, coordZ, diameter_mm\r\n"
        f"{UID_A}, 1.25, -2.5, 3e2, \r\n"
        "\r\n"
        f"{UID_B},-0.000000000000001,2.0000000000000004,-300.29999999999995,NaN\r\n"
        f"{UID_C},4,5,6,7.5\r\n"
    )
    nodules = read_annotations(_write(tmp_path / "a.csv", text))
    assert [n.diameter_mm for n in nodules] == [None, None, 7.5]
    assert nodules[0].center_xyz_mm == (1.25, -2.5, 300.0)
    assert nodules[1].center_xyz_mm[2] == pytest.approx(-300.3)
    assert [n.row for n in nodules] == [2, 4, 5]
    no_diameter = _write(tmp_path / "b.csv", f"seriesuid,coordX,coordY,coordZ\n{UID_A},1,2,3\n")
    assert read_annotations(no_diameter)[0].diameter_mm is None


def test_malignancy_flag_values(tmp_path: Path) -> None:
    text = (
        "seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool,mal_details\n"
        f'{UID_A},1,2,3,4,True,"[4, 2, 4, 2]"\n'
        f'{UID_A},1,2,3,4,False,"[1,\n 2]"\n'
        f"{UID_A},1,2,3,4,,\n"
        f"{UID_A},1,2,3,4,maybe,\n"
    )
    with pytest.raises(AnnotationError, match="line 6: mal_bool") as info:
        read_annotations(_write(tmp_path / "m.csv", text))
    assert "True or False" in str(info.value)
    nodules = read_annotations(_write(tmp_path / "ok.csv", "\n".join(text.splitlines()[:5])))
    assert [n.malignant for n in nodules] == [True, False, None]
    assert [n.row for n in nodules] == [2, 3, 5]  # a quoted field spanning two lines


def test_candidates(tmp_path: Path) -> None:
    text = f"seriesuid,coordX,coordY,coordZ,class\n{UID_A},1,2,3,1\n{UID_B},4,5,6,0\n"
    candidates = read_candidates(_write(tmp_path / "candidates.csv", text))
    assert [c.is_nodule for c in candidates] == [True, False]
    assert all(c.diameter_mm is None for c in candidates)
    with pytest.raises(AnnotationError, match=r"candidates\.csv, line 2: class is '2'"):
        read_candidates(_write(tmp_path / "candidates.csv", text.replace(",3,1", ",3,2")))
    with pytest.raises(AnnotationError, match="class"):
        read_candidates(_write(tmp_path / "candidates.csv", HEADER + f"{UID_A},1,2,3,4\n"))


# ---------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------
def _series(path: Path, value: int = 0) -> None:
    geometry = Geometry((3, 8, 8), (-10.0, -10.0, -50.0), (1.0, 1.0, 2.0))
    save_volume(np.full(geometry.shape_irc, value, np.int16), geometry, path)


@pytest.fixture
def partial_luna(tmp_path: Path) -> Path:
    """Annotations for A, B, C; only A (subset0) and B (subset1/subset1) downloaded."""
    root = tmp_path / "LUNA16"
    (root / "subset0").mkdir(parents=True)
    _series(root / "subset0" / f"{UID_A}.mhd", 1)
    _series(root / "subset1" / "subset1" / f"{UID_B}.mhd", 2)
    _series(root / "subset0" / "unannotated.mhd", 3)
    _write(
        root / "annotations.csv",
        HEADER + f"{UID_A},1,2,3,4\n{UID_A},5,6,7,8\n{UID_C},0,0,0,5\n{UID_B},1,1,1,6\n",
    )
    _write(
        root / "candidates.csv",
        f"seriesuid,coordX,coordY,coordZ,class\n{UID_A},1,2,3,1\n{UID_A},9,9,9,0\n",
    )
    return root


def test_partial_download(partial_luna: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="src_train.luna"):
        folder = LunaFolder(partial_luna)
    assert folder.series_uids == sorted([UID_A, UID_B, "unannotated"])
    assert folder.missing_series == [UID_C]
    (warning,) = [r.getMessage() for r in caplog.records if "not on disk" in r.getMessage()]
    assert "1 of 3 annotated series are not on disk" in warning and warning.endswith(UID_C)
    assert [n.diameter_mm for n in folder.nodules(UID_A)] == [4.0, 8.0]
    assert folder.nodules(UID_C)[0].diameter_mm == 5.0  # known, though not on disk
    by_series = folder.nodules_by_series
    assert list(by_series) == folder.series_uids
    assert by_series["unannotated"] == []
    assert int(folder.load(UID_B).hu[0, 0, 0]) == 2
    assert folder.load(UID_A).series_uid == UID_A
    with pytest.raises(SeriesNotFoundError, match=UID_C):
        folder.series_path(UID_C)
    assert [c.is_nodule for c in folder.candidates(UID_A)] == [True, False]
    assert folder.candidates(UID_B) == []
    assert not folder.has_truth and folder.truth_path(UID_A) is None
    assert folder.true_nodules(UID_A) == []


def test_many_missing_series_are_named_first_few_and_counted(
    partial_luna: Path, caplog: pytest.LogCaptureFixture
) -> None:
    absent = [f"9.9.{k}" for k in range(5)]
    with (partial_luna / "annotations.csv").open("a", encoding="utf-8") as handle:
        handle.writelines(f"{uid},0,0,0,5\n" for uid in absent)
    with caplog.at_level(logging.WARNING, logger="src_train.luna"):
        folder = LunaFolder(partial_luna)
    missing = sorted([UID_C, *absent])
    assert folder.missing_series == missing
    (warning,) = [r.getMessage() for r in caplog.records if "not on disk" in r.getMessage()]
    assert "6 of 8 annotated series" in warning
    assert warning.endswith(f"{', '.join(missing[:LISTED_UIDS])} and {6 - LISTED_UIDS} more")
    assert list_uids(missing[:2]) == f"{missing[0]}, {missing[1]}"


def test_annotations_without_diameter_column_warn_once_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(
        tmp_path / "annotations.csv",
        f"seriesuid,coordX,coordY,coordZ\n{UID_A},1,2,3\n{UID_A},4,5,6\n{UID_B},7,8,9\n",
    )
    with caplog.at_level(logging.WARNING, logger="src_train.luna"):
        nodules = read_annotations(path)
    assert [n.diameter_mm for n in nodules] == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records if "diameter_mm" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="src_train.luna"):
        read_annotations(_write(tmp_path / "b.csv", HEADER + f"{UID_A},1,2,3,\n"))
        read_candidates(_write(tmp_path / "c.csv", "seriesuid,coordX,coordY,coordZ,class\n"))
    assert not caplog.records  # an empty diameter field, or candidates, are not worth a warning


def test_malignancy_file_preferred(partial_luna: Path) -> None:
    _write(
        partial_luna / "annotations_with_malignancy.csv",
        "seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool,mal_details\n"
        f'{UID_A},1,2,3,4.5,True,"[5, 4]"\n',
    )
    folder = LunaFolder(partial_luna)
    assert [(n.diameter_mm, n.malignant) for n in folder.nodules(UID_A)] == [(4.5, True)]
    assert folder.missing_series == []


def test_folder_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SeriesNotFoundError, match="lunaseg synth"):
        LunaFolder(tmp_path / "absent")
    with caplog.at_level(logging.DEBUG, logger="src_train.luna"):
        folder = LunaFolder(tmp_path)
    assert folder.series_uids == [] and folder.nodules_by_series == {}
    assert any("no series found" in r.message for r in caplog.records)
    with pytest.raises(SeriesNotFoundError, match=r"holds no series.*lunaseg synth"):
        check_annotated_folder(folder)  # the error that commands raise instead of a warning
    (tmp_path / "subset0").mkdir()
    save_volume(
        np.zeros((3, 8, 8), np.int16), SMALL_GEOMETRY, tmp_path / "subset0" / f"{UID_A}.mhd"
    )
    with pytest.raises(AnnotationError, match=r"no annotations.csv.*every mask is empty"):
        check_annotated_folder(LunaFolder(tmp_path))
    (tmp_path / "annotations.csv").write_text(HEADER + f"{UID_A},x,2,3,4\n")
    with pytest.raises(AnnotationError, match="line 2"):
        LunaFolder(tmp_path)


def test_find_luna_root(partial_luna: Path, tmp_path: Path) -> None:
    assert find_luna_root(partial_luna / "subset0" / f"{UID_A}.mhd") == partial_luna.resolve()
    assert find_luna_root(partial_luna / "subset1" / "subset1" / f"{UID_B}.mhd") == (
        partial_luna.resolve()
    )
    (tmp_path / "loose").mkdir()
    assert find_luna_root(tmp_path / "loose" / "scan.mhd") is None
    (tmp_path / "other" / "subset0").mkdir(parents=True)
    assert find_luna_root(tmp_path / "other" / "subset0" / "scan.mhd") is None


def test_synthetic_folder_has_truth(tiny_synth_dir: Path) -> None:
    folder = LunaFolder(tiny_synth_dir)
    assert folder.has_truth
    for uid in folder.series_uids:
        truth = folder.true_nodules(uid)
        assert truth and folder.truth_path(uid) is not None
        assert len(truth) == len(folder.nodules(uid))
        assert find_luna_root(folder.series_path(uid)) == tiny_synth_dir.resolve()


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [2, 3, 5, 10])
@pytest.mark.parametrize("count", [0, 2, 3, 4, 7, 25])
def test_split_series_makes_three_disjoint_sets_covering_the_folder(
    stride: int, count: int
) -> None:
    uids = [f"1.2.{i:03d}" for i in range(count)]
    split = split_series(reversed(uids), val_stride=stride)
    sets = [set(split.train), set(split.val), set(split.test)]
    assert sorted(split.train + split.val + split.test) == uids
    assert sum(len(s) for s in sets) == count  # disjoint
    if count >= 3:
        assert all(sets), split
    elif count == 2:
        assert split.val == ("1.2.000",) and not split.test
    assert split_series(uids + uids[:3], val_stride=stride) == split  # order, duplicates
    if count and stride != 2:
        assert split.val == tuple(uids[::stride])  # the validation rule is unchanged


def test_split_series_refuses_a_stride_of_one() -> None:
    with pytest.raises(ConfigError, match="val_stride"):
        split_series(["a", "b"], val_stride=1)


# ---------------------------------------------------------------------------------------------
# rows with more values than the header: an error naming file and line, in every table
# ---------------------------------------------------------------------------------------------
def test_decimal_comma_in_a_diameter_is_an_error_not_a_rounded_size(tmp_path: Path) -> None:
    """A user exports annotations from a spreadsheet in a decimal-comma locale: 8,4 mm."""
    path = _write(tmp_path / "annotations.csv", HEADER + f"{UID_A},1,2,3,5.5\n{UID_B},1,2,3,8,4\n")
    with pytest.raises(AnnotationError) as caught:
        read_annotations(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 3: 6 values where the header has 5 columns")
    assert "'4'" in message and "decimal comma" in message


@pytest.mark.parametrize(
    ("name", "header", "good", "bad"),
    [
        (
            "annotations_with_malignancy.csv",
            "seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool,mal_details",
            f'{UID_A},1,2,3,4,True,"[4, 2]"',
            f"{UID_A},1,2,3,4,True,[4, 2]",  # the list's commas, unquoted
        ),
        (
            "candidates.csv",
            "seriesuid,coordX,coordY,coordZ,class",
            f"{UID_A},1,2,3,1",
            f"{UID_A},1,2,3,5,1",
        ),
        (
            "truth/true_nodules.csv",
            "seriesuid,label,coordX,coordY,coordZ,diameter_mm,kind,volume_mm3",
            f"{UID_A},1,1,2,3,6.5,solid,143.8",
            f"{UID_A},1,1,2,3,6,5,solid,143.8",
        ),
    ],
    ids=["malignancy", "candidates", "truth"],
)
def test_every_table_refuses_a_row_with_extra_values(
    tmp_path: Path, name: str, header: str, good: str, bad: str
) -> None:
    from src_train.luna import read_true_nodules

    read = {
        "annotations_with_malignancy.csv": read_annotations,
        "candidates.csv": read_candidates,
        "truth/true_nodules.csv": read_true_nodules,
    }[name]
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    assert len(read(_write(path, f"{header}\n{good}\n"))) == 1
    _write(path, f"{header}\n{good}\n\n{bad}\n")
    with pytest.raises(AnnotationError, match=rf"^{re.escape(str(path))}, line 4: \d+ values "):
        read(path)


def test_trailing_empty_fields_are_accepted(tmp_path: Path) -> None:
    """Spreadsheets may end each row with a comma: no value is lost, so no error."""
    path = _write(tmp_path / "a.csv", HEADER + f"{UID_A},1,2,3,4.5,,\n")
    (nodule,) = read_annotations(path)
    assert nodule.diameter_mm == 4.5 and nodule.center_xyz_mm == (1.0, 2.0, 3.0)


@needs_real
def test_real_files_have_no_extra_values() -> None:
    """The rule holds on the real files: every row of both has as many values as the header."""
    assert len(read_annotations(REAL / "annotations.csv")) == 1186
    assert len(read_annotations(REAL / "annotations_with_malignancy.csv")) == 1182


# ---------------------------------------------------------------------------------------------
# a series is a series, whatever its format: one discovery rule for every folder command
# ---------------------------------------------------------------------------------------------
UID_DICOM = "1.2.826.0.1.3680043.8.498.10221120449153914452128186436173651"
SMALL_GEOMETRY = Geometry((3, 8, 8), (-10.0, -10.0, -50.0), (1.0, 1.0, 2.0))


def _dicom_series(folder: Path, series_uid: str, value: int = 0) -> np.ndarray:
    """A CT series as one DICOM file per slice carrying ``series_uid``; returns its HU."""
    import SimpleITK as sitk

    hu = (np.arange(np.prod(SMALL_GEOMETRY.shape_irc)) % 50 + value).astype(np.int16)
    hu = hu.reshape(SMALL_GEOMETRY.shape_irc)
    image = sitk.GetImageFromArray(hu)
    SMALL_GEOMETRY.apply_to(image)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # the files have no ending to guess it from
    folder.mkdir(parents=True)
    for k in range(hu.shape[0]):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, text in (
            ("0008|0060", "CT"),
            ("0020|000d", "1.2.826.0.1.3680043.8.498.1"),
            ("0020|000e", series_uid),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0032", "\\".join(f"{v:.4f}" for v in position)),
            ("0020|0013", str(k + 1)),
        ):
            plane.SetMetaData(tag, text)
        writer.SetFileName(str(folder / f"IM{k:04d}"))  # many exports use no ending
        writer.Execute(plane)
    return hu


@pytest.fixture
def mixed_luna(tmp_path: Path) -> Path:
    """A LUNA16-layout folder holding one series in each format LunaSeg reads, plus things
    that are not series: true shapes, data files, a notes folder, a temporary folder."""
    import SimpleITK as sitk

    root = tmp_path / "LUNA16"
    for k, name in enumerate(["s.mhd", "s.mha", "s.nii", "s.nii.gz", "s.nrrd"]):
        _series(root / f"subset{k}" / name.replace("s.", f"uid{k}."), k)
    image = sitk.GetImageFromArray(np.full(SMALL_GEOMETRY.shape_irc, 5, np.int16))
    SMALL_GEOMETRY.apply_to(image)
    (root / "subset5").mkdir()
    sitk.WriteImage(image, str(root / "subset5" / "uid5.nhdr"))  # + uid5.raw beside it
    _dicom_series(root / "subset6" / "patient-0042", UID_DICOM, value=100)
    _series(root / "truth" / "uid0.mhd", 1)  # true shapes: never a series
    (root / "subset0" / "notes").mkdir()
    _write(root / "subset0" / "notes" / "README", "how this folder was made")
    _series(root / "subset0" / ".lunaseg-tmp" / "half.mhd")  # an interrupted write
    annotated = [f"uid{k}" for k in range(6)] + [UID_DICOM]
    _write(root / "annotations.csv", HEADER + "".join(f"{u},0,0,0,4\n" for u in annotated))
    return root


def test_a_luna_folder_in_every_format_lists_every_series(
    mixed_luna: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's LUNA16 folder holds .mhd, .mha, NIfTI, NRRD and a DICOM series: each is found,
    none is reported missing, and the DICOM series is known by its SeriesInstanceUID."""
    with caplog.at_level(logging.WARNING, logger="src_train.luna"):
        folder = LunaFolder(mixed_luna)
    expected = sorted([f"uid{k}" for k in range(6)] + [UID_DICOM])
    assert folder.series_uids == expected
    assert folder.missing_series == []
    assert folder.series_path(UID_DICOM) == mixed_luna / "subset6" / "patient-0042"
    assert folder.series_path("uid3") == mixed_luna / "subset3" / "uid3.nii.gz"
    assert [int(folder.load(f"uid{k}").hu[0, 0, 0]) for k in range(6)] == [0, 1, 2, 3, 4, 5]
    dicom = folder.load(UID_DICOM)
    assert dicom.series_uid == UID_DICOM
    assert int(dicom.hu[0, 0, 0]) == 100 and dicom.shape_irc == SMALL_GEOMETRY.shape_irc
    assert [n.series_uid for n in folder.nodules(UID_DICOM)] == [UID_DICOM]
    messages = [r.getMessage() for r in caplog.records]
    (ignored,) = [m for m in messages if "hold no series" in m]
    assert str(mixed_luna / "subset0" / "notes") in ignored and ".lunaseg-tmp" not in ignored
    assert not [m for m in messages if "not on disk" in m or "more than once" in m]
    for uid in expected:
        assert find_luna_root(folder.series_path(uid)) == mixed_luna.resolve()


def test_cli_mask_on_a_folder_in_every_format_writes_every_mask(
    mixed_luna: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lunaseg mask DATA` on that folder: a mask per series, none "not on disk"."""
    from src_train.cli import main

    out = mixed_luna.parent / "masks"
    assert main(["mask", str(mixed_luna), "--out", str(out), "--skip-outside"]) == 0
    printed = capsys.readouterr().out
    assert "not on disk" not in printed
    assert (out / f"{UID_DICOM}_mask.mhd").is_file()
    assert sorted(p.name for p in out.glob("*_mask.mhd")) == sorted(
        f"{uid}_mask.mhd" for uid in [*(f"uid{k}" for k in range(6)), UID_DICOM]
    )


def test_dicom_series_is_named_by_its_uid_not_its_folder(tmp_path: Path) -> None:
    """A DICOM series opened on its own carries its SeriesInstanceUID, so candidates written
    for it form a valid LUNA16 submission whatever the folder is called."""
    from src_train.ct import load_ct, series_uid_of

    hu = _dicom_series(tmp_path / "CT_chest_2019", UID_DICOM)
    assert series_uid_of(tmp_path / "CT_chest_2019") == UID_DICOM
    ct = load_ct(tmp_path / "CT_chest_2019")
    assert ct.series_uid == UID_DICOM and np.array_equal(ct.hu, hu)
    assert series_uid_of(tmp_path / "nowhere") is None
    (tmp_path / "text").mkdir()
    _write(tmp_path / "text" / "IM0001", "not DICOM")
    assert series_uid_of(tmp_path / "text") is None


def test_a_folder_of_two_dicom_series_reads_the_one_asked_for(tmp_path: Path) -> None:
    from src_train.ct import load_ct
    from src_train.errors import SeriesReadError

    both = tmp_path / "both"
    _dicom_series(both / "a", "1.2.3.1", value=10)
    _dicom_series(both / "b", "1.2.3.2", value=20)
    for part in ("a", "b"):
        for f in (both / part).iterdir():
            f.rename(both / f"{part}-{f.name}")
    assert int(load_ct(both, series_uid="1.2.3.2").hu[0, 0, 0]) == 20
    assert int(load_ct(both, series_uid="1.2.3.1").hu[0, 0, 0]) == 10
    with pytest.raises(SeriesReadError, match=r"holds no DICOM series 9\.9; it holds 1\.2\.3\.1"):
        load_ct(both, series_uid="9.9")


def test_the_same_series_twice_is_warned_once_and_read_from_its_first_path(
    partial_luna: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user converted some scans to NIfTI beside the originals: one warning, no double count."""
    _series(partial_luna / "subset3" / f"{UID_A}.nii.gz", 9)
    _series(partial_luna / "subset3" / "unannotated.nrrd", 9)
    with caplog.at_level(logging.WARNING, logger="src_train.luna"):
        folder = LunaFolder(partial_luna)
    assert folder.series_uids == sorted([UID_A, UID_B, "unannotated"])
    assert folder.series_path(UID_A) == partial_luna / "subset0" / f"{UID_A}.mhd"
    (warning,) = [r.getMessage() for r in caplog.records if "more than once" in r.getMessage()]
    assert warning.startswith(f"{partial_luna}: 2 series found more than once")
    assert f"{UID_A} at {partial_luna / 'subset0' / f'{UID_A}.mhd'}" in warning
    assert str(partial_luna / "subset3" / f"{UID_A}.nii.gz") in warning


def test_listing_reads_no_voxel_data(tmp_path: Path) -> None:
    """Listing 888 series opens no data file (here every .raw is absent, and every DICOM
    slice after the first is garbage): only loading a series reads it."""
    from src_train.ct import load_ct
    from src_train.errors import SeriesReadError

    header = (
        "ObjectType = Image\nNDims = 3\nDimSize = 512 512 300\nElementType = MET_SHORT\n"
        "ElementSpacing = 0.7 0.7 1.25\nElementDataFile = {}.raw\n"
    )
    uids = [f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{k:030d}" for k in range(888)]
    for k, uid in enumerate(uids):
        subset = tmp_path / "DATA" / f"subset{k % 10}"
        subset.mkdir(parents=True, exist_ok=True)
        _write(subset / f"{uid}.mhd", header.format(uid))
    _dicom_series(tmp_path / "DATA" / "subset0" / "dicom", UID_DICOM)
    for slice_file in sorted((tmp_path / "DATA" / "subset0" / "dicom").iterdir())[1:]:
        slice_file.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    folder = LunaFolder(tmp_path / "DATA")
    assert folder.series_uids == sorted([*uids, UID_DICOM])
    with pytest.raises(SeriesReadError, match="missing"):
        load_ct(folder.series_path(uids[0]))


def test_find_luna_root_only_where_series_are_listed(mixed_luna: Path) -> None:
    """The viewer finds a series' annotations exactly where the folder commands find the series."""
    assert find_luna_root(mixed_luna / "subset6" / "patient-0042") == mixed_luna.resolve()
    assert find_luna_root(mixed_luna / "subset0" / "notes" / "README") is None
    assert find_luna_root(mixed_luna / "truth" / "uid0.mhd") is None


def test_dicom_files_named_anyhow_are_found(tmp_path: Path) -> None:
    """Scanners name slices by UID (``1.2.840.....17``, whose 'ending' is ``.17``) or ``.IMA``;
    a file that only starts like DICOM (a damaged first slice) is passed over."""
    from src_train.ct import series_uid_of

    folder = tmp_path / "series"
    _dicom_series(folder, UID_DICOM)
    for k, path in enumerate(sorted(folder.iterdir())):
        path.rename(folder / (f"1.2.840.113619.2.55.3.{k + 17}" if k else "SLICE.IMA"))
    (folder / "0000-damaged").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)  # sorts first
    assert series_uid_of(folder) == UID_DICOM


def test_what_a_path_opens_in_the_viewer(partial_luna: Path, tmp_path: Path) -> None:
    """One rule: a series -> itself; a LUNA16 folder or a subset folder -> its most-annotated
    series; anything else -> one clear error naming what opens."""
    series_a = partial_luna / "subset0" / f"{UID_A}.mhd"
    assert series_to_open(series_a) == series_a
    assert series_to_open(partial_luna) == series_a  # A has 2 nodules, B 1, 'unannotated' 0
    assert series_to_open(partial_luna / "subset0") == series_a
    nested = partial_luna / "subset1"  # holds subset1/<B>.mhd, as some archives extract
    assert series_to_open(nested) == partial_luna / "subset1" / "subset1" / f"{UID_B}.mhd"
    (partial_luna / "annotations.csv").unlink()  # no annotations: the first series in UID order
    assert series_to_open(partial_luna).name == f"{UID_A}.mhd"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SeriesReadError, match=r"empty holds no CT series.*LUNA16-layout"):
        series_to_open(empty)
    _series(empty / "loose.mhd", 1)  # a series file, but not in the LUNA16 layout
    with pytest.raises(SeriesReadError, match=r"open one of them, e\.g\. .*loose\.mhd"):
        series_to_open(empty)
    with pytest.raises(SeriesReadError, match=r"annotations\.txt is not a CT series"):
        series_to_open(_write(tmp_path / "annotations.txt", "x"))
    with pytest.raises(SeriesReadError, match="does not exist"):
        series_to_open(tmp_path / "absent")


def test_the_viewer_reads_around_a_malformed_row_and_commands_refuse_it(
    partial_luna: Path,
) -> None:
    path = partial_luna / "annotations.csv"
    _write(
        path,
        HEADER + f"{UID_A},1,2,3,4\n{UID_A},abc,6,7,8\n{UID_A},5,6,7,8,4\n{UID_B},1,1,1,6\n",
    )
    with pytest.raises(AnnotationError, match="line 3: coordX is 'abc'"):
        LunaFolder(partial_luna)  # every command refuses the file
    folder = LunaFolder(partial_luna, lenient=True)
    assert [n.center_xyz_mm for n in folder.nodules(UID_A)] == [(1.0, 2.0, 3.0)]
    assert len(folder.nodules(UID_B)) == 1  # rows after the bad ones are read
    first, second = folder.problems
    assert (first.path, first.line, second.line) == (path, 3, 4)
    assert first.reason.startswith("coordX is 'abc', not a finite number")
    assert "6 values where the header has 5 columns" in second.reason
    assert str(path) not in first.reason and str(first) == f"{path}, line 3: {first.reason}"

    _write(path, "uid,x,y,z\n1,2,3,4\n")  # a file the viewer cannot use at all
    folder = LunaFolder(partial_luna, lenient=True)
    assert folder.nodules(UID_A) == [] and folder.problems[0].line == 1
    assert folder.problems[0].reason.startswith("header lacks column(s) seriesuid")
    _write(path, "")
    folder = LunaFolder(partial_luna, lenient=True)
    assert folder.nodules(UID_A) == [] and folder.problems[0].line is None
    assert "is empty" in folder.problems[0].reason


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["subset0/"], True),
        (["SUBSET3/"], True),  # subset folders in any letter case, as discovery reads them
        (["annotations.csv"], True),
        (["annotations_with_malignancy.csv"], True),
        (["images/a.png", "masks/a.png"], False),  # a 2-D image set
        (["subset0"], False),  # a file named like a subset folder
        ([], False),
    ],
)
def test_one_answer_to_is_this_a_luna16_folder(
    tmp_path: Path, entries: list[str], expected: bool
) -> None:
    from src_train.commands.infer_folder import find_series
    from src_train.luna import is_luna_folder

    root = tmp_path / "data"
    root.mkdir()
    for entry in entries:
        path = root / entry.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if entry.endswith("/") else path.write_text("x\n")
    assert is_luna_folder(root) is expected
    assert is_luna_folder(root / "missing") is False
    if not expected:  # lunaseg infer asks the same question
        with pytest.raises(SeriesReadError, match="neither a LUNA16 folder"):
            find_series(root)
