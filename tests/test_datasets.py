"""Training crops read from the cache: what each sample holds, and the mix of negatives."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_luna import BONE_HU, FLIPPED, NODULE_HU, SPECS, write_tiny_luna

from src_train.cache import CT_FILE, SeriesCache
from src_train.ct import load_ct, save_volume
from src_train.datasets import (
    BODY,
    HARD,
    NODULE,
    SampleConfig,
    TrainingDataset,
    nodule_slice_extent,
)
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
    # the nodule is on file slice 8 of 10; the file runs against world +z, so the cache (the
    # canonical frame) holds it on slice 1: the context repeats slice 0 three times
    ds = TrainingDataset(cache, ["1.2"], epoch_samples=1)
    assert ds.spec(0).index == 1
    image, _ = ds[0]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert not torch.equal(image[2], image[3])


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


def test_negative_crops_mix_body_and_hard_negatives(luna: Path) -> None:
    cache = SeriesCache(luna)
    sample = SampleConfig(negative_fraction=0.5, hard_fraction=1.0)
    ds = TrainingDataset(cache, ["1.1", "1.3"], epoch_samples=400, sample=sample)
    specs = [ds.spec(i) for i in range(len(ds))]
    kinds = [s.kind for s in specs]
    assert kinds.count(HARD) == 0, "no hard negative before the pool has a spot"
    assert 0.4 < kinds.count(BODY) / len(specs) < 0.6
    nodules = [s for s in specs if s.kind == NODULE]
    assert all(ds[i][1].any() for i in range(20) if specs[i].kind == NODULE)
    assert len(nodules) + kinds.count(BODY) == len(specs)
    ds.set_hard_negatives([(1, 3, 10, 12)])
    hard = [ds.spec(i) for i in range(len(ds))]
    assert {s.kind for s in hard} == {NODULE, HARD}
    for spec in hard:
        if spec.kind == HARD:  # near the spot: same series and slice, moved inside the window
            assert (spec.series, spec.index) == (1, 3)
            assert abs(spec.row0 - 10) <= 16 or spec.row0 == 0
    assert [s.kind for s in hard] == kinds_with_pool(kinds)


def test_body_crops_are_centered_on_dense_voxels(tmp_path: Path) -> None:
    """A lung-dark slice with one dense 24 x 24 block (3.5 % of it) and dense corners (so the
    body box is the whole slice): body crops are centered in the block far more often than a
    uniform draw would be (each crop tries a few centers)."""
    root = tmp_path / "block"
    write_tiny_luna(root, [("7.1", (8, 128, 128), [(4, 64, 64)], FLIPPED)])
    path = root / "subset0" / "7.1.mhd"
    ct = load_ct(path)
    hu = np.full(ct.shape_irc, -1000, dtype=np.int16)
    hu[:, 52:76, 52:76] = 40  # symmetric: the same place in the canonical (flipped) cache
    hu[:, [0, -1], :] = hu[:, :, [0, -1]] = 40
    save_volume(hu, ct.geometry, path, overwrite=True)
    sample = SampleConfig(negative_fraction=0.9)
    ds = TrainingDataset(SeriesCache(root), ["7.1"], epoch_samples=300, sample=sample)
    centers = np.array(
        [(s.row0 + 32, s.col0 + 32) for s in map(ds.spec, range(len(ds))) if s.kind == BODY]
    )
    in_block = ((centers >= 52) & (centers < 76)).all(axis=1).mean()
    assert in_block > 4 * (24 * 24) / (128 * 128)


def kinds_with_pool(kinds: list[str]) -> list[str]:
    """A pool turns every negative into a hard one (hard_fraction 1), positives stay."""
    return [HARD if k == BODY else k for k in kinds]


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


def test_edge_crops_show_the_nodule_as_if_the_scan_ended_beside_it(luna: Path) -> None:
    cache = SeriesCache(luna)
    sample = SampleConfig(edge_fraction=1.0)
    ds = TrainingDataset(cache, ["1.3"], epoch_samples=40, sample=sample)  # nodule on slice 4
    plain = TrainingDataset(cache, ["1.3"], epoch_samples=40)
    cuts = set()
    for i in range(len(ds)):
        spec = ds.spec(i)
        assert (spec.first is None) != (spec.last is None), "one scan end, on one side"
        image, label = ds[i]
        reference, ref_label = plain.crop(replace(spec, first=None, last=None))
        assert torch.equal(label, ref_label) and label.any(), "the nodule and its mask stay"
        if spec.last is not None:
            beyond = spec.last - spec.index  # slices kept after the nodule's
            cuts.add(("after", beyond))
            kept = 3 + beyond + 1
            assert torch.equal(image[:kept], reference[:kept])
            assert all(torch.equal(image[k], reference[kept - 1]) for k in range(kept, 7))
        else:
            beyond = spec.index - spec.first
            cuts.add(("before", beyond))
            first_kept = 3 - beyond
            assert torch.equal(image[first_kept:], reference[first_kept:])
            assert all(torch.equal(image[k], reference[first_kept]) for k in range(first_kept))
    assert cuts == {(side, k) for side in ("after", "before") for k in range(3)}


def test_nodule_slice_extent_is_the_mask_run_through_the_centre() -> None:
    mask = np.zeros((10, 5, 5), dtype=bool)
    mask[2:7, 2, 2] = True
    mask[8, 2, 2] = True  # another run, not through the centre
    assert nodule_slice_extent(mask[:, 2, 2], 4) == (2, 6)
    assert nodule_slice_extent(mask[:, 2, 2], 8) == (8, 8)
    assert nodule_slice_extent(mask[:, 2, 2], 1) == (1, 1)  # centre outside the mask
    mask[:, 1, 1] = True
    assert nodule_slice_extent(mask[:, 1, 1], 0) == (0, 9)  # runs to both ends


def test_off_center_crops_visit_every_slice_of_the_nodule(luna: Path) -> None:
    cache = SeriesCache(luna)
    uid = "1.2"
    (z, r, c) = cache.meta(uid).nodule_centers_irc[0]
    mask = cache.arrays(uid)[1]
    covered = {int(k) for k in np.flatnonzero(mask[:, r, c])}
    assert len(covered) > 1 and z in covered
    centred = TrainingDataset(cache, [uid], epoch_samples=60)
    spread = TrainingDataset(
        cache, [uid], epoch_samples=60, sample=SampleConfig(off_center_fraction=1.0)
    )
    assert {centred.spec(i).index for i in range(60)} == {z}
    assert {spread.spec(i).index for i in range(60)} == covered
    for i in range(0, 60, 7):
        spec = spread.spec(i)
        image, label = spread[i]
        hu = cache.arrays(uid)[0][
            spec.index, spec.row0 : spec.row0 + 64, spec.col0 : spec.col0 + 64
        ]
        np.testing.assert_array_equal(image[3].numpy(), np.clip(hu, -1000, 1000))  # that slice
        np.testing.assert_array_equal(
            label[0].numpy(),
            mask[spec.index, spec.row0 : spec.row0 + 64, spec.col0 : spec.col0 + 64],
        )
        assert label.any(), "every slice shown holds part of the nodule"


def test_a_slab_averages_the_scan_over_its_thickness_by_hand() -> None:
    from src_train.datasets import _slab_stack

    hu = np.full((9, 4, 4), -1000, dtype=np.int16)
    hu[4] = 0  # one bright slice
    rows = cols = slice(None)
    thin = _slab_stack(hu, 4, 1, rows, cols, 1.0, 0.0)[0, :, 0, 0]
    np.testing.assert_array_equal(thin, [-1000, 0, -1000])
    # 2 slices thicker: centres at -1, -0.5, 0, 0.5, 1 slice; linear interpolation sees the
    # bright slice with weights 0, 0.5, 1, 0.5, 0 in the centre channel (40 % of it) and
    # 0, 0, 0, 0.5, 1 in the channel one slice away (30 %)
    thick = _slab_stack(hu, 4, 1, rows, cols, 1.0, 2.0)[0, :, 0, 0]
    np.testing.assert_allclose(thick, [-700, -600, -700])
    # a ramp along z is unchanged by a symmetric slab
    ramp = (np.arange(9, dtype=np.int16)[:, None, None] * 50 - 600).repeat(4, 1).repeat(4, 2)
    np.testing.assert_allclose(
        _slab_stack(ramp, 4, 2, rows, cols, 1.5, 1.3), _slab_stack(ramp, 4, 2, rows, cols, 1.5, 0)
    )


def test_slab_crops_keep_their_places_and_thin_scans_only(luna: Path) -> None:
    cache = SeriesCache(luna)
    uids = ["1.1", "1.2", "1.3"]
    plain = SampleConfig(context_mm=2.0, negative_fraction=0.3)
    base = TrainingDataset(cache, uids, epoch_samples=40, sample=plain)
    slabs = TrainingDataset(cache, uids, epoch_samples=40, sample=replace(plain, slab_fraction=1.0))
    for i in range(40):
        a, b = base.spec(i), slabs.spec(i)
        assert replace(b, slab=0.0) == a  # the same crop, only thicker
        # 2 mm slices shown 2-3 mm thick: 0-0.5 slices more
        assert 0.0 < b.slab <= 0.5
        image_a, label_a = base[i]
        image_b, label_b = slabs[i]
        assert torch.equal(label_a, label_b)
        if a.kind == NODULE and b.slab > 0.2:
            assert not torch.equal(image_a, image_b)  # the nodule's ends blur along z
    half = TrainingDataset(cache, uids, epoch_samples=200, sample=replace(plain, slab_fraction=0.5))
    share = np.mean([half.spec(i).slab > 0 for i in range(200)])
    assert 0.35 < share < 0.65
    with pytest.raises(ConfigError, match="context in mm"):
        SampleConfig(slab_fraction=0.5)
    with pytest.raises(ConfigError, match="slab_fraction must lie in"):
        SampleConfig(context_mm=2.0, slab_fraction=1.5)
