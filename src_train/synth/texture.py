"""Texture and the scanner's look: smooth random fields (lung parenchyma, soft tissue) made slice
by slice from a coarse grid, and the reconstruction kernel (a smooth kernel blurs the image and
correlates the noise in-plane; a sharp one enhances edges and leaves the noise fine-grained).

Arrays are ``(index, row, col)``; spacings are mm in the same order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from src_train.synth.protocols import ScanProtocol

#: In-plane blur (point spread) of a smooth kernel, and of the noise it leaves, mm (sigma);
#: its filters are cut at 1 pixel (the sharp kernel's at 2), enough for looks and cheap.
SMOOTH_PSF_MM = 0.6
#: A sharp kernel adds this much of (image - its blur at :data:`SHARP_BLUR_MM`).
SHARP_GAIN = 0.6
SHARP_BLUR_MM = 1.0
#: Volumes up to this many voxels get their texture by filtering white noise directly.
DIRECT_MAX_VOXELS = 4_000_000
#: Interpolation weights below this are dropped.
_NEGLIGIBLE = 1e-4


def _interpolation_matrix(n: int, step_mm: float, corr_mm: float) -> tuple[np.ndarray, int]:
    """Weights ``(n, m)`` from a coarse grid of ``m`` points to ``n`` voxels ``step_mm`` apart,
    Gaussian of ``corr_mm``; each row has unit sum of squares (unit-variance output)."""
    grid_step = corr_mm / 1.5
    extent = (n - 1) * step_mm
    grid = np.arange(-2 * corr_mm, extent + 2 * corr_mm + grid_step, grid_step)
    pos = np.arange(n) * step_mm
    weights = np.exp(-0.5 * ((pos[:, None] - grid[None, :]) / corr_mm) ** 2)
    weights[weights < _NEGLIGIBLE] = 0.0  # no float32 denormals: they make BLAS crawl
    weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
    return weights.astype(np.float32), grid.size


class SmoothField:
    """A Gaussian random field of unit variance and correlation length ``corr_mm``, read a slab
    of slices at a time (``field.slab(k0, k1)`` is ``(index, row, col)``).

    A small volume (up to :data:`DIRECT_MAX_VOXELS`) is white noise filtered once. A large one
    is made from a coarse grid by three matrix products per slab, two of them one large product
    each (small products, one per slice, would spend their time starting BLAS threads).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        shape_irc: tuple[int, int, int],
        spacing_irc_mm: tuple[float, float, float],
        corr_mm: float,
    ) -> None:
        self._whole: np.ndarray | None = None
        if int(np.prod(shape_irc)) <= DIRECT_MAX_VOXELS:
            white = rng.standard_normal(shape_irc, dtype=np.float32)
            sigma = [corr_mm / s for s in spacing_irc_mm]
            whole = ndimage.gaussian_filter(white, sigma, truncate=2.5)
            whole /= np.float32(max(float(whole.std()), 1e-6))
            self._whole = whole
            return
        self._wz, m_z = _interpolation_matrix(shape_irc[0], spacing_irc_mm[0], corr_mm)
        self._wy, m_y = _interpolation_matrix(shape_irc[1], spacing_irc_mm[1], corr_mm)
        self._wx, m_x = _interpolation_matrix(shape_irc[2], spacing_irc_mm[2], corr_mm)
        self._coarse = rng.standard_normal((m_z, m_y * m_x), dtype=np.float32)

    def slab(self, k0: int, k1: int) -> np.ndarray:
        """Slices ``k0 .. k1 - 1`` of the field, ``(index, row, col)`` float32."""
        if self._whole is not None:
            return self._whole[k0:k1]
        m_y, m_x = self._wy.shape[1], self._wx.shape[1]
        n = k1 - k0
        planes = (self._wz[k0:k1] @ self._coarse).reshape(n, m_y, m_x)
        rows = self._wy @ planes.transpose(1, 0, 2).reshape(m_y, n * m_x)  # (n_y, n * m_x)
        rows = rows.reshape(-1, n, m_x).transpose(1, 0, 2).reshape(-1, m_x)
        out: np.ndarray = (rows @ self._wx.T).reshape(n, self._wy.shape[0], self._wx.shape[0])
        return out


def apply_kernel(
    hu: np.ndarray,
    protocol: ScanProtocol,
    spacing_irc_mm: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """The noise-free ``hu`` (float32) as the protocol's kernel reconstructs it, with its noise
    (standard deviation ``protocol.noise_hu`` in homogeneous tissue). Returns a new array."""
    spacing_px = float(spacing_irc_mm[1])
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    if protocol.kernel == "smooth":
        taps = np.exp(-0.5 * (np.arange(-1, 2) * spacing_px / SMOOTH_PSF_MM) ** 2)
        taps /= taps.sum()
        # filtered along rows and columns, white noise keeps sum(taps**2) of its std
        noise *= np.float32(protocol.noise_hu / float((taps**2).sum()))
        noise += hu
        ndimage.correlate1d(noise, taps, axis=1, output=noise)
        ndimage.correlate1d(noise, taps, axis=2, output=noise)
        return noise
    blur_px = SHARP_BLUR_MM / spacing_px
    out = ndimage.gaussian_filter(hu, (0, blur_px, blur_px), radius=(0, 2, 2))
    out -= hu
    out *= np.float32(-SHARP_GAIN)
    out += hu
    noise *= np.float32(protocol.noise_hu)
    out += noise
    return out
