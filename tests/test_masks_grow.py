"""The SPEC's reference rule (grow): radii, boxes, the volume edge, one density test."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import (
    FLIPPED,
    IDENTITY,
    LUNG_HU,
    OBLIQUE_FLIP,
    PERMUTED,
    SOLID_HU,
    blobby_ct,
    make_ct,
    nodule_at,
    paint_box,
    spec_rule,
)

from src_train import masks
from src_train.ct import CtVolume
from src_train.errors import ConfigError
from src_train.masks import (
    DEFAULT_THRESHOLD_HU,
    MaskState,
    build_masks,
)
from src_train.metrics import dice


# ---------------------------------------------------------------------------------------------
# The reference rule
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [IDENTITY, FLIPPED, PERMUTED], ids=["id", "flip", "perm"])
def test_grow_radii_are_first_failing_radius(direction) -> None:
    ct = make_ct(direction=direction)
    center = (10, 12, 14)
    half = (3, 4, 5)
    paint_box(ct, center, half)
    mask, (rec,) = build_masks(ct, [nodule_at(ct, center)])
    # Dense out to +-half, so growth stops at half + 1 on each axis.
    assert rec.center_irc == center
    assert rec.radius_irc == (4, 5, 6)
    assert rec.box_lo_irc == (6, 7, 8)
    assert rec.box_hi_irc == (15, 18, 21)
    assert rec.voxel_count == 7 * 9 * 11 == int(mask.sum())
    truth = np.zeros_like(mask)
    truth[tuple(slice(c - h, c + h + 1) for c, h in zip(center, half, strict=True))] = True
    assert dice(mask, truth) == 1.0
    for axis, radius in enumerate(rec.radius_irc):
        steps = rec.steps_along(axis)
        assert [s.radius for s in steps] == list(range(2, radius + 1))
        assert all(s.accepted for s in steps[:-1]) and not steps[-1].accepted
        assert steps[-1].stopped_by == "both"
    assert rec.notes == []


def test_grow_stops_when_one_side_fails() -> None:
    ct = make_ct()
    center = (10, 12, 14)
    ct.hu[10, 12, 8:24] = SOLID_HU  # dense along col from 8 to 23
    ct.hu[10, 12, 17] = LUNG_HU  # ...but a gap at +3
    _, (rec,) = build_masks(ct, [nodule_at(ct, center)])
    col_steps = rec.steps_along(2)
    assert rec.radius_irc[2] == 3
    assert col_steps[-1].stopped_by == "plus"
    assert col_steps[-1].hu_minus == SOLID_HU and col_steps[-1].hu_plus == LUNG_HU
    # Row and index only see the center line: they stop at the start radius.
    assert rec.radius_irc[:2] == (2, 2)


@pytest.mark.parametrize("first", [True, False], ids=["slice0", "last"])
def test_grow_at_volume_edge_no_wrap(first: bool) -> None:
    ct = make_ct()
    n_slices = ct.shape_irc[0]
    center = (0, 12, 14) if first else (n_slices - 1, 12, 14)
    paint_box(ct, center, (3, 3, 3))
    # A dense slab at the far end: a wrapping index would see it and grow the box.
    far = n_slices - 1 if first else 0
    ct.hu[far, 9:16, 11:18] = SOLID_HU
    mask, (rec,) = build_masks(ct, [nodule_at(ct, center)])
    assert rec.radius_irc == (2, 4, 4)
    index_steps = rec.steps_along(0)
    assert len(index_steps) == 1 and index_steps[0].stopped_by == "edge"
    assert masks.NOTE_EDGE in rec.notes
    lo, hi = rec.box_lo_irc[0], rec.box_hi_irc[0]
    assert (lo, hi) == ((0, 3) if first else (n_slices - 3, n_slices))
    assert rec.voxel_count == 3 * 7 * 7 == int(mask.sum())
    assert not mask[far].any()


def test_mask_is_box_and_dense_with_overlapping_boxes() -> None:
    ct = make_ct(shape=(20, 30, 30))
    a, b = (10, 12, 12), (10, 12, 17)
    paint_box(ct, a, (3, 3, 2))
    paint_box(ct, b, (3, 3, 2))  # touches a: one dense block cols 10..19
    ct.hu[10, 5, 5] = SOLID_HU  # dense but inside no box
    nodules = [nodule_at(ct, a), nodule_at(ct, b)]
    mask, recs = build_masks(ct, nodules)
    boxes = np.zeros_like(mask)
    for rec in recs:
        boxes[rec.box_slices] = True
    assert np.array_equal(mask, boxes & (ct.hu > DEFAULT_THRESHOLD_HU))
    assert not mask[10, 5, 5]
    # Each record keeps its own count; the volume is their OR, not their sum.
    assert sum(r.voxel_count for r in recs) > int(mask.sum())


def test_int_threshold_compare_matches_float_compare() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-1000, 500, size=(5, 6, 7)).astype(np.int16)
    for t in (-700, -700.5, -699.5, -40000, 40000):
        assert np.array_equal(masks.dense(values, t), values.astype(np.float64) > t)


@pytest.mark.parametrize(
    ("shape", "direction"),
    [((13, 17, 19), IDENTITY), ((9, 31, 7), FLIPPED), ((15, 11, 23), OBLIQUE_FLIP)],
    ids=["odd", "flipped", "permuted-flip"],
)
def test_build_masks_equals_literal_spec_rule(shape, direction) -> None:
    for seed in range(3):
        ct, nodules = blobby_ct(shape, direction, seed)
        for threshold in (-700, -100, 20.5):
            mask, recs = build_masks(ct, nodules, threshold)
            expected = np.zeros(shape, dtype=bool)
            for nodule, rec in zip(nodules, recs, strict=True):
                center = tuple(int(v) for v in ct.geometry.xyz_to_irc_index(nodule.center_xyz_mm))
                radii, own = spec_rule(ct.hu, center, threshold)
                assert rec.center_irc == center and rec.radius_irc == radii
                local = np.zeros(shape, dtype=bool)
                local[rec.box_slices] = rec.local_mask
                assert np.array_equal(local, own) and rec.voxel_count == int(own.sum())
                expected |= own
            assert np.array_equal(mask, expected)


def test_non_finite_threshold_is_a_config_error() -> None:
    ct = make_ct()
    paint_box(ct, (10, 12, 14), (2, 2, 2))
    nodule = nodule_at(ct, (10, 12, 14))
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match="threshold"):
            build_masks(ct, [nodule], bad)
    state = MaskState(ct, [nodule])
    before = state.mask.copy()
    with pytest.raises(ConfigError, match="threshold"):
        state.set_threshold(float("nan"))
    assert state.threshold_hu == DEFAULT_THRESHOLD_HU and np.array_equal(state.mask, before)


def test_float_volume_growth_and_mask_use_one_density_test() -> None:
    """A voxel that growth accepted as dense is in the mask, whatever the volume's dtype."""
    ct = make_ct()
    hu = ct.hu.astype(np.float32)
    hu[10, 12, 8:21] = np.float32(-700.3)  # float32(-700.3) > -700.3 in float64, not in float32
    hu[10, 12, 14] = SOLID_HU
    ct = CtVolume(hu, ct.geometry, ct.series_uid)
    _, (rec,) = build_masks(ct, [nodule_at(ct, (10, 12, 14))], threshold_hu=-700.3)
    local = np.zeros(ct.shape_irc, dtype=bool)
    local[rec.box_slices] = rec.local_mask
    for step in rec.steps:
        if step.accepted:
            for sign in (-1, 1):
                voxel = list(rec.center_irc)
                voxel[step.axis] += sign * step.radius
                assert local[tuple(voxel)], step
