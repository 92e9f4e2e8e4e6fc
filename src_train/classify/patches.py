"""Cubes of CT around candidate centers, resampled to a fixed millimetre grid.

A patch is ``PATCH_VOXELS`` voxels of ``PATCH_SPACING_MM`` along world z, y, x (``(z, y, x)``
array order, HU clamped to :data:`PATCH_HU_RANGE`), centered on a world point and sampled by
trilinear interpolation through the series' geometry. The same nodule therefore gives the same
patch at any voxel spacing, and in any file axis order (the world axes decide the patch axes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from src_train.ct import CtVolume

#: Patch side in voxels and their spacing (mm): a 24 mm cube at 1 mm.
PATCH_VOXELS = 24
PATCH_SPACING_MM = 1.0
#: HU range a patch keeps (air to dense bone-free tissue).
PATCH_HU_RANGE = (-1000.0, 600.0)
#: Voxels read around the patch's box, so interpolation at its border has neighbours.
_READ_MARGIN = 2


def patch_offsets_mm(
    voxels: int = PATCH_VOXELS, spacing_mm: float = PATCH_SPACING_MM
) -> np.ndarray:
    """World offsets ``(voxels, voxels, voxels, 3)`` in ``(x, y, z)`` mm of a patch's voxels
    (array order ``(z, y, x)``) from its center."""
    steps = (np.arange(voxels) - (voxels - 1) / 2.0) * spacing_mm
    zz, yy, xx = np.meshgrid(steps, steps, steps, indexing="ij")
    return np.stack([xx, yy, zz], axis=-1)


def extract_patches(
    ct: CtVolume,
    centers_xyz_mm: Sequence[Sequence[float]] | np.ndarray,
    voxels: int = PATCH_VOXELS,
    spacing_mm: float = PATCH_SPACING_MM,
) -> np.ndarray:
    """Patches ``(N, voxels, voxels, voxels)`` float32 HU (clamped) around world centers.

    ``ct.hu`` may be memory-mapped: only a box around each patch is read. Outside the volume
    the patch holds the lowest HU of :data:`PATCH_HU_RANGE`.
    """
    centers = np.asarray(centers_xyz_mm, dtype=np.float64).reshape(-1, 3)
    out = np.full((len(centers), voxels, voxels, voxels), PATCH_HU_RANGE[0], dtype=np.float32)
    offsets = patch_offsets_mm(voxels, spacing_mm)
    shape = np.asarray(ct.shape_irc)
    for k, center in enumerate(centers):
        irc = ct.geometry.xyz_to_irc(offsets + center)  # (v, v, v, 3)
        lo = np.floor(irc.reshape(-1, 3).min(axis=0)).astype(int) - _READ_MARGIN
        hi = np.ceil(irc.reshape(-1, 3).max(axis=0)).astype(int) + _READ_MARGIN + 1
        lo_c, hi_c = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
        if np.any(hi_c <= lo_c):
            continue
        box = np.asarray(
            ct.hu[lo_c[0] : hi_c[0], lo_c[1] : hi_c[1], lo_c[2] : hi_c[2]], dtype=np.float32
        )
        coords = np.moveaxis(irc - lo_c, -1, 0)
        ndimage.map_coordinates(
            box, coords, output=out[k], order=1, mode="constant", cval=PATCH_HU_RANGE[0]
        )
    np.clip(out, PATCH_HU_RANGE[0], PATCH_HU_RANGE[1], out=out)
    return out
