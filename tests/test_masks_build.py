"""Records of every nodule, flags, and MaskState following a threshold or method."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import FLIPPED, blobby_ct, graded_ct, make_ct, nodule_at, paint_box

from src_train import masks
from src_train.errors import ConfigError, GeometryError
from src_train.luna import Nodule
from src_train.masks import (
    MaskState,
    available_methods,
    build_masks,
    mask_nodule,
)


# ---------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------
def test_center_outside_volume_raises_or_skips() -> None:
    ct = make_ct()
    inside = nodule_at(ct, (10, 12, 14))
    outside = Nodule(ct.series_uid, (500.0, 20.0, -290.0), 6.0)
    with pytest.raises(GeometryError) as info:
        build_masks(ct, [inside, outside])
    message = str(info.value)
    assert "1.2.3.test" in message and "500.0" in message and "extent" in message
    assert "lunaseg mask --skip-outside" in message and "on_outside='skip'" in message
    _, recs = build_masks(ct, [inside, outside], on_outside="skip")
    assert recs[1].skipped and masks.NOTE_OUTSIDE in recs[1].notes
    assert recs[1].voxel_count == 0 and not recs[0].skipped


def test_center_below_threshold_is_flagged_not_hidden() -> None:
    ct = make_ct()
    center = (10, 12, 14)
    ct.hu[9:12, 11:14, 13:16] = -750  # faint (ground-glass like) at the default threshold
    mask, (rec,) = build_masks(ct, [nodule_at(ct, center)])
    assert masks.NOTE_CENTER_BELOW in rec.notes
    assert masks.NOTE_EMPTY in rec.notes and rec.voxel_count == 0 and not mask.any()
    mask, (rec,) = build_masks(ct, [nodule_at(ct, center)], threshold_hu=-800)
    assert rec.notes == [] and rec.voxel_count == 27


def test_unknown_method_and_parameter() -> None:
    ct = make_ct()
    with pytest.raises(ConfigError, match="grow"):
        build_masks(ct, [nodule_at(ct, (10, 12, 14))], method="nope")
    with pytest.raises(ConfigError, match="no parameter"):
        build_masks(ct, [nodule_at(ct, (10, 12, 14))], bogus_mm=3)


@pytest.mark.parametrize("method", available_methods())
def test_mask_state_matches_from_scratch(method: str) -> None:
    ct, nodules = graded_ct()
    state = MaskState(ct, nodules, method=method)
    mask_ref = state.mask  # the viewer's reference: must stay the same array
    for t in (-700, -300, -850, -100, -950, 0, -700):
        state.set_threshold(t)
        expected, recs = build_masks(ct, nodules, t, method)
        assert state.mask is mask_ref
        assert np.array_equal(state.mask, expected), t
        assert [r.voxel_count for r in state.records] == [r.voxel_count for r in recs]
    assert state.set_threshold(-700) is None  # nothing changed


def test_mask_state_changed_region_covers_changes() -> None:
    ct, nodules = graded_ct()
    state = MaskState(ct, nodules)
    before = state.mask.copy()
    region = state.set_threshold(-200)
    assert region is not None
    changed = before != state.mask
    outside = changed.copy()
    outside[region] = False
    assert changed.any() and not outside.any()


def test_mask_nodule_single() -> None:
    ct = make_ct()
    paint_box(ct, (10, 12, 14), (1, 1, 1))
    rec = mask_nodule(ct, nodule_at(ct, (10, 12, 14)))
    assert rec.radius_irc == (2, 2, 2) and rec.voxel_count == 27
    assert rec.to_row()["radius_irc"] == "2 2 2"


def test_mask_state_on_synthetic_scan(tiny_synth_dir) -> None:
    from src_train.luna import LunaFolder

    folder = LunaFolder(tiny_synth_dir)
    uid = folder.series_uids[0]
    ct, nodules = folder.load(uid), folder.nodules(uid)
    state = MaskState(ct, nodules)
    for t in (-500, -800, -650):
        state.set_threshold(t)
        assert np.array_equal(state.mask, build_masks(ct, nodules, t)[0])
    state.set_method("region")
    assert np.array_equal(state.mask, build_masks(ct, nodules, -650, "region")[0])


@pytest.mark.parametrize("method", available_methods())
def test_mask_state_with_edges_overlaps_and_skipped_nodule(method: str) -> None:
    ct, nodules = blobby_ct((11, 21, 17), FLIPPED, seed=5)
    nodules.append(Nodule(ct.series_uid, (900.0, 0.0, 0.0), 6.0))  # outside: skipped
    state = MaskState(ct, nodules, method=method, on_outside="skip")
    assert state.records[-1].skipped
    for t in (-700, 30, -880, -40.5, -700):
        before = state.mask.copy()
        region = state.set_threshold(t)
        expected, _ = build_masks(ct, nodules, t, method, on_outside="skip")
        assert np.array_equal(state.mask, expected), t
        changed = before != state.mask
        if region is None:
            assert not changed.any()
        else:
            changed[region] = False
            assert not changed.any()
