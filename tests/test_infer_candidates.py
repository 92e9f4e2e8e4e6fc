"""Candidate nodules: centers in world mm, sizes, order, filters, the CSV."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from models import FLIPPED, PERMUTED, chest
from torch import nn

from src_train.ct import Geometry
from src_train.errors import ConfigError, OutputExistsError
from src_train.evaluate import read_submission
from src_train.infer import (
    CandidateConfig,
    group_candidates,
    prob_to_uint8,
    run_inference,
    write_candidates_csv,
)
from src_train.records.candidate import CandidateNodule


# ---------------------------------------------------------------------------------------------
# Candidate grouping
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [None, FLIPPED, PERMUTED])
def test_candidate_centers_sizes_and_order(direction: tuple[float, ...] | None) -> None:
    geometry = Geometry(
        shape_irc=(10, 20, 30),
        origin_xyz_mm=(10.0, -20.0, 5.0),
        spacing_xyz_mm=(0.5, 0.75, 2.0),
        direction=direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    prob = np.zeros(geometry.shape_irc, dtype=np.float16)
    prob[2:5, 3:6, 4:7] = 0.6  # cube of 27 voxels centered at (3, 4, 5)
    prob[2:5, 3:6, 6] = 0.9  # heavier last column: center moves towards col 6
    prob[8, 15, 25] = 0.95  # single voxel
    mask = prob >= 0.5
    every = CandidateConfig(min_diameter_mm=0.0, score="max")
    cands = group_candidates(prob, mask, geometry, "s", every)
    assert [c.voxel_count for c in cands] == [1, 27]  # most probable first
    assert [c.voxel_count for c in group_candidates(prob, mask, geometry, "s")] == [27]
    single, cube = cands
    w = np.array([0.6, 0.6, 0.9], dtype=np.float16).astype(np.float64)
    expected_col = float((w * [4, 5, 6]).sum() / w.sum())
    np.testing.assert_allclose(cube.center_irc, (3.0, 4.0, expected_col), atol=1e-6)
    # World center by hand: origin + direction @ (spacing * (col, row, index)).
    d = np.asarray(geometry.direction).reshape(3, 3)
    for cand, irc in ((cube, (3.0, 4.0, expected_col)), (single, (8.0, 15.0, 25.0))):
        local = np.array([irc[2] * 0.5, irc[1] * 0.75, irc[0] * 2.0])
        np.testing.assert_allclose(
            cand.center_xyz_mm, np.add(geometry.origin_xyz_mm, d @ local), atol=1e-6
        )
    assert cube.diameter_mm == pytest.approx((6 * 27 * 0.75 / math.pi) ** (1 / 3))
    assert cube.probability == pytest.approx(0.9, abs=1e-3)
    assert single.probability == pytest.approx(0.95, abs=1e-3)
    assert cube.mean_probability == pytest.approx((18 * 0.6 + 9 * 0.9) / 27, abs=1e-3)


def test_connectivity_and_filters() -> None:
    geometry = Geometry((6, 6, 6), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mask = np.zeros(geometry.shape_irc, dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner neighbours
    mask[4:6, 4:6, 4:6] = True
    prob = mask.astype(np.float32) * 0.7
    prob[4, 4, 4] = 0.9
    every = CandidateConfig(min_diameter_mm=0.0, score="max")
    assert len(group_candidates(prob, mask, geometry, "s", every)) == 2
    six = replace(every, connectivity=6)
    assert len(group_candidates(prob, mask, geometry, "s", six)) == 3
    big_only = group_candidates(prob, mask, geometry, "s", replace(every, min_voxels=3))
    assert [c.voxel_count for c in big_only] == [8]
    sure = group_candidates(prob, mask, geometry, "s", replace(every, min_probability=0.8))
    assert [c.voxel_count for c in sure] == [8]
    assert group_candidates(prob, np.zeros_like(mask), geometry, "s") == []
    with pytest.raises(ConfigError):
        CandidateConfig(connectivity=18)


def test_slabs_without_components_are_skipped() -> None:
    """Two components more than a slab apart, so a slab between them holds no labelled voxel:
    grouping still works (it raised IndexError) and each keeps its own peak."""
    from src_train.anatomy import SCAN_CHUNK_SLICES

    depth = 3 * SCAN_CHUNK_SLICES
    geometry = Geometry((depth, 5, 5), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mask = np.zeros(geometry.shape_irc, dtype=bool)
    mask[:2, 1:3, 1:3] = mask[depth - 2 :, 1:3, 1:3] = True
    prob = mask.astype(np.float32) * 0.6
    prob[depth - 1, 2, 2] = 0.9
    every = CandidateConfig(min_diameter_mm=0.0, score="max")
    found = group_candidates(prob, mask, geometry, "s", every)
    assert [c.voxel_count for c in found] == [8, 8]
    assert [round(c.probability, 3) for c in found] == [0.9, 0.6]


def test_candidates_found_in_a_run_point_at_the_blob() -> None:
    """A model that fires on dense voxels: the candidate lands on the blob, in world mm."""

    class Dense(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, 3:4] - 45.0) * 10.0  # center slice above 45 HU -> probability ~1

    ct = chest((9, 40, 48), direction=FLIPPED)
    res = run_inference(ct, Dense(), device="cpu", precision="fp32")
    blob = [c for c in res.candidates if c.voxel_count >= 8]
    assert len(blob) == 1
    np.testing.assert_allclose(blob[0].center_irc, (4.0, 19.5, 23.5), atol=0.1)
    np.testing.assert_allclose(
        blob[0].center_xyz_mm, ct.geometry.irc_to_xyz((4.0, 19.5, 23.5)), atol=0.1
    )


def test_candidates_csv_round_trip_and_no_overwrite(tmp_path: Path) -> None:
    cands = [CandidateNodule("s1", (1.5, -2.25, 3.0), (1.0, 2.0, 3.0), 6.2, 40, 0.875, 0.7)]
    path = write_candidates_csv(tmp_path / "candidates.csv", cands)
    back = read_submission(path)
    assert back[0].series_uid == "s1" and back[0].center_xyz_mm == (1.5, -2.25, 3.0)
    assert back[0].probability == pytest.approx(0.875)
    with pytest.raises(OutputExistsError):
        write_candidates_csv(path, cands)
    assert prob_to_uint8(np.array([[[0.0, 0.5, 1.0]]], dtype=np.float16)).tolist() == [
        [[0, 128, 255]]
    ]


def test_scores_voxel_threshold_and_lung_margin() -> None:
    ct = chest((3, 64, 80))
    prob = np.zeros(ct.hu.shape, dtype=np.float32)
    prob[1, 30:33, 28:31] = 0.6  # in the left lung
    prob[1, 31, 29] = 1.0
    prob[1, 30:33, 38:42] = 0.9  # mediastinum, between the lungs
    mask = prob >= 0.5
    geo = ct.geometry
    every = CandidateConfig(min_diameter_mm=0.0, score="max")
    both = group_candidates(prob, mask, geo, "s", every)
    assert [c.voxel_count for c in both] == [9, 12]
    by_mean = group_candidates(prob, mask, geo, "s", replace(every, score="mean"))
    assert [c.voxel_count for c in by_mean] == [12, 9]
    assert by_mean[1].probability == pytest.approx((8 * 0.6 + 1.0) / 9)
    assert by_mean[1].max_probability == pytest.approx(1.0)
    strict = group_candidates(prob, mask, geo, "s", replace(every, voxel_threshold=0.95))
    assert [c.voxel_count for c in strict] == [1]
    in_lung = group_candidates(prob, mask, geo, "s", replace(every, lung_margin_mm=0.0), hu=ct.hu)
    assert [c.voxel_count for c in in_lung] == [9]
    with pytest.raises(ConfigError):
        CandidateConfig(score="median")


def test_more_components_than_a_uint16_label_holds() -> None:
    geometry = Geometry((8, 300, 300), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mask = np.zeros(geometry.shape_irc, dtype=bool)
    mask[::2, ::2, ::2] = True  # 90,000 isolated voxels
    prob = mask.astype(np.float16)
    cands = group_candidates(prob, mask, geometry, "s", CandidateConfig(min_diameter_mm=0.0))
    assert len(cands) == 90_000 and {c.voxel_count for c in cands} == {1}
