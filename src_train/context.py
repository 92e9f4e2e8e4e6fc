"""Model inputs: a slice with its neighbours, HU clamped.

The U-Net sees slice ``i`` together with ``context`` slices above and below it (7 channels for
the default 3); at the ends of the volume the edge slice is repeated.

The neighbours are either the next slices (voxel offsets: what the context spans in mm then
depends on the scan's slice thickness) or samples at fixed physical offsets, every
``context_mm`` millimetres, interpolated linearly between the two nearest slices
(``step_slices = context_mm / slice spacing``): the same input at any slice thickness.
"""

from __future__ import annotations

import numpy as np

#: HU range the model sees; values outside are clamped.
HU_CLAMP = (-1000, 1000)

#: Neighbouring slices on each side of the center slice.
DEFAULT_CONTEXT_SLICES = 3


def context_indices(
    center_indices: np.ndarray, n_slices: int, context: int = DEFAULT_CONTEXT_SLICES
) -> np.ndarray:
    """Slice indices ``(N, 2*context+1)`` around each center, clipped to ``[0, n_slices)``.

    Clipping repeats the edge slice at the ends of the volume (never wraps around).
    """
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(center_indices)[:, None] + offsets[None, :], 0, n_slices - 1)


def context_positions(
    center_indices: np.ndarray, n_slices: int, context: int, step_slices: float
) -> np.ndarray:
    """Fractional slice positions ``(N, 2*context+1)`` every ``step_slices`` slices around each
    center, clipped to ``[0, n_slices - 1]`` (the edge slice repeats beyond the ends)."""
    offsets = np.arange(-context, context + 1, dtype=np.float64) * float(step_slices)
    positions = np.asarray(center_indices, dtype=np.float64)[:, None] + offsets[None, :]
    return np.clip(positions, 0.0, n_slices - 1.0)


def step_slices_of(context_mm: float | None, slice_spacing_mm: float) -> float | None:
    """Slices between two context samples for ``context_mm`` (None: every slice)."""
    if context_mm is None:
        return None
    return float(context_mm) / float(slice_spacing_mm)


def context_stack(
    hu: np.ndarray,
    center_indices: np.ndarray,
    context: int = DEFAULT_CONTEXT_SLICES,
    rows: slice = slice(None),
    cols: slice = slice(None),
    step_slices: float | None = None,
) -> np.ndarray:
    """Stack model inputs for the given center slices.

    Args:
        hu: volume ``(index, row, col)`` in HU; not modified.
        center_indices: 1-D array of slice indices.
        context: neighbours on each side.
        rows, cols: optional in-plane crop (applied before copying).
        step_slices: neighbours every this many slices, interpolated linearly between the two
            nearest (:func:`step_slices_of`); None takes the next slices themselves.

    Returns:
        float32 array ``(N, 2*context+1, rows, cols)`` with HU clamped to :data:`HU_CLAMP`.
    """
    if step_slices is not None:
        return _resampled_stack(hu, center_indices, context, rows, cols, step_slices)
    idx = context_indices(np.asarray(center_indices, dtype=np.int64), hu.shape[0], context)
    stack = hu[idx, rows, cols].astype(np.float32)  # fancy indexing copies: cached data is safe
    np.clip(stack, HU_CLAMP[0], HU_CLAMP[1], out=stack)
    return stack


def _resampled_stack(
    hu: np.ndarray,
    center_indices: np.ndarray,
    context: int,
    rows: slice,
    cols: slice,
    step_slices: float,
) -> np.ndarray:
    """:func:`context_stack` at fractional positions (linear between the nearest slices)."""
    positions = context_positions(center_indices, hu.shape[0], context, step_slices)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, hu.shape[0] - 1)
    weight = (positions - below).astype(np.float32)[:, :, None, None]
    stack = hu[below, rows, cols].astype(np.float32)
    stack += weight * (hu[above, rows, cols].astype(np.float32) - stack)
    np.clip(stack, HU_CLAMP[0], HU_CLAMP[1], out=stack)
    return stack
