"""Model inputs: a slice with its neighbours, HU clamped.

The U-Net sees slice ``i`` together with ``context`` slices above and below it (7 channels for
the default 3); at the ends of the volume the edge slice is repeated.
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


def context_stack(
    hu: np.ndarray,
    center_indices: np.ndarray,
    context: int = DEFAULT_CONTEXT_SLICES,
    rows: slice = slice(None),
    cols: slice = slice(None),
) -> np.ndarray:
    """Stack model inputs for the given center slices.

    Args:
        hu: volume ``(index, row, col)`` in HU; not modified.
        center_indices: 1-D array of slice indices.
        context: neighbours on each side.
        rows, cols: optional in-plane crop (applied before copying).

    Returns:
        float32 array ``(N, 2*context+1, rows, cols)`` with HU clamped to :data:`HU_CLAMP`.
    """
    idx = context_indices(np.asarray(center_indices, dtype=np.int64), hu.shape[0], context)
    stack = hu[idx, rows, cols].astype(np.float32)  # fancy indexing copies: cached data is safe
    np.clip(stack, HU_CLAMP[0], HU_CLAMP[1], out=stack)
    return stack
