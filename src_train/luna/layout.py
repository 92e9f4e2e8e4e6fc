"""The names of the LUNA16 layout's files and folders (the picture: :mod:`src_train.luna`)."""

from __future__ import annotations

import os
from pathlib import Path

ANNOTATIONS_FILE = "annotations.csv"
MALIGNANCY_FILE = "annotations_with_malignancy.csv"
#: LUNA16's excluded findings (hits on them count neither way), shipped beside ``annotations.csv``.
EXCLUDED_FILE = "annotations_excluded.csv"
CANDIDATES_FILES = ("candidates.csv", "candidates_V2.csv")
TRUTH_DIR = "truth"
#: The true nodules' table in ``truth/`` (not to be confused with ``masks/nodules.csv``, the
#: table ``lunaseg mask`` writes beside generated masks).
TRUTH_TABLE = "true_nodules.csv"
#: The same table's name in folders written before it was renamed; still read.
LEGACY_TRUTH_TABLE = "nodules.csv"


#: Folders that hold series start with this, in any letter case (LUNA16: subset0..subset9).
SUBSET_PREFIX = "subset"


def is_subset_dir(path: Path) -> bool:
    """True for a folder named ``subset*`` (any letter case), where series are looked for."""
    return path.name.lower().startswith(SUBSET_PREFIX)


def has_annotations(folder: Path) -> bool:
    """True when ``folder`` holds ``annotations.csv`` or the malignancy file."""
    return any((folder / name).is_file() for name in (ANNOTATIONS_FILE, MALIGNANCY_FILE))


def is_luna_folder(folder: str | os.PathLike[str]) -> bool:
    """True for a LUNA16-layout folder: a folder holding ``subset*`` folders (any letter case)
    or an annotation file (:func:`has_annotations`). The one answer to "is this a LUNA16
    folder?" for ``lunaseg infer``, ``lunaseg compare`` and the viewer."""
    root = Path(folder)
    if not root.is_dir():
        return False
    return has_annotations(root) or any(p.is_dir() and is_subset_dir(p) for p in root.iterdir())


def find_excluded(annotations_path: str | os.PathLike[str]) -> Path | None:
    """:data:`EXCLUDED_FILE` beside ``annotations_path`` when present (LUNA16 ships them
    together), else None."""
    path = Path(annotations_path).parent / EXCLUDED_FILE
    return path if path.is_file() else None
