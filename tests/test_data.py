"""The on-disk cache and the datasets that read it by crop."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from src_train.ct import Geometry, save_volume
from src_train.data import (
    CT_FILE,
    MASK_FILE,
    META_FILE,
    SampleConfig,
    SeriesCache,
    TrainingDataset,
    ValidationDataset,
    check_training_folder,
)
from src_train.errors import AnnotationError, CancelledError, ConfigError, SeriesNotFoundError
from src_train.luna import LunaFolder
from src_train.masks import build_masks

LUNG_HU = -900
NODULE_HU = 100
BONE_HU = 1500  # above the model's clamp: must survive in the cache, clamped in samples

FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _sphere(shape: tuple[int, int, int], center: tuple[int, int, int], radius: float) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    z, y, x = center
    return (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def write_tiny_luna(
    root: Path,
    specs: list[tuple[str, tuple[int, int, int], list[tuple[int, int, int]], tuple[float, ...]]],
) -> dict[str, Geometry]:
    """Write series ``(uid, shape_irc, nodule centers irc, direction)`` in LUNA16 layout."""
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    geometries = {}
    for uid, shape, centers, direction in specs:
        hu = np.full(shape, LUNG_HU, dtype=np.int16)
        hu[:, :2, :] = BONE_HU
        for center in centers:
            hu[_sphere(shape, center, 3)] = NODULE_HU
        geom = Geometry(shape, (-10.0, 20.0, -30.0), (0.8, 0.8, 2.0), direction)
        save_volume(hu, geom, root / "subset0" / f"{uid}.mhd")
        for center in centers:
            x, y, z = geom.irc_to_xyz(center)
            rows.append(f"{uid},{x},{y},{z},6.0")
        geometries[uid] = geom
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return geometries


SPECS = [
    ("1.1", (12, 40, 44), [(5, 20, 22), (1, 6, 38)], FLIPPED),  # second one near two edges
    ("1.2", (10, 70, 66), [(8, 35, 30)], (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)),
    ("1.3", (9, 48, 48), [(4, 24, 24)], (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
]


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
        mask = np.load(folder / MASK_FILE)
        assert ct.dtype == np.int16 and mask.dtype == np.uint8
        assert ct.shape == mask.shape == meta.shape_irc
        source = cache.folder.load(meta.series_uid)
        expected, _ = build_masks(source, cache.folder.nodules(meta.series_uid))
        assert np.array_equal(mask.astype(bool), expected)
        assert np.array_equal(ct, source.hu)
        assert meta.mask_slices == np.flatnonzero(expected.any(axis=(1, 2))).tolist()
        assert meta.mask_voxels == int(expected.sum())
    assert metas[0].nodule_centers_irc == [(5, 20, 22), (1, 6, 38)]
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
        SeriesCache(luna).build_all(should_stop=lambda: True)


def test_arrays_are_read_only_memory_maps_with_bounded_open_count(luna: Path) -> None:
    cache = SeriesCache(luna, max_open=1)
    hu, mask = cache.arrays("1.1")
    assert isinstance(hu, np.memmap) and not hu.flags.writeable and not mask.flags.writeable
    cache.arrays("1.2")
    assert len(cache._open) == 1
    restored = pickle.loads(pickle.dumps(cache))
    assert len(restored._open) == 0 and len(pickle.dumps(cache)) < 10_000


def test_training_items_clamp_without_touching_the_cache(luna: Path) -> None:
    cache = SeriesCache(luna)
    ds = TrainingDataset(cache, ["1.1", "1.2", "1.3"], epoch_samples=12)
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (7, 64, 64) and image.dtype == torch.float32
        assert label.shape == (1, 64, 64) and label.dtype == torch.bool
        assert image.min() >= -1000 and image.max() <= 1000
        assert label.any(), "the crop contains its nodule"
    assert int(np.load(luna / "cache" / "1.1" / CT_FILE).max()) == BONE_HU


def test_training_crop_offset_is_random_inside_the_window(luna: Path) -> None:
    cache = SeriesCache(luna)
    sample = SampleConfig(crop_size=32, window_size=48)
    ds = TrainingDataset(cache, ["1.2"], epoch_samples=40, sample=sample)
    centers = []
    for i in range(len(ds)):
        image, label = ds[i]
        rows, cols = np.nonzero(label[0].numpy())
        centers.append((rows.mean(), cols.mean()))
        # the center channel is the nodule's slice, neighbours beside it (clipped at the end)
        assert image[3].max() == NODULE_HU
    spread = np.asarray(centers).std(axis=0)
    assert (spread > 2).all(), "the nodule moves around inside the crop"
    assert (np.abs(np.asarray(centers) - 15.5) <= 24 - 0.5).all()


def test_context_repeats_edge_slices(luna: Path) -> None:
    cache = SeriesCache(luna)
    ds = TrainingDataset(cache, ["1.2"], epoch_samples=1)  # nodule on slice 8 of 10
    image, _ = ds[0]
    assert torch.equal(image[4], image[5]) and torch.equal(image[5], image[6])  # slice 9 x3


def test_training_is_deterministic_per_seed_epoch_index(luna: Path) -> None:
    cache = SeriesCache(luna)
    a = TrainingDataset(cache, ["1.1", "1.2"], epoch_samples=6, seed=5)
    b = TrainingDataset(cache, ["1.1", "1.2"], epoch_samples=6, seed=5)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(6))
    b.set_epoch(2)
    assert not all(torch.equal(a[i][0], b[i][0]) for i in range(6))


def test_small_slices_are_padded_to_the_crop(luna: Path) -> None:
    ds = TrainingDataset(SeriesCache(luna), ["1.1"], epoch_samples=4)  # 40 x 44 slices
    image, label = ds[0]
    assert image.shape[-2:] == (64, 64) and label.shape[-2:] == (64, 64)
    assert (image[:, 40:, :] == -1000).all() and not label[:, 40:, :].any()


def test_training_without_nodules_raises(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    write_tiny_luna(root, [("2.1", (6, 32, 32), [], FLIPPED)])
    with pytest.raises(ConfigError, match="no annotated nodules"):
        TrainingDataset(SeriesCache(root), ["2.1"], epoch_samples=4)


def test_validation_covers_exactly_the_mask_slices(luna: Path) -> None:
    cache = SeriesCache(luna)
    ds = ValidationDataset(cache, ["1.1", "1.3"])
    expected = [("1.1", z) for z in cache.meta("1.1").mask_slices] + [
        ("1.3", z) for z in cache.meta("1.3").mask_slices
    ]
    assert ds.items == expected
    image, label = ds[0]
    assert image.shape == (7, 40, 44) and label.shape == (1, 40, 44) and label.any()
    batches = ds.batches(batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    for batch in batches:
        assert len(batch) <= 3 and len({ds.items[i][0] for i in batch}) == 1
    share0, share1 = ds.batches(3, rank=0, world_size=2), ds.batches(3, rank=1, world_size=2)
    assert sorted(map(tuple, share0 + share1)) == sorted(map(tuple, batches))
    assert not set(map(tuple, share0)) & set(map(tuple, share1))


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


@pytest.mark.parametrize(
    ("shape", "center"),
    [
        ((6, 100, 100), (0, 2, 97)),  # first slice, top-right corner of a large slice
        ((6, 100, 100), (5, 97, 2)),  # last slice, bottom-left corner
        ((5, 30, 90), (2, 28, 88)),  # rows fewer than the crop, nodule at a corner
    ],
)
def test_crops_at_the_volume_edge_stay_full_size_and_hold_the_nodule(
    tmp_path: Path, shape: tuple[int, int, int], center: tuple[int, int, int]
) -> None:
    root = tmp_path / "edge"
    write_tiny_luna(root, [("5.1", shape, [center], FLIPPED)])
    ds = TrainingDataset(SeriesCache(root), ["5.1"], epoch_samples=16)
    for i in range(len(ds)):  # every random offset of the 96-px window
        image, label = ds[i]
        assert image.shape == (7, 64, 64) and label.shape == (1, 64, 64)
        assert label.any() and bool((image == NODULE_HU).any())
        assert image.min() >= -1000  # padding is air at the clamp, never garbage


def test_an_annotated_nodule_with_an_empty_mask_gives_empty_labels(tmp_path: Path) -> None:
    """The annotation points at lung below the threshold: the mask grows nothing there."""
    root = tmp_path / "emptymask"
    geoms = write_tiny_luna(root, [("6.1", (8, 40, 40), [(4, 20, 20)], FLIPPED)])
    x, y, z = geoms["6.1"].irc_to_xyz((4, 32, 8))
    (root / "annotations.csv").write_text(
        f"seriesuid,coordX,coordY,coordZ,diameter_mm\n6.1,{x},{y},{z},6.0\n"
    )
    cache = SeriesCache(root)
    meta = cache.meta("6.1")
    assert meta.mask_voxels == 0 and meta.mask_slices == []
    image, label = TrainingDataset(cache, ["6.1"], epoch_samples=2)[0]
    assert image.shape == (7, 64, 64) and not label.any()
    assert len(ValidationDataset(cache, ["6.1"])) == 0
