"""Where the body and the lungs are in a CT, cheaply: boxes and fields for inference.

Arrays are ``(index, row, col)`` in HU. :func:`body_box` bounds the model's in-plane work;
:func:`lung_field` keeps candidate voxels where nodules can be (in the lungs or on their wall).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: HU above which a voxel counts as body (for the in-plane crop); lungs lie inside the body.
BODY_THRESHOLD_HU = -500.0

#: HU below which a voxel is air or lung parenchyma, for :func:`lung_field`.
LUNG_AIR_HU = -400.0

#: In-plane subsampling of :func:`lung_field` (the field is smooth; 2 makes it 4x cheaper).
_LUNG_FIELD_STEP = 2

#: Slices per chunk when scanning a volume (bounds temporary memory).
SCAN_CHUNK_SLICES = 32


def body_box(hu: np.ndarray, multiple: int, margin: int) -> tuple[int, int, int, int]:
    """In-plane box ``(row0, row1, col0, col1)`` around voxels denser than the body threshold.

    Widened by ``margin`` pixels, its start aligned to ``multiple`` (so pooling windows match a
    whole-slice pass), clipped to the slice. The whole slice when nothing is that dense.
    """
    n_z, n_rows, n_cols = hu.shape
    rows_hit = np.zeros(n_rows, dtype=bool)
    cols_hit = np.zeros(n_cols, dtype=bool)
    for z0 in range(0, n_z, SCAN_CHUNK_SLICES):
        dense = hu[z0 : z0 + SCAN_CHUNK_SLICES] > BODY_THRESHOLD_HU
        rows_hit |= dense.any(axis=(0, 2))
        cols_hit |= dense.any(axis=(0, 1))
    if not rows_hit.any():
        return (0, n_rows, 0, n_cols)
    r = np.flatnonzero(rows_hit)
    c = np.flatnonzero(cols_hit)
    r0 = max(int(r[0]) - margin, 0) // multiple * multiple
    c0 = max(int(c[0]) - margin, 0) // multiple * multiple
    r1 = min(int(r[-1]) + 1 + margin, n_rows)
    c1 = min(int(c[-1]) + 1 + margin, n_cols)
    return (r0, r1, c0, c1)


def lung_field(
    hu: np.ndarray, spacing_irc_mm: Sequence[float], margin_mm: float = 0.0
) -> np.ndarray:
    """Bool mask ``(index, row, col)`` of the lung field: the lungs with what lies inside them.

    Per slice: air (below :data:`LUNG_AIR_HU`) not connected to the slice's border (the air
    around the body), with holes filled (nodules, vessels), widened in-plane by ``margin_mm``
    (juxtapleural nodules). Computed on every second row and column and expanded back.
    """
    step = _LUNG_FIELD_STEP
    small = hu[:, ::step, ::step] < LUNG_AIR_HU
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(small, structure=in_plane)
    border = np.unique(
        np.concatenate(
            [
                labels[:, 0].ravel(),
                labels[:, -1].ravel(),
                labels[:, :, 0].ravel(),
                labels[:, :, -1].ravel(),
            ]
        )
    )
    field = small & ~np.isin(labels, border[border > 0])
    del labels
    field = ndimage.binary_fill_holes(field, structure=in_plane)
    pixel_mm = step * min(spacing_irc_mm[1], spacing_irc_mm[2])
    radius = math.ceil(margin_mm / pixel_mm) if margin_mm > 0 else 0
    if radius:
        disk = np.zeros((3, 2 * radius + 1, 2 * radius + 1), dtype=bool)
        yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
        disk[1] = yy**2 + xx**2 <= radius**2
        field = ndimage.binary_dilation(field, structure=disk)
    full = np.repeat(np.repeat(field, step, axis=1), step, axis=2)
    return full[:, : hu.shape[1], : hu.shape[2]]
