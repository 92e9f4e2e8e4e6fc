"""The training cache: memory-mapped CT and ground-truth arrays per series, built lazily.

Cache layout (default ``DATA_DIR/cache/``)::

    cache/<seriesuid>/ct.npy         int16 HU, (index, row, col) in the canonical frame
    cache/<seriesuid>/mask_bits.npy  ground truth from masks.build_masks, packed 8 voxels per
                                     byte along col: uint8 (index, row, ceil(col / 8))
    cache/<seriesuid>/meta.json      geometry, mask method/threshold, nodule centers (IRC),
                                     slices holding mask voxels, source fingerprint

Arrays are opened memory-mapped and read-only, so a crop reads only the voxels it needs (the
mask through :class:`~src_train.packed.PackedMask`, which unpacks only the rows and bytes of
the crop) and training never mutates (or copies) a whole CT; only a bounded number of series
stay open at a time, so RAM does not grow with the number of series. The cache costs 2.125
bytes per voxel (int16 CT + one bit of mask; 1.06 x the unpacked ``.raw`` files): a 512 x 512 x
250 scan takes 133 MiB. ``meta.json`` is written last and removed first when rebuilding; an
entry is used only when its meta matches the current source files, annotations, mask method and
threshold, and the series' reviews (``DATA/reviews/``: the masks are the reviewed ground
truth, so a changed verdict or corrected voxel rebuilds exactly that series); a build killed at
any point resumes where it stopped.

:meth:`SeriesCache.build_all` builds missing entries in parallel worker processes
(``workers``), after checking that the disk has room for them (:func:`estimate_cache_bytes`
from the series headers, no voxel read); a series that fails is reported after the others are
built.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from src_train.atomic import atomic_write, write_text_atomic
from src_train.errors import (
    CancelledError,
    LunaSegError,
    OutputWriteError,
    SeriesFailedError,
    SeriesReadError,
)
from src_train.luna import LunaFolder, Nodule, check_annotated_folder
from src_train.masks import DEFAULT_THRESHOLD_HU, REFERENCE_METHOD, method_info
from src_train.packed import PackedMask, pack_mask, packed_bytes
from src_train.progress import Progress, ShouldStop
from src_train.reviews import ReviewBook, apply_book

log = logging.getLogger(__name__)

#: Bump when the cache layout or the meaning of its contents changes (2: masks packed as bits;
#: 3: series stored in the canonical frame, CtVolume.canonical).
CACHE_VERSION = 3
CACHE_DIRNAME = "cache"
CT_FILE = "ct.npy"
MASK_FILE = "mask_bits.npy"
META_FILE = "meta.json"
#: Files of earlier cache versions, removed when an entry is rebuilt.
LEGACY_FILES = ("mask.npy",)

#: Bytes per CT voxel in the cache (int16 HU).
CT_BYTES_PER_VOXEL = 2
#: Bytes an entry adds beyond its arrays (two ``.npy`` headers, ``meta.json``), generously.
ENTRY_OVERHEAD_BYTES = 64 * 1024
#: Worker processes ``lunaseg cache`` uses by default: one per CPU, at most this many (each
#: holds one series and its mask while building: about 1 GiB for a 512 x 512 x 300 scan).
MAX_DEFAULT_WORKERS = 8
#: Series named in a message before "and N more".
LISTED_FAILURES = 5

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


def default_workers() -> int:
    """Worker processes for a cache build: the CPUs, at most :data:`MAX_DEFAULT_WORKERS`."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def series_shape_irc(path: Path) -> tuple[int, int, int]:
    """Shape ``(index, row, col)`` of a series from its header alone (no voxel is read).

    A DICOM folder counts its files for the slices. Raises :class:`SeriesReadError`.
    """
    reader = sitk.ImageFileReader()
    n_slices = None
    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise SeriesReadError(f"{path} holds no DICOM series.")
        reader.SetFileName(files[0])
        n_slices = len(files)
    else:
        reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise SeriesReadError(f"Cannot read the header of {path}: {exc}") from exc
    size = reader.GetSize()
    cols, rows = int(size[0]), int(size[1])
    index = n_slices if n_slices is not None else (int(size[2]) if len(size) > 2 else 1)
    return (index, rows, cols)


def entry_bytes(shape_irc: tuple[int, int, int]) -> int:
    """Bytes one cache entry takes: int16 CT, packed mask, headers and meta."""
    voxels = int(np.prod(shape_irc))
    return voxels * CT_BYTES_PER_VOXEL + packed_bytes(shape_irc) + ENTRY_OVERHEAD_BYTES


def _to_int16(hu: np.ndarray, uid: str) -> np.ndarray:
    """HU as int16 (float inputs are rounded and clipped to the int16 range)."""
    if hu.dtype == np.int16:
        return hu
    if np.issubdtype(hu.dtype, np.floating):
        return np.clip(np.rint(hu), _INT16.min, _INT16.max).astype(np.int16)
    raise SeriesReadError(f"Series {uid}: unsupported voxel type {hu.dtype} for the cache.")


def check_training_folder(folder: LunaFolder) -> None:
    """Raise unless ``folder`` has series on disk and an annotation file (a cache needs both);
    the rule is :func:`~src_train.luna.check_annotated_folder`, shared with ``lunaseg mask``."""
    check_annotated_folder(folder)


class SeriesCache:
    """Memory-mapped per-series arrays of a LUNA-layout folder, built lazily.

    Args:
        data: a data folder (path or :class:`LunaFolder`).
        cache_dir: where to keep the cache; default ``DATA_DIR/cache``.
        threshold_hu, mask_method: passed to ``masks.build_masks``.
        max_open: series kept memory-mapped at once (least recently used are closed).
        reviews: apply the folder's reviews (``DATA/reviews/``) to the masks (default); False
            builds them from the annotations alone.

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
        reviews: bool = True,
    ) -> None:
        method_info(mask_method)  # unknown method: ConfigError now, not per series later
        self.folder = data if isinstance(data, LunaFolder) else LunaFolder(data)
        self.cache_dir = Path(cache_dir) if cache_dir else self.folder.root / CACHE_DIRNAME
        self.threshold_hu = float(threshold_hu)
        self.mask_method = mask_method
        self.max_open = max(1, int(max_open))
        self.reviews = bool(reviews)
        self._book: ReviewBook | None = None
        self._open: OrderedDict[str, tuple[np.ndarray, PackedMask]] = OrderedDict()
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

    @property
    def book(self) -> ReviewBook | None:
        """The folder's reviews, read on first use (None when reviews are not applied)."""
        if self.reviews and self._book is None:
            self._book = ReviewBook.for_folder(self.folder)
        return self._book

    def source_fingerprint(self, uid: str) -> dict[str, Any]:
        """What the cache entry depends on: series files (size, mtime), nodules, mask options,
        the series' reviews (latest verdicts, label volume size and mtime)."""
        header = self.folder.series_path(uid)
        # the header and its data file (a glob on the stem would also match "<uid>.<more>")
        candidates = [header, *(header.with_suffix(s) for s in _DATA_SUFFIXES)]
        files = [p for p in candidates if p.is_file()]
        return {
            "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
            "nodules": [[list(n.center_xyz_mm), n.diameter_mm] for n in self._nodules(uid)],
            "mask_method": self.mask_method,
            "threshold_hu": self.threshold_hu,
            "reviews": None if self.book is None else self.book.fingerprint(uid),
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
        ct, turn = self.folder.load(uid).canonical()  # models see the canonical frame only
        nodules = self._nodules(uid)
        reviewed = apply_book(
            self.book,
            ct,
            nodules,
            self.threshold_hu,
            self.mask_method,
            on_outside="skip",
            turn=turn,  # corrected voxels are stored in the file's order
        )
        mask, records = reviewed.mask, reviewed.records
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
        for leftover in [*folder.glob(".*.tmp"), *(folder / n for n in LEGACY_FILES)]:
            leftover.unlink(missing_ok=True)  # a killed build's temporary files, old layouts
        hu = _to_int16(ct.hu, uid)
        with atomic_write(folder / CT_FILE, "wb") as fh:
            np.save(fh, hu)
        with atomic_write(folder / MASK_FILE, "wb") as fh:
            np.save(fh, pack_mask(mask))
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

    def estimate_bytes(self, uids: Sequence[str]) -> tuple[int, list[str]]:
        """Bytes the disk must have free to build ``uids`` (from their headers), and which
        of them need building (missing or stale).

        Entries being rebuilt give their old bytes back; the largest entry counts once more
        for the temporary file written beside it.
        """
        todo = [uid for uid in uids if not self.is_valid(uid)]
        needed, largest = 0, 0
        for uid in todo:
            try:
                size = entry_bytes(series_shape_irc(self.folder.series_path(uid)))
            except LunaSegError as exc:  # reported by the build itself
                log.warning("series %s: no size estimate (%s)", uid, exc)
                continue
            folder = self.series_dir(uid)
            old = sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0
            needed += max(size - old, 0)
            largest = max(largest, size)
        return needed + largest if todo else 0, todo

    def check_disk_space(self, uids: Sequence[str]) -> tuple[int, int, list[str]]:
        """``(bytes needed, bytes free, series to build)``; raises when they do not fit.

        Raises :class:`OutputWriteError` naming the cache folder, both figures and the fix,
        before any series is built.
        """
        needed, todo = self.estimate_bytes(uids)
        probe = self.cache_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if needed > free:
            raise OutputWriteError(
                f"The cache needs about {needed / 2**30:.1f} GiB for {len(todo)} series "
                f"({CT_BYTES_PER_VOXEL} bytes per voxel for the CT, one bit for the mask, from "
                f"the series headers) but {probe} has {free / 2**30:.1f} GiB free. Free some "
                "space or put the cache on a larger disk (--cache-dir)."
            )
        return needed, free, todo

    def build_all(
        self,
        uids: Sequence[str] | None = None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
        *,
        workers: int = 1,
    ) -> list[CacheMeta]:
        """Make sure every series (default: all) is cached; returns their metas, in order.

        Missing or stale entries are built by ``workers`` processes (1: in this process);
        ``progress(done, total, uid)`` is called as each series is ready. Series that fail
        do not stop the others: a :class:`SeriesFailedError` lists them at the end (their
        entries stay invalid, so the next call retries only them). Raises
        :class:`CancelledError` when ``should_stop()`` turns true between series (entries
        being built by workers are finished first; they are atomic).
        """
        order = list(self.series_uids if uids is None else uids)
        metas: dict[str, CacheMeta] = {}
        failures: dict[str, str] = {}
        todo = []
        for uid in order:
            meta = self._metas.get(uid) or self._valid_meta(uid)
            if meta is None:
                todo.append(uid)
            else:
                self._metas[uid] = metas[uid] = meta
        done = len(metas)
        if progress is not None and done:
            progress(done, len(order), f"{done} series already cached")

        def finished(uid: str, meta: CacheMeta | None, error: str | None) -> None:
            nonlocal done
            done += 1
            if meta is not None:
                self._metas[uid] = metas[uid] = meta
            else:
                failures[uid] = str(error)
                log.error("series %s not cached: %s", uid, error)
            if progress is not None:
                progress(done, len(order), uid)

        if workers <= 1 or len(todo) <= 1:
            for i, uid in enumerate(todo):
                if should_stop is not None and should_stop():
                    raise CancelledError(f"Caching stopped after {i} of {len(todo)} series.")
                meta, error = _build_entry(self, uid)
                finished(uid, meta, error)
        else:
            self._build_parallel(todo, workers, finished, should_stop)
        if failures:
            listed = "; ".join(f"{u}: {r}" for u, r in list(failures.items())[:LISTED_FAILURES])
            more = len(failures) - LISTED_FAILURES
            raise SeriesFailedError(
                f"{len(failures)} of {len(order)} series could not be cached ({listed}"
                + (f"; and {more} more" if more > 0 else "")
                + "). The others are cached; fix these and run again (only they are rebuilt).",
                failures,
            )
        return [metas[uid] for uid in order]

    def _build_parallel(
        self,
        todo: Sequence[str],
        workers: int,
        finished: Callable[[str, CacheMeta | None, str | None], None],
        should_stop: ShouldStop | None,
    ) -> None:
        """Build ``todo`` in ``workers`` spawned processes (no fork: safe with threads/CUDA)."""
        if should_stop is not None and should_stop():
            raise CancelledError(f"Caching stopped before the first of {len(todo)} series.")
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(todo)), mp_context=context
        )
        try:
            futures = {pool.submit(_build_entry, self, uid): uid for uid in todo}
            pending = set(futures)
            while pending:
                ready, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in ready:
                    meta, error = future.result()
                    finished(futures[future], meta, error)
                if pending and should_stop is not None and should_stop():
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise CancelledError(
                        f"Caching stopped after {len(todo) - len(pending)} of {len(todo)} "
                        "series (the series being built were finished)."
                    )
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- reading --------------------------------------------------------------------------------
    def _close(self, uid: str) -> None:
        self._open.pop(uid, None)

    def arrays(self, uid: str) -> tuple[np.ndarray, PackedMask]:
        """``(ct, mask)``, both ``(index, row, col)``: a read-only int16 memory map and the
        packed mask, whose indexing returns bool arrays unpacking only what it covers."""
        if uid in self._open:
            self._open.move_to_end(uid)
            return self._open[uid]
        meta = self.meta(uid)
        folder = self.series_dir(uid)
        try:
            pair = _open_entry(folder, meta)
        except (OSError, ValueError) as exc:  # damaged after it was written: build it again
            log.warning("cache entry %s is damaged (%s); rebuilding it", folder, exc)
            self._metas.pop(uid, None)
            meta = self.build(uid)
            pair = _open_entry(folder, meta)
        self._open[uid] = pair
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return pair


def _open_entry(folder: Path, meta: CacheMeta) -> tuple[np.ndarray, PackedMask]:
    """Memory-map an entry's arrays, checking their shapes against its meta."""
    hu = np.load(folder / CT_FILE, mmap_mode="r")
    mask = PackedMask.load(folder / MASK_FILE, meta.shape_irc[2])
    if hu.shape != tuple(meta.shape_irc) or mask.shape != tuple(meta.shape_irc):
        raise ValueError(f"arrays {hu.shape}/{mask.shape}, meta {meta.shape_irc}")
    return hu, mask


def _build_entry(cache: SeriesCache, uid: str) -> tuple[CacheMeta | None, str | None]:
    """Build one entry (in a worker process or this one): its meta, or the reason it failed.

    Errors of the series (unreadable file, disk full...) come back as text, so one bad series
    does not stop the build; a stop request or a programming error propagates.
    """
    try:
        return cache.build(uid), None
    except CancelledError:
        raise
    except (LunaSegError, OSError, RuntimeError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
