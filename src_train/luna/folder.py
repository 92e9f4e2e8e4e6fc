"""A LUNA16-layout data folder (:class:`LunaFolder`): its series, annotations, candidates and
synthetic true nodules, read on first use; and the check every mask-making command makes."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from src_train.ct import SERIES_SUFFIXES, CtVolume, load_ct
from src_train.errors import AnnotationError, SeriesNotFoundError
from src_train.luna.discovery import discover_series, list_uids
from src_train.luna.layout import (
    ANNOTATIONS_FILE,
    CANDIDATES_FILES,
    LEGACY_TRUTH_TABLE,
    MALIGNANCY_FILE,
    TRUTH_DIR,
    TRUTH_TABLE,
)
from src_train.luna.readers import read_annotations, read_candidates, read_true_nodules
from src_train.luna.records import Nodule, TrueNodule
from src_train.luna.table import CsvProblem, skip_or_raise

log = logging.getLogger(__name__)


def _group(nodules: Sequence[Nodule]) -> dict[str, list[Nodule]]:
    grouped: dict[str, list[Nodule]] = {}
    for nodule in nodules:
        grouped.setdefault(nodule.series_uid, []).append(nodule)
    return grouped


class LunaFolder:
    """A data folder in LUNA16 layout (real or synthetic), possibly a partial download.

    Series are found by :func:`discover_series`: ``ROOT/subset*/<uid>.mhd`` and every other
    format LunaSeg reads, DICOM series folders included (also one ``subset*`` folder deeper, as
    some archives extract). CSV files are read on first use. Coordinates are world
    ``(x, y, z)`` mm. A malformed annotation row raises :class:`AnnotationError` (every
    command refuses such a file) unless ``lenient`` (the viewer shows the scan and lists the
    row in :attr:`problems`).
    """

    def __init__(self, root: str | os.PathLike[str], *, lenient: bool = False) -> None:
        self.root = Path(root)
        #: Lenient (the viewer): malformed annotation rows, or an unusable annotation or truth
        #: file, are passed over and listed in :attr:`problems` instead of raising.
        self.lenient = lenient
        self.problems: list[CsvProblem] = []
        if not self.root.is_dir():
            raise SeriesNotFoundError(
                f"Data folder {self.root} does not exist. Download LUNA16 there or run "
                "'lunaseg synth' to make a synthetic one."
            )
        self._paths = discover_series(self.root)
        self._nodules: dict[str, list[Nodule]] | None = None
        self._candidates: dict[str, list[Nodule]] | None = None
        self._truth: dict[str, list[TrueNodule]] | None = None
        if not self._paths:  # every command that needs series says so in its error
            log.debug(
                "%s: no series found under subset*/ (expected subset0/<uid>.mhd, or another of "
                "%s, or DICOM series folders)",
                self.root,
                ", ".join(SERIES_SUFFIXES),
            )
        # without an annotation file nothing is missing (nodules() says there are none)
        missing = self.missing_series if self.annotations_path is not None else []
        if missing:
            log.warning(
                "%s: %d of %d annotated series are not on disk (partial download?); "
                "they are skipped: %s",
                self.root,
                len(missing),
                len(missing) + len(set(self._annotations()) & set(self._paths)),
                list_uids(missing),
            )

    def __repr__(self) -> str:
        return f"LunaFolder({str(self.root)!r}, {len(self._paths)} series)"

    # -- series -----------------------------------------------------------------------------
    @property
    def series_uids(self) -> list[str]:
        """UIDs of the series present on disk, sorted."""
        return sorted(self._paths)

    def series_path(self, uid: str) -> Path:
        """Path of a series (file or DICOM folder); :class:`SeriesNotFoundError` if absent."""
        try:
            return self._paths[uid]
        except KeyError:
            raise SeriesNotFoundError(
                f"Series {uid} is not under {self.root}/subset*/. Download its subset or pick "
                "one of the series present."
            ) from None

    def load(self, uid: str) -> CtVolume:
        """Read a series (HU, IRC array order) with its geometry; its ``series_uid`` is ``uid``."""
        path = self.series_path(uid)
        return load_ct(path, series_uid=uid if path.is_dir() else None)

    # -- annotations ------------------------------------------------------------------------
    @property
    def annotations_path(self) -> Path | None:
        """The annotation file in use: the malignancy file if present, else annotations.csv."""
        for name in (MALIGNANCY_FILE, ANNOTATIONS_FILE):
            if (self.root / name).is_file():
                return self.root / name
        return None

    def _annotations(self) -> dict[str, list[Nodule]]:
        if self._nodules is None:
            path = self.annotations_path
            if path is None:
                log.warning("%s has no %s: no nodules known", self.root, ANNOTATIONS_FILE)
                self._nodules = {}
            elif not self.lenient:
                self._nodules = _group(read_annotations(path))
            else:
                try:
                    self._nodules = _group(read_annotations(path, skipped=self.problems))
                except AnnotationError as exc:  # the whole file is unusable
                    skip_or_raise(exc, self.problems, path)
                    self._nodules = {}
        return self._nodules

    def nodules(self, uid: str) -> list[Nodule]:
        """Annotated nodules of a series (empty when it has none), in file order."""
        return list(self._annotations().get(uid, []))

    @property
    def nodules_by_series(self) -> dict[str, list[Nodule]]:
        """Every series on disk -> its annotated nodules (possibly empty), sorted by UID."""
        annotations = self._annotations()
        return {uid: list(annotations.get(uid, [])) for uid in self.series_uids}

    @property
    def missing_series(self) -> list[str]:
        """Annotated series that are not on disk (a partial download), sorted."""
        return sorted(set(self._annotations()) - set(self._paths))

    @property
    def candidates_path(self) -> Path | None:
        """``candidates.csv`` (or ``candidates_V2.csv``) if present."""
        for name in CANDIDATES_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def candidates(self, uid: str) -> list[Nodule]:
        """Candidates of a series (class 1 -> ``is_nodule``); empty without a candidates file."""
        if self._candidates is None:
            path = self.candidates_path
            self._candidates = _group(read_candidates(path)) if path else {}
        return list(self._candidates.get(uid, []))

    # -- synthetic truth --------------------------------------------------------------------
    @property
    def truth_table_path(self) -> Path | None:
        """``truth/true_nodules.csv``, else an older version's ``truth/nodules.csv``, else None."""
        for name in (TRUTH_TABLE, LEGACY_TRUTH_TABLE):
            path = self.root / TRUTH_DIR / name
            if path.is_file():
                return path
        return None

    @property
    def has_truth(self) -> bool:
        """True when the folder carries true nodule shapes (synthetic data)."""
        return self.truth_table_path is not None

    def truth_path(self, uid: str) -> Path | None:
        """``truth/<uid>.mhd`` (uint8 labels, same geometry as the series) or None."""
        path = self.root / TRUTH_DIR / f"{uid}.mhd"
        return path if path.is_file() else None

    def true_nodules(self, uid: str) -> list[TrueNodule]:
        """True nodules of a series from the truth table (empty without truth)."""
        if self._truth is None:
            self._truth = {}
            table = self.truth_table_path
            try:
                true_nodules = read_true_nodules(table) if table is not None else []
            except AnnotationError as exc:
                if not self.lenient or table is None:
                    raise
                skip_or_raise(exc, self.problems, table)  # no true shapes shown
                true_nodules = []
            for nodule in true_nodules:
                self._truth.setdefault(nodule.series_uid, []).append(nodule)
        return list(self._truth.get(uid, []))


def check_annotated_folder(folder: LunaFolder) -> None:
    """Raise unless ``folder`` has series on disk and an annotation file.

    The rule of every command that makes masks from the annotations (``mask``, ``cache``,
    ``train``): checked before anything is written, so a wrong folder fails in a second with
    one line, not after hours of empty masks, and leaves no output behind.

    Raises:
        SeriesNotFoundError: no series under ``subset*/``.
        AnnotationError: no ``annotations.csv`` (nor the malignancy file).
    """
    if not folder.series_uids:
        raise SeriesNotFoundError(
            f"{folder.root} holds no series (expected {folder.root}/subset0/<seriesuid>.mhd). "
            "Point DATA_DIR at a LUNA16 folder or run 'lunaseg synth' to make one."
        )
    if folder.annotations_path is None:
        raise AnnotationError(
            f"{folder.root} has no {ANNOTATIONS_FILE}: without nodule annotations every mask "
            f"is empty. Put the LUNA16 {ANNOTATIONS_FILE} (seriesuid,coordX,coordY,coordZ,"
            "diameter_mm) in that folder."
        )
