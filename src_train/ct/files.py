"""CT series on disk: which file endings are series, a series' UID from its path (file name or
DICOM SeriesInstanceUID), reading a series (MetaImage, NIfTI, NRRD, DICOM folder) as a
:class:`~src_train.ct.geometry.CtVolume` with clear errors, and writing a volume atomically
with its geometry."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from src_train.ct.geometry import CtVolume, Geometry
from src_train.errors import (
    ConfigError,
    GeometryError,
    OutputExistsError,
    OutputWriteError,
    SeriesReadError,
)

log = logging.getLogger(__name__)


#: File endings LunaSeg reads as single series (a folder is read as a DICOM series).
SERIES_SUFFIXES = (".mhd", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha")

#: Endings of the other files a CT series is stored in: MetaImage data files beside their
#: ``.mhd`` header and DICOM slices.
SERIES_DATA_SUFFIXES = (".raw", ".zraw", ".dcm")

#: Every file ending that belongs to a CT series (what tells a CT folder from an image set).
CT_FILE_SUFFIXES = SERIES_SUFFIXES + SERIES_DATA_SUFFIXES

#: Endings that SimpleITK writes and LunaSeg can write volumes to.
WRITABLE_SUFFIXES = (".mhd", ".nii", ".nii.gz", ".nrrd", ".mha")

#: Range a HU volume read from an integer file must fit (it is kept as int16).
_INT16_MIN = np.iinfo(np.int16).min
_INT16_MAX = np.iinfo(np.int16).max


_LONGEST_SUFFIX_FIRST = sorted(SERIES_SUFFIXES, key=len, reverse=True)


def series_uid_from_path(path: Path) -> str:
    """The series UID LUNA16 uses: the file name without its (double) ending."""
    name = path.name
    lower = name.lower()
    for suffix in _LONGEST_SUFFIX_FIRST:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


#: DICOM Part 10 files carry ``DICM`` after a 128-byte preamble.
_DICOM_PREAMBLE_BYTES = 128
_DICOM_SIGNATURE = b"DICM"
#: The DICOM tag SeriesInstanceUID (group|element, as SimpleITK names metadata keys).
_SERIES_INSTANCE_UID_TAG = "0020|000e"
#: Characters DICOM pads values with (to an even length).
_DICOM_PADDING = "\x00 "


def _is_dicom_file(path: Path) -> bool:
    """True when ``path`` starts like a DICOM Part 10 file (reads 132 bytes)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_DICOM_PREAMBLE_BYTES + len(_DICOM_SIGNATURE))
    except OSError:
        return False
    return head[_DICOM_PREAMBLE_BYTES:] == _DICOM_SIGNATURE


def dicom_series_uid(folder: Path) -> str | None:
    """The SeriesInstanceUID of the DICOM series in ``folder``, read from one file's header.

    Reads no voxel data: the folder's files (any name: ``IM0001``, ``1-001.dcm``, a UID) are
    checked in name order for the DICOM signature, and the first one with a SeriesInstanceUID
    gives it. None when the folder holds no such file. A folder is taken to hold one series;
    :func:`load_ct` reads the one named here when asked for this UID.
    """
    try:
        with os.scandir(folder) as listing:
            names = sorted(e.name for e in listing if not e.name.startswith(".") and e.is_file())
    except OSError:
        return None
    for name in names:
        path = folder / name
        if not _is_dicom_file(path):
            continue
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            log.debug("%s starts like DICOM but its header is unreadable", path)
            continue
        uid = ""
        if reader.HasMetaDataKey(_SERIES_INSTANCE_UID_TAG):
            uid = reader.GetMetaData(_SERIES_INSTANCE_UID_TAG).strip(_DICOM_PADDING)
        if uid:
            return uid
        log.debug("%s has no SeriesInstanceUID (a DICOMDIR?)", path)
    return None


def series_uid_of(path: Path | os.DirEntry[str]) -> str | None:
    """The series UID of anything :func:`load_ct` reads, without reading voxels; else None.

    A file with one of :data:`SERIES_SUFFIXES`: its name without the ending (LUNA16 names its
    files by UID). A folder: its DICOM SeriesInstanceUID (:func:`dicom_series_uid`), so that
    candidates and annotations use the UID the scan itself carries, whatever the folder's name.
    ``path`` may be an :func:`os.scandir` entry, whose file type is known without a ``stat``.
    """
    if path.is_dir():
        return dicom_series_uid(Path(path))
    if path.name.lower().endswith(SERIES_SUFFIXES) and path.is_file():
        return series_uid_from_path(Path(path.name))
    return None


def is_series_path(path: Path) -> bool:
    """True when ``path`` is something :func:`load_ct` reads: a series file, a DICOM folder."""
    return series_uid_of(path) is not None


_MHD_KEY = re.compile(r"^\s*(\w+)\s*=\s*(.*?)\s*$")
_MET_ITEMSIZE = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 8,
    "MET_ULONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _check_metaimage(path: Path) -> None:
    """Check an ``.mhd`` header and its data file before SimpleITK sees them.

    SimpleITK's own messages for a missing or short ``.raw`` are C++ traces; this names the file
    and the fix instead.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise SeriesReadError(f"Cannot read {path}: {exc.strerror}.") from exc
    header: dict[str, str] = {}
    for line in text.splitlines():
        match = _MHD_KEY.match(line)
        if match:
            header[match.group(1)] = match.group(2)
    data_name = header.get("ElementDataFile")
    if not data_name:
        raise SeriesReadError(
            f"{path} has no 'ElementDataFile' line: it is not a MetaImage header. "
            "Re-download the series or point LunaSeg at the right file."
        )
    if data_name.upper() == "LOCAL" or data_name.split()[0].upper() == "LIST" or "%" in data_name:
        return  # data inside the header file, or spread over several files: SimpleITK checks
    data_path = path.parent / data_name
    if not data_path.exists():
        raise SeriesReadError(
            f"{path} refers to the data file {data_path.name}, which is missing from "
            f"{path.parent}. Copy the .raw/.zraw file beside its .mhd header."
        )
    compressed = header.get("CompressedData", "False").strip().lower() == "true"
    itemsize = _MET_ITEMSIZE.get(header.get("ElementType", ""), 0)
    try:
        dims = [int(v) for v in header.get("DimSize", "").split()]
        channels = int(header.get("ElementNumberOfChannels", "1"))
        skipped = int(header.get("HeaderSize", "0"))
    except ValueError as exc:
        raise SeriesReadError(
            f"{path}: unreadable DimSize {header.get('DimSize')!r}, ElementNumberOfChannels or "
            "HeaderSize; fix the header or re-download the series."
        ) from exc
    if compressed or not itemsize or not dims:
        return
    # HeaderSize = -1 means "the voxels are the file's last bytes": any larger file is fine.
    expected = int(np.prod(dims)) * itemsize * channels + max(skipped, 0)
    actual = data_path.stat().st_size
    described = f"({'x'.join(map(str, dims))} {header.get('ElementType')})"
    if actual < expected:
        raise SeriesReadError(
            f"{data_path} is truncated: {actual:,} bytes where the header {path.name} "
            f"{described} needs {expected:,}. Re-download or re-extract this series."
        )
    if actual > expected and skipped >= 0:
        raise SeriesReadError(
            f"{data_path} is larger than its header says: {actual:,} bytes where {path.name} "
            f"{described} needs {expected:,}, so header and data do not belong together (a "
            "data file of another series, or an edited header) and the voxels would be read "
            "wrongly. Re-download or re-extract this series, or correct DimSize/ElementType in "
            "the header."
        )


def _read_dicom(path: Path, series_uid: str | None) -> tuple[sitk.Image, str]:
    """The DICOM series ``series_uid`` (default: the first) of a folder, and its UID."""
    reader = sitk.ImageSeriesReader()
    # UID as written in the files (GDCM's key) by UID as LunaSeg names it (padding stripped)
    gdcm_ids = {uid.strip(_DICOM_PADDING): uid for uid in reader.GetGDCMSeriesIDs(str(path))}
    series_ids = list(gdcm_ids)
    if not series_ids:
        raise SeriesReadError(
            f"{path} is a folder without a DICOM series. Point at a folder of .dcm files "
            f"or at a file ending in one of {', '.join(SERIES_SUFFIXES)}."
        )
    if series_uid is not None and series_uid not in series_ids:
        raise SeriesReadError(
            f"{path} holds no DICOM series {series_uid}; it holds {', '.join(series_ids)}. "
            "Pick one of those (or list the data folder again if it changed)."
        )
    chosen = series_uid if series_uid is not None else series_ids[0]
    if series_uid is None and len(series_ids) > 1:
        log.warning(
            "%s holds %d DICOM series; reading the first (%s). Give each series its own folder.",
            path,
            len(series_ids),
            chosen,
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), gdcm_ids[chosen]))
    try:
        return reader.Execute(), chosen
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise SeriesReadError(
            f"Cannot read the DICOM series {chosen} in {path}: a file is damaged or not CT "
            f"slices of one series ({first_line})."
        ) from exc


def _read_image(path: Path) -> sitk.Image:
    if not path.exists():
        raise SeriesReadError(f"{path} does not exist. Check the path or the data folder.")
    if not path.name.lower().endswith(SERIES_SUFFIXES):
        raise SeriesReadError(
            f"{path.name}: unsupported file type. LunaSeg reads {', '.join(SERIES_SUFFIXES)} "
            "files and DICOM folders."
        )
    if path.suffix.lower() == ".mhd":
        _check_metaimage(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise SeriesReadError(
            f"Cannot read {path}: the file is corrupt or not a supported image ({first_line})."
        ) from exc


def load_ct(path: str | os.PathLike[str], *, series_uid: str | None = None) -> CtVolume:
    """Read a CT series (``.mhd``+``.raw``/``.zraw``, NIfTI, NRRD or a DICOM folder).

    Integer data is returned as int16 HU (LUNA16 and DICOM CT fit); float data as float32.
    The volume's ``series_uid`` is a file's name without its ending, or a DICOM series'
    SeriesInstanceUID. ``series_uid`` picks one series of a DICOM folder (default: the first).
    Raises :class:`SeriesReadError` with the file name and a fix for anything unreadable.
    """
    src = Path(path)
    if src.is_dir():
        image, uid = _read_dicom(src, series_uid)
    else:
        image, uid = _read_image(src), series_uid_from_path(src)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise SeriesReadError(
            f"{src} has {image.GetDimension()} dimensions and "
            f"{image.GetNumberOfComponentsPerPixel()} component(s); LunaSeg needs a 3-D "
            "single-channel CT volume."
        )
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype != np.int16:
            if array.size and (array.min() < _INT16_MIN or array.max() > _INT16_MAX):
                raise SeriesReadError(
                    f"{src}: values {array.min()}..{array.max()} do not fit int16 HU; is this a "
                    "CT in Hounsfield units (apply RescaleSlope/Intercept first)?"
                )
            array = array.astype(np.int16)
    else:
        array = array.astype(np.float32, copy=False)
    try:
        geometry = Geometry.from_sitk(image)
    except GeometryError as exc:
        raise GeometryError(f"{src}: {exc}") from exc
    return CtVolume(hu=array, geometry=geometry, series_uid=uid, path=src)


def _write_suffix(path: Path) -> str:
    for suffix in sorted(WRITABLE_SUFFIXES, key=len, reverse=True):
        if path.name.lower().endswith(suffix):
            return suffix
    raise ConfigError(
        f"Cannot write {path.name}: choose a name ending in {', '.join(WRITABLE_SUFFIXES)}."
    )


def save_volume(
    array: np.ndarray,
    geometry: Geometry,
    path: str | os.PathLike[str],
    *,
    compress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``array`` (IRC order) with ``geometry`` to ``path``, atomically.

    The file (and for ``.mhd`` its ``.raw``/``.zraw``) is written in a temporary folder beside
    the target and renamed into place, so a crash never leaves a half-written volume. Existing
    files are kept unless ``overwrite`` is true (:class:`OutputExistsError` otherwise); a
    failed write (permissions, disk full) is an :class:`OutputWriteError`. Boolean masks are
    written as uint8 0/1 (SimpleITK has no boolean pixel type).
    """
    dest = Path(path)
    suffix = _write_suffix(dest)
    if tuple(array.shape) != geometry.shape_irc:
        raise GeometryError(
            f"Cannot write {dest.name}: array shape {array.shape} differs from the geometry's "
            f"{geometry.shape_irc}."
        )
    if dest.exists() and not overwrite:
        raise OutputExistsError(
            f"{dest} already exists; remove it or ask to overwrite (e.g. --overwrite)."
        )
    if array.dtype == np.bool_:  # SimpleITK has no boolean pixel type: store masks as 0/1 uint8
        array = array.view(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to(image)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=".lunaseg-", dir=dest.parent))
    except OSError as exc:
        raise OutputWriteError(
            f"Cannot write {dest}: cannot create a file in {dest.parent} ({exc.strerror}). "
            "Choose a writable folder."
        ) from exc
    try:
        tmp_path = tmp_dir / dest.name
        sitk.WriteImage(image, str(tmp_path), useCompression=compress)
        if suffix == ".mhd":
            # Data file first, header last: a reader never finds a header without its data.
            for part in sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".mhd"):
                os.replace(part, dest.parent / part.name)
        else:
            os.replace(tmp_path, dest)
    except (OSError, RuntimeError) as exc:
        raise OutputWriteError(
            f"Cannot write {dest} ({exc}). Check the free disk space and the folder's permissions."
        ) from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dest
