"""The diameter-aware methods (ball, region) against hand-built scenes with known shapes."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import (
    ball,
    diameter_scene,
    make_ct,
    nodule_at,
    nodule_center,
    paint_box,
)

from src_train import masks
from src_train.luna import Nodule
from src_train.masks import (
    build_masks,
)
from src_train.metrics import dice


@pytest.mark.parametrize("spacing_irc", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7)], ids=["iso", "aniso"])
def test_region_cuts_vessel_and_chest_wall(spacing_irc) -> None:
    ct, nodule, truth = diameter_scene(spacing_irc, 10.0, wall=True, vessel=True)
    grow_mask, _ = build_masks(ct, [nodule], method="grow")
    region_mask, (rec,) = build_masks(ct, [nodule], method="region")
    assert dice(region_mask, truth) >= 0.93
    assert dice(region_mask, truth) > dice(grow_mask, truth) + 0.1
    assert any("large structure" in n for n in rec.notes)
    # Without the vessel the radius is the physical one: 5.3 mm over the voxel size, per axis.
    ct, nodule, truth = diameter_scene(spacing_irc, 10.6, wall=True, vessel=False)
    region_mask, (rec,) = build_masks(ct, [nodule], method="region")
    assert dice(region_mask, truth) >= 0.95
    assert rec.radius_irc == tuple(int(5.3 // s) for s in spacing_irc)


def test_ball_uses_physical_diameter() -> None:
    spacing_irc = (2.5, 0.7, 0.7)
    ct, nodule, truth = diameter_scene(spacing_irc, 8.0, wall=False, vessel=True)
    mask, _ = build_masks(ct, [nodule], method="ball")
    assert dice(mask, truth) >= 0.85
    assert not (mask & ~ball(truth.shape, nodule_center(ct, nodule), 4.6, spacing_irc)).any()


@pytest.mark.parametrize("method", ["ball", "region"])
@pytest.mark.parametrize("diameter", [None, 0.0, -3.0, float("nan")])
def test_missing_diameter_falls_back_to_grow(method: str, diameter) -> None:
    ct = make_ct()
    paint_box(ct, (10, 12, 14), (2, 3, 4))
    nodule = nodule_at(ct, (10, 12, 14), diameter)
    ref, (ref_rec,) = build_masks(ct, [nodule])
    mask, (rec,) = build_masks(ct, [nodule], method=method)
    assert np.array_equal(mask, ref) and rec.radius_irc == ref_rec.radius_irc == (3, 4, 5)
    assert rec.method == "grow" and rec.steps == ref_rec.steps
    assert any(n.startswith(masks.NOTE_NO_DIAMETER) for n in rec.notes)


def test_region_faint_nodule_lowers_threshold_and_is_not_empty() -> None:
    ct, nodule, truth = diameter_scene((1.0, 1.0, 1.0), 8.0, wall=False, vessel=False)
    ct.hu[truth] = -720  # ground glass: below the default threshold
    grow_mask, (grow_rec,) = build_masks(ct, [nodule])
    mask, (rec,) = build_masks(ct, [nodule], method="region")
    assert masks.NOTE_EMPTY in grow_rec.notes and not grow_mask.any()
    assert dice(mask, truth) >= 0.95
    assert any("ground-glass" in n for n in rec.notes)


def test_region_diameter_far_too_small_keeps_the_nodule() -> None:
    ct, nodule, _ = diameter_scene((1.0, 1.0, 1.0), 14.0, wall=False, vessel=False)
    small = Nodule(nodule.series_uid, nodule.center_xyz_mm, 3.0)  # annotation says 3 mm
    mask, (rec,) = build_masks(ct, [small], method="region")
    assert rec.voxel_count > 0 and mask.any() and masks.NOTE_EMPTY not in rec.notes
    assert any("thicker than the diameter" in n for n in rec.notes)
