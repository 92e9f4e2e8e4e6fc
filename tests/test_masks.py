"""Ground truth from points: growth rule, records, interactive thresholds, methods vs true shapes.

Volumes are built by hand: lung at -850 HU with dense boxes/balls at known places, so every
radius, box and Dice below is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from src_train import masks
from src_train.ct import CtVolume, Geometry
from src_train.errors import ConfigError, GeometryError
from src_train.luna import Nodule
from src_train.masks import (
    DEFAULT_THRESHOLD_HU,
    MaskState,
    available_methods,
    build_masks,
    dice,
    mask_nodule,
)

LUNG_HU = -850
SOLID_HU = 40

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
PERMUTED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def make_ct(
    shape: tuple[int, int, int] = (20, 24, 28),
    spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0),
    direction: tuple[float, ...] = IDENTITY,
    origin: tuple[float, float, float] = (-10.0, 20.0, -300.0),
) -> CtVolume:
    hu = np.full(shape, LUNG_HU, dtype=np.int16)
    geometry = Geometry(shape, origin, spacing_xyz, direction)
    return CtVolume(hu, geometry, "1.2.3.test")


def nodule_at(ct: CtVolume, irc: tuple[int, int, int], diameter_mm: float | None = 6.0) -> Nodule:
    xyz = ct.geometry.irc_to_xyz(np.asarray(irc, dtype=float))
    return Nodule(ct.series_uid, tuple(float(v) for v in xyz), diameter_mm)


def paint_box(ct: CtVolume, center: tuple[int, int, int], half: tuple[int, int, int]) -> None:
    """Dense cuboid center +- half (inclusive), clipped to the volume."""
    sl = tuple(slice(max(0, c - h), c + h + 1) for c, h in zip(center, half, strict=True))
    ct.hu[sl] = SOLID_HU


def ball(shape: tuple[int, int, int], center_irc, radius_mm: float, spacing_irc) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center_irc, spacing_irc, strict=True))
    return d2 <= radius_mm**2


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


# ---------------------------------------------------------------------------------------------
# Interactive thresholds
# ---------------------------------------------------------------------------------------------
def _graded_ct() -> tuple[CtVolume, list[Nodule]]:
    """Three nodules (two with overlapping boxes) whose HU falls off with distance."""
    ct = make_ct(shape=(24, 40, 40))
    centers = [(12, 14, 14), (12, 14, 21), (8, 30, 28)]
    grids = np.ogrid[:24, :40, :40]
    hu = ct.hu.astype(np.float64)
    for c in centers:
        d = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True)))
        hu = np.maximum(hu, 60.0 - 150.0 * d)
    rng = np.random.default_rng(3)
    ct.hu[...] = np.clip(hu + rng.normal(0, 30, hu.shape), -1000, 400).astype(np.int16)
    return ct, [nodule_at(ct, c) for c in centers]


@pytest.mark.parametrize("method", available_methods())
def test_mask_state_matches_from_scratch(method: str) -> None:
    ct, nodules = _graded_ct()
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
    ct, nodules = _graded_ct()
    state = MaskState(ct, nodules)
    before = state.mask.copy()
    region = state.set_threshold(-200)
    assert region is not None
    changed = before != state.mask
    outside = changed.copy()
    outside[region] = False
    assert changed.any() and not outside.any()


def test_dice() -> None:
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    assert dice(a, b) == 1.0
    a[0, 0, :2] = True
    b[0, 0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)


def test_mask_nodule_single() -> None:
    ct = make_ct()
    paint_box(ct, (10, 12, 14), (1, 1, 1))
    rec = mask_nodule(ct, nodule_at(ct, (10, 12, 14)))
    assert rec.radius_irc == (2, 2, 2) and rec.voxel_count == 27
    assert rec.to_row()["radius_irc"] == "2 2 2"


# ---------------------------------------------------------------------------------------------
# Diameter-aware methods
# ---------------------------------------------------------------------------------------------
def _scene(
    spacing_irc: tuple[float, float, float], diameter_mm: float, *, wall: bool, vessel: bool
) -> tuple[CtVolume, Nodule, np.ndarray]:
    """A ball nodule in lung (physical mm), optionally on a chest wall and crossed by a vessel."""
    extent_mm = 3.2 * diameter_mm
    shape = tuple(round(extent_mm / s) | 1 for s in spacing_irc)
    center = tuple(n // 2 for n in shape)
    ct = make_ct(shape=shape, spacing_xyz=spacing_irc[::-1])  # type: ignore[arg-type]
    truth = ball(shape, center, diameter_mm / 2, spacing_irc)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    if wall:  # everything beyond the nodule's surface along +col is chest wall
        wall_mask = (grids[2] - center[2]) * spacing_irc[2] > diameter_mm / 2
        ct.hu[np.broadcast_to(wall_mask, shape)] = SOLID_HU
    if vessel:  # a 2 mm vessel along the row axis through the center
        d2 = sum(((grids[a] - center[a]) * spacing_irc[a]) ** 2 for a in (0, 2))
        ct.hu[np.broadcast_to(d2 <= 1.0, shape)] = SOLID_HU
    ct.hu[truth] = SOLID_HU
    return ct, nodule_at(ct, center, diameter_mm), truth


@pytest.mark.parametrize("spacing_irc", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7)], ids=["iso", "aniso"])
def test_region_cuts_vessel_and_chest_wall(spacing_irc) -> None:
    ct, nodule, truth = _scene(spacing_irc, 10.0, wall=True, vessel=True)
    grow_mask, _ = build_masks(ct, [nodule], method="grow")
    region_mask, (rec,) = build_masks(ct, [nodule], method="region")
    assert dice(region_mask, truth) >= 0.93
    assert dice(region_mask, truth) > dice(grow_mask, truth) + 0.1
    assert any("large structure" in n for n in rec.notes)
    # Without the vessel the radius is the physical one: 5.3 mm over the voxel size, per axis.
    ct, nodule, truth = _scene(spacing_irc, 10.6, wall=True, vessel=False)
    region_mask, (rec,) = build_masks(ct, [nodule], method="region")
    assert dice(region_mask, truth) >= 0.95
    assert rec.radius_irc == tuple(int(5.3 // s) for s in spacing_irc)


def test_ball_uses_physical_diameter() -> None:
    spacing_irc = (2.5, 0.7, 0.7)
    ct, nodule, truth = _scene(spacing_irc, 8.0, wall=False, vessel=True)
    mask, _ = build_masks(ct, [nodule], method="ball")
    assert dice(mask, truth) >= 0.85
    assert not (mask & ~ball(truth.shape, nodule_center(ct, nodule), 4.6, spacing_irc)).any()


def nodule_center(ct: CtVolume, nodule: Nodule) -> tuple[int, int, int]:
    return tuple(int(v) for v in ct.geometry.xyz_to_irc_index(nodule.center_xyz_mm))


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
    ct, nodule, truth = _scene((1.0, 1.0, 1.0), 8.0, wall=False, vessel=False)
    ct.hu[truth] = -720  # ground glass: below the default threshold
    grow_mask, (grow_rec,) = build_masks(ct, [nodule])
    mask, (rec,) = build_masks(ct, [nodule], method="region")
    assert masks.NOTE_EMPTY in grow_rec.notes and not grow_mask.any()
    assert dice(mask, truth) >= 0.95
    assert any("ground-glass" in n for n in rec.notes)


# ---------------------------------------------------------------------------------------------
# Against true shapes (synthetic data set shared by the session)
# ---------------------------------------------------------------------------------------------
def test_methods_against_true_shapes(tiny_synth_dir) -> None:
    from src_train.luna import LunaFolder

    report = masks.mask_report(LunaFolder(tiny_synth_dir))
    summary = {row["group"]: row for row in report.summary()}
    per_scan = summary["per scan (mean)"]
    assert report.methods[0] == "grow" and set(report.methods) == set(available_methods())
    assert per_scan["region"] >= 0.9
    assert per_scan["region"] > per_scan["grow"] + 0.05
    assert report.best_method() == "region"
    region = [s for s in report.nodules if s.method == "region"]
    assert region and all(s.dice >= 0.7 for s in region), [(s.kind, s.dice) for s in region]
    assert {s.kind for s in region} >= {"solid", "juxtapleural", "edge", "ground-glass"}
    # No nodule ends up with an empty mask unless a flag explains it.
    assert all(s.voxel_count > 0 or s.flagged for s in report.nodules)
    assert not report.unmatched


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


def test_cli_mask_and_report(tiny_synth_dir, tmp_path, capsys) -> None:
    from src_train.cli import main
    from src_train.ct import load_ct
    from src_train.luna import LunaFolder

    folder = LunaFolder(tiny_synth_dir)
    out = tmp_path / "masks"
    assert main(["mask", str(tiny_synth_dir), "--out", str(out), "--method", "region"]) == 0
    uid = folder.series_uids[0]
    written = load_ct(out / f"{uid}_mask.mhd")
    ct = folder.load(uid)
    assert written.geometry == ct.geometry
    assert "ElementType = MET_UCHAR" in (out / f"{uid}_mask.mhd").read_text()  # uint8
    assert sorted(p.name for p in out.glob("*.mhd")) == [
        masks.mask_file_name(u) for u in folder.series_uids
    ]
    expected, _ = build_masks(ct, folder.nodules(uid), method="region")
    assert np.array_equal(written.hu > 0, expected)
    lines = (out / masks.MASK_TABLE).read_text().splitlines()
    assert len(lines) == 1 + sum(len(folder.nodules(u)) for u in folder.series_uids)
    assert "radius_irc" in lines[0] and ",region," in lines[1]
    assert main(["mask", str(tiny_synth_dir), "--out", str(out)]) == 2  # no --overwrite
    assert "already exists" in capsys.readouterr().err

    report_dir = tmp_path / "report"
    assert main(["mask-report", str(tiny_synth_dir), "--out", str(report_dir)]) == 0
    printed = capsys.readouterr().out
    assert "| per scan (mean) |" in printed and "best method: region" in printed
    for name in ("mask_report_summary.csv", "mask_report_nodules.csv", "mask_report.png"):
        assert (report_dir / name).stat().st_size > 0


def test_region_diameter_far_too_small_keeps_the_nodule() -> None:
    ct, nodule, _ = _scene((1.0, 1.0, 1.0), 14.0, wall=False, vessel=False)
    small = Nodule(nodule.series_uid, nodule.center_xyz_mm, 3.0)  # annotation says 3 mm
    mask, (rec,) = build_masks(ct, [small], method="region")
    assert rec.voxel_count > 0 and mask.any() and masks.NOTE_EMPTY not in rec.notes
    assert any("thicker than the diameter" in n for n in rec.notes)


# ---------------------------------------------------------------------------------------------
# The SPEC rule written out literally, against build_masks / MaskState on random volumes
# ---------------------------------------------------------------------------------------------
OBLIQUE_FLIP = (0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)  # axes permuted, one flipped


def _spec_rule(hu: np.ndarray, center: tuple[int, int, int], threshold_hu: float):
    """Reference: per axis (index, row, col) r = 2, 3, ... while center-r and center+r are both
    inside the volume and both > threshold; box = center +- r clipped; mask = box AND dense."""
    radii = []
    for axis in range(3):
        r = 2
        while True:
            lo_i, hi_i = center[axis] - r, center[axis] + r
            if lo_i < 0 or hi_i >= hu.shape[axis]:
                break
            lo_v = list(center)
            hi_v = list(center)
            lo_v[axis], hi_v[axis] = lo_i, hi_i
            if not (hu[tuple(lo_v)] > threshold_hu and hu[tuple(hi_v)] > threshold_hu):
                break
            r += 1
        radii.append(r)
    box = tuple(
        slice(max(0, c - r), min(n, c + r + 1))
        for c, r, n in zip(center, radii, hu.shape, strict=True)
    )
    mask = np.zeros(hu.shape, dtype=bool)
    mask[box] = hu[box] > threshold_hu
    return tuple(radii), mask


def _blobby_ct(shape, direction, seed: int) -> tuple[CtVolume, list[Nodule]]:
    """Random dense cuboids in lung; nodules at blob centers, at corners and on every face."""
    rng = np.random.default_rng(seed)
    ct = make_ct(shape=shape, spacing_xyz=(0.7, 0.9, 2.5), direction=direction)
    centers = [tuple(int(v) for v in rng.integers(0, shape)) for _ in range(6)]
    centers += [(0, 0, 0), tuple(n - 1 for n in shape)]
    centers += [(0, shape[1] // 2, shape[2] - 1), (shape[0] - 1, 0, shape[2] // 2)]
    for c in centers:
        paint_box(ct, c, tuple(int(v) for v in rng.integers(1, 6, size=3)))
    ct.hu[...] += rng.integers(-40, 40, size=shape).astype(np.int16)
    return ct, [nodule_at(ct, c) for c in centers]


@pytest.mark.parametrize(
    ("shape", "direction"),
    [((13, 17, 19), IDENTITY), ((9, 31, 7), FLIPPED), ((15, 11, 23), OBLIQUE_FLIP)],
    ids=["odd", "flipped", "permuted-flip"],
)
def test_build_masks_equals_literal_spec_rule(shape, direction) -> None:
    for seed in range(3):
        ct, nodules = _blobby_ct(shape, direction, seed)
        for threshold in (-700, -100, 20.5):
            mask, recs = build_masks(ct, nodules, threshold)
            expected = np.zeros(shape, dtype=bool)
            for nodule, rec in zip(nodules, recs, strict=True):
                center = tuple(int(v) for v in ct.geometry.xyz_to_irc_index(nodule.center_xyz_mm))
                radii, own = _spec_rule(ct.hu, center, threshold)
                assert rec.center_irc == center and rec.radius_irc == radii
                local = np.zeros(shape, dtype=bool)
                local[rec.box_slices] = rec.local_mask
                assert np.array_equal(local, own) and rec.voxel_count == int(own.sum())
                expected |= own
            assert np.array_equal(mask, expected)


@pytest.mark.parametrize("method", available_methods())
def test_mask_state_with_edges_overlaps_and_skipped_nodule(method: str) -> None:
    ct, nodules = _blobby_ct((11, 21, 17), FLIPPED, seed=5)
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


def test_write_masks_never_writes_into_the_data_folders(tiny_synth_dir, tmp_path) -> None:
    import shutil

    from src_train.errors import OutputExistsError
    from src_train.luna import LunaFolder

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    folder = LunaFolder(data)
    uid = folder.series_uids[0]
    ct_bytes = (data / "subset0" / f"{uid}.raw").read_bytes()
    table = (data / "truth" / "nodules.csv").read_text()
    for target in (
        data / "subset0",
        data / "truth",
        data / "truth" / "." / "",
        data / "subset0" / "m",
    ):
        with pytest.raises(OutputExistsError, match="Choose another folder"):
            masks.write_masks(folder, target, overwrite=True)
    assert (data / "subset0" / f"{uid}.raw").read_bytes() == ct_bytes
    assert (data / "truth" / "nodules.csv").read_text() == table


def test_cli_mask_bad_threshold_and_data_folder_are_one_line_errors(
    tiny_synth_dir, tmp_path, capsys
) -> None:
    from src_train.cli import main

    out = tmp_path / "m"
    for option in ("--threshold-hu", "--threshold"):  # the option and its older name
        assert main(["mask", str(tiny_synth_dir), "--out", str(out), option, "nan"]) == 2
        assert "not a finite number of HU" in capsys.readouterr().err and not out.exists()
    subset = str(tiny_synth_dir / "subset0")
    assert main(["mask", str(tiny_synth_dir), "--out", subset, "--overwrite"]) == 2
    assert "Choose another folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    report_out = str(tmp_path / "afile" / "report")
    assert main(["mask-report", str(tiny_synth_dir), "--out", report_out, "--methods", "grow"]) == 2
    assert "Cannot write" in capsys.readouterr().err


def _printed_dice(printed: str, uid: str) -> dict[int, str]:
    """``label -> Dice text`` from the per-nodule lines ``lunaseg mask`` prints for ``uid``."""
    found = {}
    for line in printed.splitlines():
        if line.startswith(f"  {uid} label "):
            label = int(line.split(" label ")[1].split()[0])
            found[label] = line.split("): ")[1].split()[0]
    return found


@pytest.mark.parametrize("method", ["grow", "region"])
def test_cli_mask_series_and_dice_against_truth(tiny_synth_dir, tmp_path, capsys, method) -> None:
    from src_train.cli import main
    from src_train.ct import load_ct
    from src_train.luna import LunaFolder

    folder = LunaFolder(tiny_synth_dir)
    uid = folder.series_uids[1]
    out = tmp_path / "masks"
    args = ["mask", str(tiny_synth_dir), "--out", str(out), "--threshold-hu", "-650"]
    assert main([*args, "--method", method, "--series", uid]) == 0
    printed = capsys.readouterr().out

    # --series: only that series' mask and rows; the mask is the CT's geometry, uint8 0/1.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{uid}_mask.mhd", f"{uid}_mask.zraw", masks.MASK_TABLE]
    )
    ct = folder.load(uid)
    written = load_ct(out / f"{uid}_mask.mhd")
    assert written.geometry == ct.geometry
    assert "ElementType = MET_UCHAR" in (out / f"{uid}_mask.mhd").read_text()  # uint8
    assert set(np.unique(written.hu).tolist()) <= {0, 1}
    rows = (out / masks.MASK_TABLE).read_text().splitlines()[1:]
    assert len(rows) == len(folder.nodules(uid)) and all(r.startswith(f"{uid},") for r in rows)

    # The printed Dice of each true nodule is masks.dice of its own mask vs its true label.
    labels = load_ct(folder.truth_path(uid)).hu
    nodules, truths = folder.nodules(uid), folder.true_nodules(uid)
    assert len(nodules) == len(truths) >= 2  # synthetic annotations are in label order
    _, records = build_masks(ct, nodules, -650, method)
    expected = {}
    for truth, rec in zip(truths, records, strict=True):
        own = np.zeros(ct.shape_irc, dtype=bool)
        own[rec.box_slices] = rec.local_mask
        expected[truth.label] = dice(own, labels == truth.label)
    assert _printed_dice(printed, uid) == {k: f"{v:.3f}" for k, v in expected.items()}
    mean = float(np.mean(list(expected.values())))
    assert f"mean Dice {mean:.3f} over {len(truths)} true nodules ({method})" in printed
    assert 0.3 < mean <= 1.0


def test_cli_mask_unknown_series_is_a_one_line_error(tiny_synth_dir, tmp_path, capsys) -> None:
    from src_train.cli import main

    out = tmp_path / "masks"
    known = sorted(p.stem for p in (tiny_synth_dir / "subset0").glob("*.mhd"))[0]
    argv = ["mask", str(tiny_synth_dir), "--out", str(out), "--series", known, "9.9.9"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("lunaseg mask: error: Series 9.9.9 not found under ")
    assert str(tiny_synth_dir) in line and known not in line
    assert "Traceback" not in captured.err and not out.exists()  # checked before any work


def test_cli_mask_lists_missing_series_and_scores_only_with_truth(
    tiny_synth_dir, tmp_path, capsys
) -> None:
    import shutil

    from src_train.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data, ignore=shutil.ignore_patterns("truth"))
    absent = ["9.9.1", "9.9.2"]
    with (data / "annotations.csv").open("a", encoding="utf-8") as handle:
        handle.writelines(f"{uid},0,0,0,5\n" for uid in absent)
    assert main(["mask", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "2 annotated series not on disk, skipped: 9.9.1, 9.9.2" in printed
    assert "Dice" not in printed  # no truth/ here
    assert (data / "masks" / masks.MASK_TABLE).is_file()  # the default --out
    assert not any("9.9." in p.name for p in (data / "masks").iterdir())
