"""The training cache: memory-mapped CT and ground-truth arrays per series, built lazily.

Cache layout (default ``DATA_DIR/cache/``)::

    cache/<seriesuid>/ct.npy      int16 HU, (index, row, col) in the canonical frame
    cache/<seriesuid>/mask.npy    uint8 0/1 ground truth from masks.build_masks, same shape
    cache/<seriesuid>/meta.json   geometry, mask method/threshold, nodule centers (IRC),
                                  slices holding mask voxels, source fingerprint

Arrays are opened memory-mapped and read-only, so a crop reads only the voxels it needs and
training never mutates (or copies) a whole CT; only a bounded number of series stay open at a
time, so RAM does not grow with the number of series. The cache costs 3 bytes per voxel (1.5 x
the unpacked ``.raw`` files): a 512 x 512 x 250 scan takes 188 MiB; the 888 LUNA16 scans about
170-200 GB. ``meta.json`` is written last and removed first when rebuilding; an entry is used
only when its meta matches the current source files, annotations, mask method and threshold.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src_train.atomic import atomic_write, write_text_atomic
from src_train.errors import (
    AnnotationError,
    CancelledError,
    SeriesNotFoundError,
    SeriesReadError,
)
from src_train.luna import ANNOTATIONS_FILE, LunaFolder, Nodule
from src_train.masks import DEFAULT_THRESHOLD_HU, REFERENCE_METHOD, build_masks, method_info
from src_train.progress import Progress, ShouldStop

log = logging.getLogger(__name__)

#: Bump when the cache layout or the meaning of its contents changes (2: canonical frame).
CACHE_VERSION = 2
CACHE_DIRNAME = "cache"
CT_FILE = "ct.npy"
MASK_FILE = "mask.npy"
META_FILE = "meta.json"

#: Series whose memory maps stay open at once (bounds RAM and file handles).
DEFAULT_MAX_OPEN_SERIES = 32


_INT16 = np.iinfo(np.int16)


#: Data files that may sit beside a series header (MetaImage raw / compressed raw).
_DATA_SUFFIXES = (".raw", ".zraw")


@dataclass(frozen=True)
class CacheMeta:
    """What ``meta.json`` records about one cached series.

    Attributes:
        series_uid: the series.
        shape_irc: array shape ``(index, row, col)``.
        geometry: :meth:`Geometry.to_dict` of the series.
        mask_method, threshold_hu: how the mask was built (``masks.build_masks``).
        nodule_centers_irc: center voxel ``(index, row, col)`` of every masked nodule.
        nodule_centers_xyz_mm: the same centers in world ``(x, y, z)`` mm (as annotated).
        mask_slices: sorted slice indices that contain mask voxels.
        mask_voxels: number of mask voxels.
        source: fingerprint of the inputs (files, annotations); a mismatch means rebuild.
        cache_version: :data:`CACHE_VERSION` at writing time.
    """

    series_uid: str
    shape_irc: tuple[int, int, int]
    geometry: dict[str, Any]
    mask_method: str
    threshold_hu: float
    nodule_centers_irc: list[tuple[int, int, int]]
    nodule_centers_xyz_mm: list[tuple[float, float, float]]
    mask_slices: list[int]
    mask_voxels: int
    source: dict[str, Any] = field(default_factory=dict)
    cache_version: int = CACHE_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheMeta:
        """Inverse of ``dataclasses.asdict`` (lists back to tuples)."""
        return cls(
            series_uid=str(data["series_uid"]),
            shape_irc=tuple(int(v) for v in data["shape_irc"]),  # type: ignore[arg-type]
            geometry=dict(data["geometry"]),
            mask_method=str(data["mask_method"]),
            threshold_hu=float(data["threshold_hu"]),
            nodule_centers_irc=[tuple(int(v) for v in c) for c in data["nodule_centers_irc"]],  # type: ignore[misc]
            nodule_centers_xyz_mm=[
                tuple(float(v) for v in c)  # type: ignore[misc]
                for c in data["nodule_centers_xyz_mm"]
            ],
            mask_slices=[int(v) for v in data["mask_slices"]],
            mask_voxels=int(data["mask_voxels"]),
            source=dict(data.get("source", {})),
            cache_version=int(data.get("cache_version", -1)),
        )


def _to_int16(hu: np.ndarray, uid: str) -> np.ndarray:
    """HU as int16 (float inputs are rounded and clipped to the int16 range)."""
    if hu.dtype == np.int16:
        return hu
    if np.issubdtype(hu.dtype, np.floating):
        return np.clip(np.rint(hu), _INT16.min, _INT16.max).astype(np.int16)
    raise SeriesReadError(f"Series {uid}: unsupported voxel type {hu.dtype} for the cache.")


def check_training_folder(folder: LunaFolder) -> None:
    """Raise unless ``folder`` has series on disk and an annotation file (a cache needs both).

    Checked before any series is cached, so that a wrong folder fails in a second, not after
    hours of caching empty masks.
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


class SeriesCache:
    """Memory-mapped per-series arrays of a LUNA-layout folder, built lazily.

    Args:
        data: a data folder (path or :class:`LunaFolder`).
        cache_dir: where to keep the cache; default ``DATA_DIR/cache``.
        threshold_hu, mask_method: passed to ``masks.build_masks``.
        max_open: series kept memory-mapped at once (least recently used are closed).

    Raises :class:`ConfigError` for an unknown ``mask_method`` (before anything is cached).
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | LunaFolder,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        threshold_hu: float = DEFAULT_THRESHOLD_HU,
        mask_method: str = REFERENCE_METHOD,
        max_open: int = DEFAULT_MAX_OPEN_SERIES,
    ) -> None:
        method_info(mask_method)  # unknown method: ConfigError now, not per series later
        self.folder = data if isinstance(data, LunaFolder) else LunaFolder(data)
        self.cache_dir = Path(cache_dir) if cache_dir else self.folder.root / CACHE_DIRNAME
        self.threshold_hu = float(threshold_hu)
        self.mask_method = mask_method
        self.max_open = max(1, int(max_open))
        self._open: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._metas: dict[str, CacheMeta] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes re-open their own memory maps; never pickle array contents.
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    @property
    def series_uids(self) -> list[str]:
        """Series present in the data folder, sorted."""
        return self.folder.series_uids

    def series_dir(self, uid: str) -> Path:
        """Cache folder of one series."""
        return self.cache_dir / uid

    # -- validity -------------------------------------------------------------------------------
    def _nodules(self, uid: str) -> list[Nodule]:
        return [n for n in self.folder.nodules(uid) if n.is_nodule]

    def source_fingerprint(self, uid: str) -> dict[str, Any]:
        """What the cache entry depends on: series files (size, mtime), nodules, mask options."""
        header = self.folder.series_path(uid)
        # the header and its data file (a glob on the stem would also match "<uid>.<more>")
        candidates = [header, *(header.with_suffix(s) for s in _DATA_SUFFIXES)]
        files = [p for p in candidates if p.is_file()]
        return {
            "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
            "nodules": [[list(n.center_xyz_mm), n.diameter_mm] for n in self._nodules(uid)],
            "mask_method": self.mask_method,
            "threshold_hu": self.threshold_hu,
            "cache_version": CACHE_VERSION,
        }

    def _read_meta(self, uid: str) -> CacheMeta | None:
        path = self.series_dir(uid) / META_FILE
        try:
            return CacheMeta.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); rebuilding that series", path, exc)
            return None

    def is_valid(self, uid: str) -> bool:
        """True when the cached entry exists and matches the current sources and options."""
        return self._valid_meta(uid) is not None

    def _valid_meta(self, uid: str) -> CacheMeta | None:
        meta = self._read_meta(uid)
        folder = self.series_dir(uid)
        valid = (
            meta is not None
            and meta.cache_version == CACHE_VERSION
            and meta.source == json.loads(json.dumps(self.source_fingerprint(uid)))
            and (folder / CT_FILE).is_file()
            and (folder / MASK_FILE).is_file()
        )
        return meta if valid else None

    # -- building -------------------------------------------------------------------------------
    def build(self, uid: str) -> CacheMeta:
        """(Re)build one series' entry: load the CT, build its mask, write atomically."""
        ct, _turn = self.folder.load(uid).canonical()  # models see the canonical frame only
        nodules = self._nodules(uid)
        mask, records = build_masks(
            ct, nodules, self.threshold_hu, self.mask_method, on_outside="skip"
        )
        kept = [r for r in records if not r.skipped]
        skipped = len(records) - len(kept)
        if skipped:
            log.warning("series %s: %d nodule(s) outside the volume were skipped", uid, skipped)
        meta = CacheMeta(
            series_uid=uid,
            shape_irc=ct.shape_irc,
            geometry=ct.geometry.to_dict(),
            mask_method=self.mask_method,
            threshold_hu=self.threshold_hu,
            nodule_centers_irc=[tuple(int(v) for v in r.center_irc) for r in kept],  # type: ignore[misc]
            nodule_centers_xyz_mm=[tuple(float(v) for v in r.nodule.center_xyz_mm) for r in kept],  # type: ignore[misc]
            mask_slices=np.flatnonzero(mask.any(axis=(1, 2))).tolist(),
            mask_voxels=int(mask.sum()),
            source=json.loads(json.dumps(self.source_fingerprint(uid))),
        )
        folder = self.series_dir(uid)
        folder.mkdir(parents=True, exist_ok=True)
        self._close(uid)
        (folder / META_FILE).unlink(missing_ok=True)  # invalid until the new meta lands
        hu = _to_int16(ct.hu, uid)
        with atomic_write(folder / CT_FILE, "wb") as fh:
            np.save(fh, hu)
        with atomic_write(folder / MASK_FILE, "wb") as fh:
            np.save(fh, mask.astype(np.uint8))
        write_text_atomic(folder / META_FILE, json.dumps(asdict(meta), indent=1), overwrite=True)
        self._metas[uid] = meta
        log.info(
            "cached %s: %s, %d nodule(s), %d mask voxels",
            uid,
            meta.shape_irc,
            len(kept),
            meta.mask_voxels,
        )
        return meta

    def meta(self, uid: str) -> CacheMeta:
        """The entry's meta, building (or rebuilding a stale) entry first."""
        if uid in self._metas:
            return self._metas[uid]
        meta = self._valid_meta(uid)
        if meta is None:
            return self.build(uid)
        self._metas[uid] = meta
        return meta

    def build_all(
        self,
        uids: Sequence[str] | None = None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[CacheMeta]:
        """Make sure every series (default: all) is cached; returns their metas.

        Raises :class:`CancelledError` when ``should_stop()`` turns true between series.
        """
        todo = list(self.series_uids if uids is None else uids)
        metas = []
        for i, uid in enumerate(todo):
            if should_stop is not None and should_stop():
                raise CancelledError(f"Caching stopped after {i} of {len(todo)} series.")
            metas.append(self.meta(uid))
            if progress is not None:
                progress(i + 1, len(todo), uid)
        return metas

    # -- reading --------------------------------------------------------------------------------
    def _close(self, uid: str) -> None:
        self._open.pop(uid, None)

    def arrays(self, uid: str) -> tuple[np.ndarray, np.ndarray]:
        """Read-only memory maps ``(ct int16, mask uint8)``, both ``(index, row, col)``."""
        if uid in self._open:
            self._open.move_to_end(uid)
            return self._open[uid]
        self.meta(uid)
        folder = self.series_dir(uid)
        pair = (
            np.load(folder / CT_FILE, mmap_mode="r"),
            np.load(folder / MASK_FILE, mmap_mode="r"),
        )
        self._open[uid] = pair
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return pair
