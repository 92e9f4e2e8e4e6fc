"""Training crops and validation slices read from the cache: what each sample holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_luna import BONE_HU, FLIPPED, NODULE_HU, SPECS, write_tiny_luna

from src_train.cache import CT_FILE, SeriesCache
from src_train.datasets import SampleConfig, TrainingDataset, ValidationDataset
from src_train.errors import ConfigError


@pytest.fixture
def luna(tmp_path: Path) -> Path:
    root = tmp_path / "luna"
    write_tiny_luna(root, SPECS)
    return root


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
