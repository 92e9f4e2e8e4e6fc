"""The same scan stored in any axis order and direction, in any format, gives the same result.

Each variant below stores the voxels of one chest phantom differently (slices reversed, rows
and columns swapped, rows reversed) with a geometry that puts every voxel at the same world
position; models see the canonical frame, so probabilities agree voxel for voxel (mapped to
world positions) and candidates agree in world millimetres.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from models import chest, random_model

from src_train.ct import CtVolume, Geometry, load_ct, reorientation, save_volume
from src_train.infer import CandidateConfig, InferenceOptions, run_inference

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _variant(ct: CtVolume, flip_irc: tuple[bool, bool, bool], swap_rows_cols: bool) -> CtVolume:
    """``ct``'s voxels in another array order, each at the same world position."""
    g = ct.geometry
    hu = ct.hu
    direction = g.direction_matrix.copy()
    origin = np.asarray(g.origin_xyz_mm, dtype=np.float64)
    spacing = np.asarray(g.spacing_xyz_mm)
    size_xyz = np.asarray(g.shape_irc[::-1])
    for irc_axis, flip in enumerate(flip_irc):
        if flip:
            xyz_axis = 2 - irc_axis
            hu = np.flip(hu, axis=irc_axis)
            origin = origin + direction[:, xyz_axis] * spacing[xyz_axis] * (size_xyz[xyz_axis] - 1)
            direction[:, xyz_axis] *= -1
    if swap_rows_cols:
        hu = np.swapaxes(hu, 1, 2)
        direction = direction[:, [1, 0, 2]]
        spacing = spacing[[1, 0, 2]]
    geometry = Geometry(hu.shape, tuple(origin), tuple(spacing), tuple(direction.ravel()))
    return CtVolume(np.ascontiguousarray(hu), geometry, ct.series_uid)


def _world_values(ct: CtVolume, volume: np.ndarray) -> dict[tuple[float, ...], float]:
    """World position (mm, rounded) -> value of every voxel."""
    idx = np.argwhere(np.ones(volume.shape, dtype=bool))
    world = np.round(ct.geometry.irc_to_xyz(idx), 3)
    return dict(zip(map(tuple, world), volume[tuple(idx.T)].tolist(), strict=True))


VARIANTS = [
    ((True, False, False), False),  # slices stored head-to-feet instead of feet-to-head
    ((False, False, False), True),  # rows and columns swapped
    ((True, True, False), True),  # all of it
]


@pytest.mark.parametrize(("flip", "swap"), VARIANTS)
def test_flipped_and_transposed_copies_give_the_same_candidates(
    flip: tuple[bool, bool, bool], swap: bool, tmp_path: Path
) -> None:
    ct = chest((9, 48, 56))
    ct.hu[2:5, 10:14, 30:33] = 60  # something off-center, on a few slices
    model = random_model(7)
    options = InferenceOptions(
        device="cpu",
        precision="fp32",
        # one execution path for every copy: the tuner may pick another batch size or engine
        # per run, and float rounding then differs in the last bits
        engine="torch",
        batch_size=4,
        channels_last=False,
        threshold=0.5,
        candidates=CandidateConfig(min_diameter_mm=0.0, max_diameter_mm=None),
    )
    plain = run_inference(ct, model, options)
    # pick a threshold that leaves a few components (random weights: moderate probabilities)
    cut = float(np.quantile(plain.prob.astype(np.float32), 0.97))
    options = replace(options, threshold=cut)
    plain = run_inference(ct, model, options)
    assert len(plain.candidates) >= 2

    other = _variant(ct, flip, swap)
    assert not np.array_equal(other.hu.shape, ct.hu.shape) or not np.array_equal(other.hu, ct.hu)
    # through a file too: another format keeps the geometry
    path = save_volume(other.hu, other.geometry, tmp_path / "variant.nii.gz")
    for stored in (other, load_ct(path)):
        res = run_inference(stored, model, options)
        assert res.prob.shape == stored.hu.shape, "results come back in the file's order"
        assert _world_values(stored, res.prob) == _world_values(ct, plain.prob)
        assert len(res.candidates) == len(plain.candidates)
        for a, b in zip(res.candidates, plain.candidates, strict=True):
            np.testing.assert_allclose(a.center_xyz_mm, b.center_xyz_mm, atol=1e-4)
            assert a.voxel_count == b.voxel_count and a.probability == b.probability
            # array coordinates are the file's own
            np.testing.assert_allclose(
                stored.geometry.irc_to_xyz(a.center_irc), a.center_xyz_mm, atol=1e-4
            )
            peak = np.asarray(a.peak_irc, dtype=int)
            assert res.prob[tuple(peak)] == np.float16(a.max_probability)


def test_the_canonical_frame_is_the_identity_direction_closest_to_the_file() -> None:
    ct = chest((6, 20, 24))
    other = _variant(ct, (True, True, False), True)
    turn = reorientation(other.geometry)
    np.testing.assert_allclose(turn.geometry.direction_matrix, np.eye(3), atol=1e-12)
    assert turn.geometry == ct.geometry
    view, _ = other.canonical()
    assert np.shares_memory(view.hu, other.hu), "a view, not a copy"
    np.testing.assert_array_equal(view.hu, ct.hu)
    np.testing.assert_array_equal(turn.to_file(view.hu), other.hu)
