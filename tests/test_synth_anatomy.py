"""The anatomy of the synthetic chest (src_train/synth/anatomy.py, body.py, vessels.py,
airways.py): two lungs, the heart between them, airways, a tapering vessel tree, bones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from src_train.synth import SynthConfig, generate_scan
from src_train.synth.airways import airway_tree
from src_train.synth.anatomy import draw_anatomy, draw_geometry
from src_train.synth.body import draw_body
from src_train.synth.config import scan_protocol
from src_train.synth.vessels import vessel_trees

#: A small but not coarse chest: 160 px of 1.6 mm, 2 mm slices.
CONFIG = SynthConfig(
    inplane_px_range=(160, 160),
    spacing_inplane_mm_range=(1.6, 1.6),
    slice_spacing_mm_range=(2.0, 2.0),
    slices_range=(120, 140),
    chest_length_mm_range=(250.0, 270.0),
    protocol=None,
)


@pytest.fixture(scope="module", params=[11, 12])
def body(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(request.param)
    protocol = scan_protocol(rng, CONFIG)
    geometry, n_full = draw_geometry(rng, CONFIG, protocol)
    anat = draw_anatomy(rng, CONFIG, geometry, protocol, n_full)
    hu, lung = draw_body(rng, geometry, anat)
    return rng, geometry, anat, hu, lung


def _slice_at(anat, geometry, u: float) -> int:  # type: ignore[no-untyped-def]
    return round(float(anat.z_of_u(u)) / geometry.spacing_irc_mm[0])


def test_two_lungs_left_smaller_with_the_heart_between(body) -> None:  # type: ignore[no-untyped-def]
    _, geometry, anat, hu, lung = body
    for u in (0.3, 0.45, 0.7):
        k = _slice_at(anat, geometry, u)
        labels, count = ndimage.label(lung[k])
        sizes = np.bincount(labels.ravel())[1:]
        assert count >= 2 and np.sort(sizes)[-2] > 0.2 * sizes.max()  # two big lungs
    k = _slice_at(anat, geometry, 0.3)
    n_x = lung.shape[2]
    right, left = lung[k, :, : n_x // 2].sum(), lung[k, :, n_x // 2 :].sum()
    assert left < 0.85 * right  # the heart takes room from the left lung (cardiac notch)
    row = hu[k, lung.shape[1] // 2 - 5, :]
    middle = row[n_x // 2 - 3 : n_x // 2 + 8]
    assert np.all(middle > -150)  # the heart and mediastinum between the lungs


def test_lungs_shrink_to_the_apex_and_sit_on_the_domes(body) -> None:  # type: ignore[no-untyped-def]
    _, geometry, anat, hu, lung = body
    area = {u: lung[_slice_at(anat, geometry, u)].sum() for u in (0.02, 0.35, 0.93)}
    assert area[0.35] > 1.6 * area[0.93] and area[0.35] > 1.5 * area[0.02]
    k = _slice_at(anat, geometry, 0.05)
    below = (hu[k] > 30) & (hu[k] < 80)  # liver and spleen under the domes
    assert below.sum() > 0.5 * lung[k].sum()


def test_ribs_and_vertebra_are_bone(body) -> None:  # type: ignore[no-untyped-def]
    _, geometry, anat, hu, _ = body
    _, n_y, n_x = hu.shape
    vertebra_y, _ = anat.vertebra
    row = round((n_y - 1) / 2 + (anat.body_cy + vertebra_y) / geometry.spacing_irc_mm[1])
    column = hu[:, row, n_x // 2]  # the vertebral bodies' centers, one per slice
    assert 0.6 < (column > 200).mean() < 0.95  # bone on most slices, discs on some
    k = _slice_at(anat, geometry, 0.5)
    bone = hu[k] > 250
    _, count = ndimage.label(bone)
    assert count >= 6  # rib cross-sections round the chest wall, plus the vertebra


def test_airways_are_air_tubes_that_branch(body) -> None:  # type: ignore[no-untyped-def]
    rng, geometry, anat, _, lung = body
    central, inner = airway_tree(rng, geometry, anat, lung)
    trachea, right_main, left_main = central
    assert np.allclose(trachea.end_mm, right_main.start_mm)  # both bronchi leave the carina
    assert np.allclose(right_main.start_mm, left_main.start_mm)
    drop_right = right_main.start_mm[0] - right_main.end_mm[0]
    length_right = np.linalg.norm(right_main.end_mm - right_main.start_mm)
    length_left = np.linalg.norm(left_main.end_mm - left_main.start_mm)
    assert drop_right > 0 and length_right < length_left * 1.05  # right: steeper, shorter
    assert len(inner) >= 10 and max(t.radius_start_mm for t in inner) < trachea.radius_start_mm


def test_vessels_branch_from_the_hila_and_taper(body) -> None:  # type: ignore[no-untyped-def]
    rng, geometry, anat, _, lung = body
    vessels = vessel_trees(rng, CONFIG, geometry, anat, lung)
    assert len(vessels) > 100
    center = (np.asarray(geometry.shape_irc) - 1) / 2 * np.asarray(geometry.spacing_irc_mm)
    hila = [anat.hilum_mm(side, center) for side in (-1.0, 1.0)]
    distance = np.array([min(np.linalg.norm(v.end_mm - h) for h in hila) for v in vessels])
    radius = np.array([v.radius_end_mm for v in vessels])
    near, far = (
        radius[distance < np.percentile(distance, 25)],
        radius[distance > np.percentile(distance, 75)],
    )
    assert near.mean() > 2 * far.mean()  # thick at the hilum, thin at the periphery
    assert all(v.radius_end_mm <= v.radius_start_mm for v in vessels)


def test_parenchyma_has_texture_and_the_scan_is_whole() -> None:
    scan = generate_scan("uid", 4, CONFIG)
    hu = scan.ct.hu
    lung_like = (hu > -950) & (hu < -700)
    smoothed = ndimage.uniform_filter(hu.astype(np.float32), (1, 5, 5))
    # beyond the pixel noise, the lung varies over several mm (texture, not uniform grey)
    assert smoothed[lung_like].std() > 6
    assert scan.nodules and all(n.kind for n in scan.nodules)


def test_calcified_and_juxtavascular_nodules() -> None:
    config = SynthConfig.tiny(nodules_per_scan_range=(2, 2))
    seen = set()
    for seed in range(6):
        scan = generate_scan("uid", seed, config, kind_offset=5)  # calcified, juxtavascular
        for n in scan.nodules:
            shape = scan.truth == n.label
            inside = scan.ct.hu[shape].astype(float)
            seen.add(n.kind)
            if n.kind == "calcified":
                assert np.percentile(inside, 90) > 200  # a dense core (edges blend with lung)
            elif n.kind == "juxtavascular":
                rim = ndimage.binary_dilation(shape, iterations=2) & ~shape
                assert (scan.ct.hu[rim] > -500).sum() >= 2  # a vessel leaves it
    assert seen == {"calcified", "juxtavascular"}
