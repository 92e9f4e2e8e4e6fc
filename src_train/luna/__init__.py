"""The LUNA16 folder layout: find series, parse annotation and candidate CSVs.

Layout (the synthetic default uses exactly the same)::

    DATA/subset0..subset9/<seriesuid>.mhd (+ .raw or .zraw); also .mha, .nii, .nii.gz, .nrrd,
                                            .nhdr files and DICOM series folders
    DATA/annotations.csv                    seriesuid,coordX,coordY,coordZ,diameter_mm
    DATA/annotations_with_malignancy.csv    (optional; preferred for nodules when present)
    DATA/candidates.csv                     seriesuid,coordX,coordY,coordZ,class
    DATA/truth/<seriesuid>.mhd              (synthetic data only) uint8 true nodule labels
    DATA/truth/true_nodules.csv             (synthetic data only) one row per true nodule
                                            (``truth/nodules.csv`` in folders of older versions)

Coordinates in these files are world ``(x, y, z)`` millimetres.

Modules:

* :mod:`.records` -- :class:`Nodule` (an annotation or candidate), :class:`TrueNodule`;
* :mod:`.layout` -- the names of the files and folders above;
* :mod:`.table` -- a CSV file read row by row, strictly or leniently (:class:`CsvProblem`);
* :mod:`.readers` -- ``read_annotations``, ``read_excluded``, ``read_candidates``,
  ``read_true_nodules``;
* :mod:`.discovery` -- the series of a folder, whatever their format (``discover_series``);
* :mod:`.folder` -- :class:`LunaFolder`, ``check_annotated_folder``;
* :mod:`.opening` -- what a path opens in the viewer (``series_to_open``, ``find_luna_root``).

The split into training and validation series is :mod:`src_train.records.split`.

The names below are the package's public API.
"""

from src_train.luna.discovery import LISTED_UIDS, discover_series, list_uids
from src_train.luna.folder import LunaFolder, check_annotated_folder
from src_train.luna.layout import (
    ANNOTATIONS_FILE,
    CANDIDATES_FILES,
    EXCLUDED_FILE,
    LEGACY_TRUTH_TABLE,
    MALIGNANCY_FILE,
    SUBSET_PREFIX,
    TRUTH_DIR,
    TRUTH_TABLE,
    find_excluded,
    has_annotations,
    is_luna_folder,
)
from src_train.luna.opening import find_luna_root, series_to_open
from src_train.luna.readers import (
    read_annotations,
    read_candidates,
    read_excluded,
    read_true_nodules,
    require_diameter_column,
    warn_unknown_diameters,
)
from src_train.luna.records import TRUE_NODULE_KINDS, UNKNOWN_DIAMETER_MM, Nodule, TrueNodule
from src_train.luna.table import CsvProblem, RowError

__all__ = [
    "ANNOTATIONS_FILE",
    "CANDIDATES_FILES",
    "EXCLUDED_FILE",
    "LEGACY_TRUTH_TABLE",
    "LISTED_UIDS",
    "MALIGNANCY_FILE",
    "SUBSET_PREFIX",
    "TRUE_NODULE_KINDS",
    "TRUTH_DIR",
    "TRUTH_TABLE",
    "UNKNOWN_DIAMETER_MM",
    "CsvProblem",
    "LunaFolder",
    "Nodule",
    "RowError",
    "TrueNodule",
    "check_annotated_folder",
    "discover_series",
    "find_excluded",
    "find_luna_root",
    "has_annotations",
    "is_luna_folder",
    "list_uids",
    "read_annotations",
    "read_candidates",
    "read_excluded",
    "read_true_nodules",
    "require_diameter_column",
    "series_to_open",
    "warn_unknown_diameters",
]
