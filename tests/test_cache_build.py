"""Building the training cache: packed masks, parallel workers, failures, interruptions, disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_luna import SPECS, write_tiny_luna

import src_train.cache as cache_module
from src_train.cache import (
    CT_FILE,
    ENTRY_OVERHEAD_BYTES,
    MASK_FILE,
    META_FILE,
    SeriesCache,
    entry_bytes,
    series_shape_irc,
)
from src_train.cli import main
from src_train.errors import CancelledError, OutputWriteError, SeriesReadError
from src_train.masks import build_masks


@pytest.fixture
def luna(tmp_path: Path) -> Path:
    root = tmp_path / "luna"
    write_tiny_luna(root, SPECS)
    return root


def entry_state(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (root / "cache").rglob("*") if p.is_file()}


def test_masks_are_stored_as_bits_and_the_estimate_matches_the_files(luna: Path) -> None:
    cache = SeriesCache(luna)
    needed, todo = cache.estimate_bytes(cache.series_uids)
    assert todo == ["1.1", "1.2", "1.3"]
    metas = cache.build_all()
    total = 0
    for meta in metas:
        folder = luna / "cache" / meta.series_uid
        size = sum(p.stat().st_size for p in folder.iterdir())
        expected = entry_bytes(meta.shape_irc)
        assert expected - ENTRY_OVERHEAD_BYTES < size <= expected
        total += expected
        z, r, c = meta.shape_irc
        # int16 CT plus one bit per voxel, rows padded to whole bytes (+ two .npy headers)
        arrays = (folder / CT_FILE).stat().st_size + (folder / MASK_FILE).stat().st_size
        assert arrays - 2 * 128 == z * r * c * 2 + z * r * -(-c // 8)
        assert series_shape_irc(cache.folder.series_path(meta.series_uid)) == meta.shape_irc
    assert needed == total + max(entry_bytes(m.shape_irc) for m in metas)
    assert cache.estimate_bytes(cache.series_uids) == (0, [])  # nothing left to build


def test_parallel_workers_build_the_same_entries(luna: Path, tmp_path: Path) -> None:
    serial = SeriesCache(luna, cache_dir=tmp_path / "serial").build_all()
    seen: list[tuple[int, int, str]] = []
    parallel = SeriesCache(luna, cache_dir=tmp_path / "parallel").build_all(
        progress=lambda d, t, m: seen.append((d, t, m)), workers=2
    )
    assert parallel == serial
    assert sorted(m for _, _, m in seen) == ["1.1", "1.2", "1.3"]
    assert [d for d, _, _ in seen] == [1, 2, 3] and {t for _, t, _ in seen} == {3}
    for meta in serial:
        for name in (CT_FILE, MASK_FILE):
            a = (tmp_path / "serial" / meta.series_uid / name).read_bytes()
            assert a == (tmp_path / "parallel" / meta.series_uid / name).read_bytes()


def test_a_bad_series_is_reported_after_the_others_are_built(luna: Path) -> None:
    raw = luna / "subset0" / "1.2.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    cache = SeriesCache(luna)
    with pytest.raises(SeriesReadError, match=r"1 of 3 series could not be cached \(1\.2: "):
        cache.build_all(workers=2)
    assert SeriesCache(luna).is_valid("1.1") and SeriesCache(luna).is_valid("1.3")
    assert not SeriesCache(luna).is_valid("1.2")


def test_an_interrupted_build_resumes_with_the_unfinished_series_only(
    luna: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while series 1.2's mask is written: what a kill would leave behind."""
    real = cache_module.atomic_write
    calls = {"n": 0}

    def full_on_the_fourth(path, mode="w", **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:  # 1.1: ct, mask; 1.2: ct, then the mask fails half-way
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, mode, **kwargs)

    monkeypatch.setattr(cache_module, "atomic_write", full_on_the_fourth)
    with pytest.raises(SeriesReadError, match=r"1\.2: OSError: \[Errno 28\] No space left"):
        SeriesCache(luna).build_all()
    monkeypatch.setattr(cache_module, "atomic_write", real)
    broken = luna / "cache" / "1.2"
    assert (broken / CT_FILE).is_file() and not (broken / META_FILE).exists()
    (broken / f".{MASK_FILE}.999.dead.tmp").write_bytes(b"half")  # a killed writer's file

    before = entry_state(luna)
    cache = SeriesCache(luna)
    assert [u for u in cache.series_uids if not cache.is_valid(u)] == ["1.2"]
    cache.build_all()
    after = entry_state(luna)
    unchanged = [p for p in before if p in after and after[p] == before[p]]
    assert {p.parent.name for p in unchanged} == {"1.1", "1.3"}
    assert sorted(p.name for p in broken.iterdir()) == sorted([CT_FILE, MASK_FILE, META_FILE])
    _hu, mask = cache.arrays("1.2")
    canonical, _ = cache.folder.load("1.2").canonical()  # the frame the cache stores
    expected, _ = build_masks(canonical, cache.folder.nodules("1.2"))
    assert np.array_equal(np.asarray(mask), expected)


def test_a_damaged_entry_is_rebuilt_when_read(luna: Path) -> None:
    SeriesCache(luna).build_all()
    bits = luna / "cache" / "1.3" / MASK_FILE
    bits.write_bytes(bits.read_bytes()[:90])  # truncated behind the cache's back
    hu, mask = SeriesCache(luna).arrays("1.3")
    assert mask.shape == hu.shape == (9, 48, 48) and mask[4].any()


def test_the_disk_space_is_checked_before_anything_is_built(
    luna: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Usage:
        free = 50_000

    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(
        OutputWriteError, match=r"needs about 0\.0 GiB for 3 series .* 0\.0 GiB free"
    ):
        SeriesCache(luna).check_disk_space(SeriesCache(luna).series_uids)
    assert main(["cache", str(luna)]) == 2
    err = capsys.readouterr().err
    assert "--cache-dir" in err and str(luna) in err
    assert not (luna / "cache").exists()


def test_cli_cache_reports_the_estimate_and_resumes(
    luna: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", str(luna), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 series to build" in out and "GiB free" in out and "3 series cached" in out
    assert main(["cache", str(luna), "--workers", "2"]) == 0
    assert "0 of 3 series to build" in capsys.readouterr().out


def test_a_stop_request_ends_a_parallel_build_between_series(luna: Path) -> None:
    with pytest.raises(CancelledError, match="before the first of 3"):
        SeriesCache(luna).build_all(should_stop=lambda: True, workers=2)
    assert not (luna / "cache").exists()
    asked = {"n": 0}

    def stop_after_the_first_look() -> bool:
        asked["n"] += 1
        return asked["n"] > 1

    with pytest.raises(CancelledError, match="Caching stopped after"):
        SeriesCache(luna).build_all(should_stop=stop_after_the_first_look, workers=2)
    cache = SeriesCache(luna)
    valid = [u for u in cache.series_uids if cache.is_valid(u)]
    assert valid, "the series being built were finished"
    for uid in set(cache.series_uids) - set(valid):  # never started: no trace that looks done
        assert not (luna / "cache" / uid / META_FILE).exists()
    assert len(cache.build_all(workers=2)) == 3
