"""CT volumes, their geometry and their files.

Arrays are indexed ``(index, row, col)`` -- "IRC", i.e. ``(z, y, x)`` in array order -- while
world coordinates are ``(x, y, z)`` in millimetres, as in LUNA16's CSV files and in SimpleITK.
This package is the only place where the axis order is reversed or axes are reordered.

* :mod:`.geometry` -- :class:`Geometry` (voxel <-> world), :class:`CtVolume`, the canonical
  frame (:func:`reorientation`, :meth:`CtVolume.canonical`);
* :mod:`.files` -- the file endings of CT series, series UIDs from paths, :func:`load_ct`,
  :func:`save_volume`.

The names below are the package's public API.
"""

from src_train.ct.files import (
    CT_FILE_SUFFIXES,
    SERIES_DATA_SUFFIXES,
    SERIES_SUFFIXES,
    WRITABLE_SUFFIXES,
    dicom_series_uid,
    is_series_path,
    load_ct,
    save_volume,
    series_uid_from_path,
    series_uid_of,
)
from src_train.ct.geometry import (
    CANONICAL_DIRECTION_NAME,
    CtVolume,
    Geometry,
    Reorientation,
    reorientation,
    xyz_to_zyx_mm,
)

__all__ = [
    "CANONICAL_DIRECTION_NAME",
    "CT_FILE_SUFFIXES",
    "SERIES_DATA_SUFFIXES",
    "SERIES_SUFFIXES",
    "WRITABLE_SUFFIXES",
    "CtVolume",
    "Geometry",
    "Reorientation",
    "dicom_series_uid",
    "is_series_path",
    "load_ct",
    "reorientation",
    "save_volume",
    "series_uid_from_path",
    "series_uid_of",
    "xyz_to_zyx_mm",
]
