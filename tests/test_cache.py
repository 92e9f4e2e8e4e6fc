"""The training cache: layout, types, reuse and invalidation, read-only maps, guards."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
from tiny_luna import FLIPPED, SPECS, write_tiny_luna

from src_train.cache import CT_FILE, MASK_FILE, META_FILE, SeriesCache, check_training_folder
from src_train.errors import AnnotationError, CancelledError, ConfigError, SeriesNotFoundError
from src_train.luna import LunaFolder
from src_train.masks import build_masks


@pytest.fixture
def luna(tmp_path: Path) -> Path:
    root = tmp_path / "luna"
    write_tiny_luna(root, SPECS)
    return root


def test_cache_layout_types_and_meta(luna: Path) -> None:
    cache = SeriesCache(luna)
    metas = cache.build_all()
    assert [m.series_uid for m in metas] == ["1.1", "1.2", "1.3"]
    for meta in metas:
        folder = luna / "cache" / meta.series_uid
        ct = np.load(folder / CT_FILE)
        bits = np.load(folder / MASK_FILE)
        assert ct.dtype == np.int16 and bits.dtype == np.uint8
        assert ct.shape == meta.shape_irc
        assert bits.shape == (*meta.shape_irc[:2], -(-meta.shape_irc[2] // 8))  # 8 voxels/byte
        mask = np.unpackbits(bits, axis=-1, count=meta.shape_irc[2])
        source, _ = cache.folder.load(meta.series_uid).canonical()  # the frame models see
        expected, _ = build_masks(source, cache.folder.nodules(meta.series_uid))
        assert np.array_equal(mask.astype(bool), expected)
        assert np.array_equal(ct, source.hu)
        assert meta.mask_slices == np.flatnonzero(expected.any(axis=(1, 2))).tolist()
        assert meta.mask_voxels == int(expected.sum())
    # 1.1 runs against world x and y: canonical rows and columns are reversed
    assert metas[0].nodule_centers_irc == [
        (5, 40 - 1 - 20, 44 - 1 - 22),
        (1, 40 - 1 - 6, 44 - 1 - 38),
    ]
    assert metas[0].threshold_hu == -700 and metas[0].mask_method == "grow"


def test_cache_is_reused_and_invalidated(luna: Path) -> None:
    SeriesCache(luna).build_all()
    meta_file = luna / "cache" / "1.3" / META_FILE
    stamp = meta_file.stat().st_mtime_ns
    assert SeriesCache(luna).is_valid("1.3")
    SeriesCache(luna).build_all()
    assert meta_file.stat().st_mtime_ns == stamp, "a valid entry is not rebuilt"
    assert not SeriesCache(luna, threshold_hu=-500).is_valid("1.3")
    assert not SeriesCache(luna, mask_method="ball").is_valid("1.3")
    raw = luna / "subset0" / "1.3.raw"
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    assert not SeriesCache(luna).is_valid("1.3"), "a changed source file invalidates"
    SeriesCache(luna).build_all()
    assert SeriesCache(luna).is_valid("1.3")
    csv = luna / "annotations.csv"
    csv.write_text(csv.read_text().replace("6.0\n", "7.0\n", 1))
    assert not SeriesCache(luna).is_valid("1.1"), "changed annotations invalidate"


def test_cache_dir_option_and_no_temp_files(luna: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    SeriesCache(luna, cache_dir=other).build_all(["1.2"])
    assert sorted(p.name for p in (other / "1.2").iterdir()) == [CT_FILE, MASK_FILE, META_FILE]
    assert not (luna / "cache").exists()


def test_cache_files_get_the_umask_permissions(luna: Path) -> None:
    old = os.umask(0o022)
    try:
        SeriesCache(luna).build_all(["1.3"])
    finally:
        os.umask(old)
    for name in (CT_FILE, MASK_FILE, META_FILE):
        assert stat.S_IMODE((luna / "cache" / "1.3" / name).stat().st_mode) == 0o644, name


def test_build_all_reports_progress_and_stops(luna: Path) -> None:
    seen: list[tuple[int, int, str]] = []
    SeriesCache(luna).build_all(progress=lambda d, t, m: seen.append((d, t, m)))
    assert seen == [(1, 3, "1.1"), (2, 3, "1.2"), (3, 3, "1.3")]
    with pytest.raises(CancelledError):
        SeriesCache(luna, cache_dir=luna / "fresh").build_all(should_stop=lambda: True)
    assert not (luna / "fresh").exists()
    assert len(SeriesCache(luna).build_all(should_stop=lambda: True)) == 3  # nothing to stop


def test_arrays_are_read_only_memory_maps_with_bounded_open_count(luna: Path) -> None:
    cache = SeriesCache(luna, max_open=1)
    hu, mask = cache.arrays("1.1")
    assert isinstance(hu, np.memmap) and not hu.flags.writeable
    assert isinstance(mask.bits, np.memmap) and not mask.bits.flags.writeable
    crop = mask[5, 10:30, 3:40]
    crop[:] = True  # a sample's copy: the cache is untouched
    assert not mask[5, 10:30, 3:40].all()
    cache.arrays("1.2")
    assert len(cache._open) == 1
    restored = pickle.loads(pickle.dumps(cache))
    assert len(restored._open) == 0 and len(pickle.dumps(cache)) < 10_000


def test_folder_without_series_or_annotations_is_refused_by_name(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SeriesNotFoundError, match=r"empty.*subset0"):
        check_training_folder(LunaFolder(empty))
    bare = tmp_path / "bare"
    write_tiny_luna(bare, [("3.1", (6, 32, 32), [(3, 16, 16)], FLIPPED)])
    (bare / "annotations.csv").unlink()
    with pytest.raises(AnnotationError, match=r"bare.*annotations\.csv"):
        check_training_folder(LunaFolder(bare))


def test_unknown_mask_method_is_refused_before_caching(luna: Path) -> None:
    with pytest.raises(ConfigError, match="wobble"):
        SeriesCache(luna, mask_method="wobble")
    assert not (luna / "cache").exists()
