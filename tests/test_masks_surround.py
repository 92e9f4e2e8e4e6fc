"""dense_surround: how much dense tissue lies beside a true shape, on hand-counted voxels and
against a brute-force count over a whole volume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src_train.ct import CtVolume, Geometry
from src_train.luna import TrueNodule
from src_train.masks import SeriesTruth, dense_surround

LUNG, WALL = -850, 40


def _one_voxel(shape: tuple[int, int, int], at: tuple[int, int, int]) -> np.ndarray:
    inside = np.zeros(shape, dtype=bool)
    inside[at] = True
    return inside


def test_one_voxel_counts_its_face_neighbours_within_one_mm() -> None:
    hu = np.full((7, 7, 7), LUNG, dtype=np.int16)
    inside = _one_voxel(hu.shape, (3, 3, 3))
    hu[3, 3, 4] = hu[2, 3, 3] = WALL  # two of the six face neighbours dense
    hu[2, 2, 2] = WALL  # a corner, sqrt(3) mm away: outside a 1 mm shell
    hu[3, 3, 3] = WALL  # the shape itself never counts

    assert dense_surround(hu, inside, (1.0, 1.0, 1.0), shell_mm=1.0) == pytest.approx(2 / 6)
    # at 1.5 mm the twelve edge neighbours (sqrt 2 mm) join: 2 of 18
    assert dense_surround(hu, inside, (1.0, 1.0, 1.0), shell_mm=1.5) == pytest.approx(2 / 18)
    # at 2 mm the corners (sqrt 3) and the second face neighbours (2 mm) too: 3 of 32
    assert dense_surround(hu, inside, (1.0, 1.0, 1.0), shell_mm=2.0) == pytest.approx(3 / 32)


def test_distances_are_physical_and_the_volume_edge_is_not_counted() -> None:
    hu = np.full((5, 5, 5), LUNG, dtype=np.int16)
    hu[1, 2, 2] = hu[3, 2, 2] = WALL  # the slices above and below, 2 mm away
    hu[2, 2, 1] = WALL  # one in-plane neighbour, 0.5 mm away
    inside = _one_voxel(hu.shape, (2, 2, 2))
    # with 2 mm slices a 1 mm shell holds 12 in-plane voxels only (4 at 0.5 mm, 4 at 0.71 mm,
    # 4 at 1 mm); the dense slices beside it are 2 mm away
    assert dense_surround(hu, inside, (2.0, 0.5, 0.5), shell_mm=1.0) == pytest.approx(1 / 12)

    edge = np.full((4, 4, 4), LUNG, dtype=np.int16)
    edge[0, 0, 1] = WALL
    # a shape in the volume's corner: 3 face neighbours exist (the rest lie outside the scan)
    corner = dense_surround(edge, _one_voxel(edge.shape, (0, 0, 0)), (1.0, 1.0, 1.0), shell_mm=1.0)
    assert corner == pytest.approx(1 / 3)


def test_empty_or_boxless_shapes_are_nan_and_mismatched_arrays_refused() -> None:
    hu = np.full((3, 3, 3), LUNG, dtype=np.int16)
    assert math.isnan(dense_surround(hu, np.zeros(hu.shape, bool), (1.0, 1.0, 1.0)))
    assert math.isnan(dense_surround(hu, np.ones(hu.shape, bool), (1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="differ in shape"):
        dense_surround(hu, np.zeros((3, 3, 2), bool), (1.0, 1.0, 1.0))


def test_series_truth_reads_the_whole_shell_from_the_labels_box() -> None:
    """A ball against a wall and a ball in open lung: the box-based figure equals a count of
    every voxel of the volume by its distance to the shape (2 mm slices, 0.7 mm pixels)."""
    shape, spacing = (24, 60, 60), np.array([2.0, 0.7, 0.7])
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, dtype=np.uint8)
    for k, (cz, cy, cx) in enumerate(((12, 30, 20), (12, 30, 45)), start=1):
        mm = ((zz - cz) * spacing[0]) ** 2 + ((yy - cy) * spacing[1]) ** 2
        labels[mm + ((xx - cx) * spacing[2]) ** 2 <= 3.0**2] = k
    hu = np.full(shape, LUNG, dtype=np.int16)
    hu[:, :, :16] = WALL  # a wall the first ball touches (its edge at column 15.7)
    hu[labels > 0] = 60
    geometry = Geometry(
        shape_irc=shape, origin_xyz_mm=(0.0, 0.0, 0.0), spacing_xyz_mm=(0.7, 0.7, 2.0)
    )
    ct = CtVolume(hu=hu, geometry=geometry, series_uid="s")
    truth = SeriesTruth.from_labels("s", labels, [], [])

    shares = []
    for k in (1, 2):
        every = np.indices(shape).reshape(3, -1).T * spacing
        nearest = np.full(len(every), np.inf)
        for point in np.argwhere(labels == k) * spacing:
            np.minimum(nearest, np.linalg.norm(every - point, axis=1), out=nearest)
        shell = (nearest > 0) & (nearest <= 2.0)
        expected = np.mean(hu.reshape(-1)[shell] > -500)
        nodule = TrueNodule("s", k, (0.0, 0.0, 0.0), 6.0, "solid", 113.0)
        shares.append(truth.dense_surround(ct, nodule))
        assert shares[-1] == pytest.approx(expected)
    assert 0.05 < shares[0] < 0.5 and shares[1] == 0.0  # a tenth of its shell is wall
