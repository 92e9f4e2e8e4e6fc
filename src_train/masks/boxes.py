"""Boxes in voxel space: ``(lo, hi)`` corners in ``(index, row, col)`` order, ``hi`` exclusive."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A box as array slices ``(index, row, col)``.
Slices3 = tuple[slice, slice, slice]


def box_around(
    center_irc: Sequence[int], radius_irc: Sequence[int], shape_irc: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The box ``center +- radius`` (inclusive) clipped to ``shape_irc``: ``(lo, hi exclusive)``."""
    lo = tuple(max(0, int(c) - int(r)) for c, r in zip(center_irc, radius_irc, strict=True))
    hi = tuple(
        min(int(n), int(c) + int(r) + 1)
        for c, r, n in zip(center_irc, radius_irc, shape_irc, strict=True)
    )
    return lo, hi  # type: ignore[return-value]


def box_slices(lo: Sequence[int], hi: Sequence[int]) -> Slices3:
    """The box ``[lo, hi)`` as array slices."""
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def union_box(boxes: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Slices3 | None:
    """Slices of the smallest box holding every non-empty box ``(lo, hi)``; None when none is."""
    boxes = [(lo, hi) for lo, hi in boxes if all(b > a for a, b in zip(lo, hi, strict=True))]
    if not boxes:
        return None
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return box_slices(lo.tolist(), hi.tolist())


def paste_into(
    region: Slices3, lo: Sequence[int], hi: Sequence[int], local: np.ndarray
) -> np.ndarray:
    """A bool array of ``region``'s shape holding ``local`` (the box ``[lo, hi)``) in place."""
    offset = [s.start for s in region]
    out = np.zeros([s.stop - s.start for s in region], dtype=bool)
    inner = box_slices(
        [a - o for a, o in zip(lo, offset, strict=True)],
        [b - o for b, o in zip(hi, offset, strict=True)],
    )
    out[inner] = local
    return out
