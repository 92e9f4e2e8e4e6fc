"""Bit-packed masks: every index gives what the unpacked array gives; crops unpack only a crop."""

from __future__ import annotations

import numpy as np
import pytest

from src_train.packed import PackedMask, pack_mask, packed_bytes

SHAPES = [(3, 5, 1), (2, 4, 8), (3, 7, 13), (4, 6, 17), (2, 3, 64)]


def keys(shape: tuple[int, int, int]) -> list[object]:
    z, r, c = shape
    return [
        0,
        z - 1,
        -1,
        (1 % z, slice(1, r - 1), slice(0, c)),
        (0, slice(None), slice(c // 3, c - 1)),
        (slice(None), 2 % r),
        (slice(0, z, 2), slice(None, None, 2), slice(1, None, 3)),
        (0, 1 % r, c - 1),
        (-1, -1, -1),
        (0, slice(None), slice(5, 2)),  # empty
        (0, slice(None), slice(0, 1000)),  # past the end, as numpy allows
        (slice(None), slice(None), c - 1),
        (0, slice(None), slice(None, None, -1)),  # reversed: unpacks all, still right
        (np.array([0, z - 1]),),  # fancy: unpacks all, still right
        (Ellipsis, 0),
    ]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_index_matches_the_unpacked_mask(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < 0.4
    bits = pack_mask(mask)
    assert bits.dtype == np.uint8 and bits.nbytes == packed_bytes(shape)
    packed = PackedMask(bits, shape[2])
    assert packed.shape == shape and len(packed) == shape[0]
    assert np.array_equal(np.asarray(packed), mask)
    for key in keys(shape):
        got = packed[key]  # type: ignore[index]
        want = mask[key]  # type: ignore[index]
        assert got.dtype == bool and got.shape == want.shape, key
        assert np.array_equal(got, want), key


def test_a_crop_never_unpacks_the_whole_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = np.zeros((5, 40, 44), dtype=bool)
    mask[2, 10:20, 30:37] = True
    packed = PackedMask(pack_mask(mask), 44)

    def refuse() -> np.ndarray:
        raise AssertionError("unpacked everything for a crop")

    monkeypatch.setattr(packed, "unpack", refuse)
    crop = packed[2, 8:24, 29:41]
    assert crop.shape == (16, 12) and crop.sum() == 70
    assert np.array_equal(crop, mask[2, 8:24, 29:41])
    assert np.array_equal(packed[2], mask[2]) and packed[2, 15, 33] and not packed[2, 15, 37]
    with pytest.raises(IndexError):
        packed[0, 0, 44]


def test_bits_that_do_not_fit_the_columns_are_refused() -> None:
    bits = pack_mask(np.zeros((2, 3, 16), dtype=bool))
    with pytest.raises(ValueError, match="columns"):
        PackedMask(bits, 17)
    with pytest.raises(ValueError, match="columns"):
        PackedMask(bits, 8)
