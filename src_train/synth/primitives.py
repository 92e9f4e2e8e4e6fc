"""Drawing primitives of the synthetic scans: random draws (a value in a range, a direction) and
the local box a shape is drawn in, so that tubes and nodules touch only the voxels near them.

Positions are "array millimetres": ``(z, y, x)`` mm from voxel ``(0, 0, 0)`` along the array
axes (IRC order); ``spacing`` is the voxel spacing in the same order.
"""

from __future__ import annotations

import numpy as np


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A value drawn uniformly from ``bounds = (low, high)`` (in the bounds' unit)."""
    return float(rng.uniform(bounds[0], bounds[1]))


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """A random direction: a unit 3-vector, uniform on the sphere."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def bend(rng: np.random.Generator, direction: np.ndarray, angle: float) -> np.ndarray:
    """``direction`` turned by ``angle`` radians about a random perpendicular axis."""
    other = rng.normal(size=3)
    perp = other - (other @ direction) * direction
    perp /= np.sqrt(perp @ perp) or 1.0
    out = np.cos(angle) * direction + np.sin(angle) * perp
    return out / np.linalg.norm(out)


def index_box(
    lo_mm: np.ndarray, hi_mm: np.ndarray, spacing: np.ndarray, shape: tuple[int, int, int]
) -> tuple[slice, slice, slice] | None:
    """Index box (IRC) covering array-mm corners ``lo_mm..hi_mm``, clipped to the volume."""
    lo = np.clip(np.floor(lo_mm / spacing).astype(int), 0, shape)
    hi = np.clip(np.ceil(hi_mm / spacing).astype(int) + 1, 0, shape)
    if np.any(hi <= lo):
        return None
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def box_offsets(
    box: tuple[slice, slice, slice], spacing: np.ndarray, origin_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable ``(z, y, x)`` array-mm offsets of a box's voxels from ``origin_mm``."""
    axes = [
        (np.arange(b.start, b.stop, dtype=np.float32) * np.float32(s) - np.float32(o))
        for b, s, o in zip(box, spacing, origin_mm, strict=True)
    ]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def xyz_tuple(values: np.ndarray) -> tuple[float, float, float]:
    """A world ``(x, y, z)`` mm array as a tuple of three floats (as the records hold it)."""
    return (float(values[0]), float(values[1]), float(values[2]))
