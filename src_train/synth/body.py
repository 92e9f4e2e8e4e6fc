"""The body of a synthetic scan, drawn slice by slice: skin, fat and muscle, ribs as arcs round
the chest wall, the vertebra (body, canal, posterior arch; discs between), two lungs shaped by
the thorax and the mediastinum (the left smaller, with the heart's notch), the heart in its fat,
the aorta (ascending, arch, descending), the pulmonary trunk, diaphragm domes with liver and
spleen below, fissures, and parenchyma and soft-tissue texture.

Arrays are ``(index, row, col)``; in-plane positions mm from the slice center (see
:mod:`.anatomy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src_train.ct import Geometry
from src_train.synth.anatomy import Anatomy
from src_train.synth.texture import SmoothField

#: Tissue values, HU.
AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 45.0
MEDIASTINAL_FAT_HU = -90.0
HEART_HU = 40.0
AORTA_HU = 45.0
LIVER_HU = 58.0
SPLEEN_HU = 48.0
RIB_HU = 300.0
RIB_CORTEX_HU = 750.0
VERTEBRA_HU = 220.0
CORTEX_HU = 650.0
DISC_HU = 85.0
CANAL_HU = 15.0
#: Fissures are this much denser than the lung around them, HU.
FISSURE_HU = 160.0
FISSURE_MM = 0.8

#: Rib pattern: one rib plus one intercostal space per this many mm along z.
RIB_PERIOD_MM = 26.0
#: Fraction of a period that is bone.
RIB_FILL = 0.38
#: Ribs drop this many mm per mm travelled round the ribcage from the spine.
RIB_SLOPE = 0.3
#: Slices of texture made at once.
TEXTURE_SLAB = 32
#: Correlation length of the parenchyma and soft-tissue texture, mm (at least 2 pixels).
TEXTURE_MM = 4.0
#: One vertebra plus its disc per this many mm; the disc's share.
VERTEBRA_PERIOD_MM = 27.0
DISC_FILL = 0.2


def thorax_scale(u: float) -> float:
    """Lung cross-section scale at lung height ``u`` (wide at the base, a cone at the apex)."""
    if u <= 0.55:
        return 0.92 + 0.08 * float(np.clip(u, 0, 0.55)) / 0.55
    return float(np.sqrt(max(1.0 - ((u - 0.55) / 0.5) ** 2, 0.0)))


def heart_scale(u: float) -> float:
    """Heart cross-section scale at lung height ``u`` (0 where there is none)."""
    return float(np.sqrt(max(1.0 - ((u - 0.24) / 0.27) ** 2, 0.0)))


@dataclass
class _Plane:
    """In-plane coordinates and the shapes that do not change along the scan."""

    x: np.ndarray  # (1, n_x) mm
    y: np.ndarray  # (n_y, 1) mm, relative to the body center
    rho: np.ndarray  # thorax radius (1 at the inner rib surface of a full-size slice)
    from_spine: np.ndarray  # mm round the ribcage from the spine
    rib_zone: np.ndarray
    template: np.ndarray  # air, fat, muscle


def _plane(geometry: Geometry, anat: Anatomy) -> _Plane:
    _, n_y, n_x = geometry.shape_irc
    _, spacing_y, spacing_x = geometry.spacing_irc_mm
    y = ((np.arange(n_y, dtype=np.float32) - (n_y - 1) / 2) * spacing_y)[:, None] - anat.body_cy
    x = ((np.arange(n_x, dtype=np.float32) - (n_x - 1) / 2) * spacing_x)[None, :]
    bx, by = anat.thorax_bx, anat.thorax_by
    template = np.full((n_y, n_x), AIR_HU, dtype=np.float32)
    template[(x / anat.body_ax) ** 2 + (y / anat.body_ay) ** 2 <= 1] = FAT_HU
    inner_ax, inner_ay = anat.body_ax - anat.fat_mm, anat.body_ay - anat.fat_mm
    template[(x / inner_ax) ** 2 + (y / inner_ay) ** 2 <= 1] = MUSCLE_HU
    theta = np.arctan2(x, -y)  # 0 at the front, +-pi at the spine
    outline = np.ones_like(theta)
    for order, amplitude, phase in anat.boundary_harmonics:
        outline += amplitude * np.cos(order * theta + phase)
    # the back is flatter and the lungs reach round the spine (paravertebral gutters)
    yy = np.where(y > 0, y * (1.0 - 0.12 * np.cos(theta) ** 2), y)
    rho = (np.sqrt((x / bx) ** 2 + (yy / by) ** 2) / outline).astype(np.float32)
    return _Plane(
        x=x,
        y=y,
        rho=rho,
        from_spine=(np.pi - np.abs(theta)) * bx,
        rib_zone=(np.abs(theta) < np.pi - 0.35) & (np.abs(theta) > 0.35),
        template=template,
    )


def _ribs(p: _Plane, anat: Anatomy, s: float, z_mm: float, out: np.ndarray) -> None:
    """Draw the ribs cut by the slice at ``z_mm`` (thorax scale ``s``) into ``out``: arcs in a
    band outside the lungs, sloping down toward the front; bright cortex round the marrow."""
    inner = s + 0.02
    band = np.flatnonzero(p.rib_zone & (p.rho >= inner) & (p.rho < inner + anat.rib_band))
    phase = 2 * np.pi * (z_mm + RIB_SLOPE * p.from_spine.ravel()[band]) / RIB_PERIOD_MM
    rib = band[np.cos(phase + anat.rib_phase) > np.cos(np.pi * RIB_FILL)]
    half = anat.rib_band / 2
    depth = np.abs(p.rho.ravel()[rib] - inner - half) / half
    out.ravel()[rib] = np.where(depth > 0.6, RIB_CORTEX_HU, RIB_HU)


def _disc(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _segment(
    x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float], r: float
) -> np.ndarray:
    """Points within ``r`` of the segment ``a``-``b`` (in-plane ``(x, y)`` mm)."""
    ax, ay = a
    vx, vy = b[0] - ax, b[1] - ay
    t = np.clip(((x - ax) * vx + (y - ay) * vy) / (vx * vx + vy * vy + 1e-9), 0.0, 1.0)
    return (x - ax - t * vx) ** 2 + (y - ay - t * vy) ** 2 <= r * r


def _spine(p: _Plane, anat: Anatomy, z_mm: float, out: np.ndarray) -> np.ndarray:
    """Draw the vertebra (or its disc) into ``out``; return the region lungs stay out of."""
    x, y = p.x, p.y
    vy, vr = anat.vertebra
    canal_y = vy + 1.45 * vr
    disc = (z_mm / VERTEBRA_PERIOD_MM + anat.rib_phase) % 1.0 < DISC_FILL
    body = _disc(x, y, 0.0, vy, vr)
    arch = _disc(x, y, 0.0, canal_y, 0.85 * vr) & (y > canal_y - 0.3 * vr)
    spinous = (np.abs(x) < 0.18 * vr) & (y > canal_y) & (y < canal_y + 2.0 * vr)
    transverse = (np.abs(y - canal_y + 0.2 * vr) < 0.22 * vr) & (np.abs(x) < 1.6 * vr)
    bone = arch | spinous | transverse
    out[bone] = CORTEX_HU
    out[_disc(x, y, 0.0, canal_y, 0.5 * vr)] = CANAL_HU
    if disc:
        out[body] = DISC_HU
    else:
        out[body] = CORTEX_HU
        out[_disc(x, y, 0.0, vy, 0.85 * vr)] = VERTEBRA_HU
    return _disc(x, y, 0.0, vy, 1.3 * vr) | bone


def _mediastinum(
    p: _Plane, anat: Anatomy, u: float, out: np.ndarray, allowed: np.ndarray
) -> np.ndarray:
    """Draw the mediastinum (fat, heart, aorta, pulmonary trunk) into ``out`` where ``allowed``;
    return its mask."""
    x, y = p.x, p.y
    bx, by = anat.thorax_bx, anat.thorax_by
    vy, vr = anat.vertebra
    # a band from the sternum to the spine: narrow in front, wider behind (esophagus, azygos)
    half_width = 0.025 * bx + 0.16 * bx * np.clip((y + 0.1 * by) / by, 0.0, 1.0) ** 0.7
    fat = np.abs(x - 0.02 * bx) < half_width
    vessels = np.zeros_like(fat)
    if 0.45 < u < 0.95:
        size = 1.0 if u < 0.78 else 1.0 - 1.6 * (u - 0.78)
        fat |= ((x - 0.03 * bx) / (0.3 * bx * size)) ** 2 + (
            (y + 0.05 * by) / (0.55 * by * size)
        ) ** 2 < 1
    h = heart_scale(u) * anat.heart_size
    heart = np.zeros_like(fat)
    if h > 0:
        hx, hy = anat.heart_x * bx, -0.3 * by
        heart_r = ((x - hx) / (0.48 * bx * h)) ** 2 + ((y - hy) / (0.56 * by * h)) ** 2
        fat |= heart_r < 1.12**2
        heart = heart_r < 1.0
    ao_r = 0.1 * bx * anat.size_scale**0.2
    descending = (0.16 * bx, vy - 1.25 * vr)
    ascending = (-0.03 * bx, -0.12 * by)
    if u < 0.74:
        vessels |= _disc(x, y, *descending, ao_r * 0.9)
    if 0.42 < u < 0.74:
        vessels |= _disc(x, y, *ascending, ao_r)
    if 0.7 <= u < 0.78:
        vessels |= _segment(x, y, ascending, descending, ao_r * 0.95)
    if 0.46 < u < 0.6:  # pulmonary trunk, left of the ascending aorta
        vessels |= _disc(x, y, 0.12 * bx, -0.22 * by, 0.09 * bx)
    if 0.5 < u < 0.85:  # superior vena cava
        vessels |= _disc(x, y, -0.15 * bx, -0.16 * by, 0.055 * bx)
    fat |= vessels
    fat &= allowed
    out[fat] = MEDIASTINAL_FAT_HU
    out[heart & allowed] = HEART_HU
    out[vessels & allowed] = AORTA_HU
    return fat


def _domes(p: _Plane, anat: Anatomy, u: float, out: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Draw the liver (right) and spleen (left) under the diaphragm domes where ``allowed``;
    return the mask."""
    x, y = p.x, p.y
    bx, by = anat.thorax_bx, anat.thorax_by
    below = np.zeros(out.shape, dtype=bool)
    for side, top, value in (
        (-1.0, anat.dome_right_u, LIVER_HU),
        (1.0, anat.dome_left_u, SPLEEN_HU),
    ):
        depth = (top - u) / (top + 0.02)
        if depth <= 0:
            continue
        s = np.sqrt(min(depth, 1.0))
        dome = ((x - side * 0.42 * bx) / (0.52 * bx * s)) ** 2 + (
            (y + 0.12 * by) / (0.7 * by * s)
        ) ** 2 < 1
        dome &= allowed
        out[dome] = value
        below |= dome
    return below


def _fissure_planes(p: _Plane, anat: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the fissures are, as lung heights per in-plane point: the oblique fissure (both
    lungs; further back medially, bowed), the horizontal one (right lung), and the mask where
    the horizontal one can be (the right lung's front)."""
    x, y = p.x, p.y
    side_x = np.abs(x) / anat.thorax_bx
    y_rel = y / anat.thorax_by
    oblique = anat.fissure_u + anat.fissure_slope * (y_rel + 0.35 * side_x)
    oblique = oblique + 0.1 * (side_x - 0.5) ** 2
    horizontal = np.broadcast_to(anat.horizontal_fissure_u + 0.03 * y_rel, oblique.shape)
    return (
        oblique.astype(np.float32),
        horizontal.astype(np.float32),
        np.broadcast_to(x < 0, oblique.shape),
    )


def _fissures(
    planes: tuple[np.ndarray, np.ndarray, np.ndarray], anat: Anatomy, u: float, mm_per_u: float
) -> np.ndarray:
    """Weight (0..1) of the fissures in the slice at lung height ``u``."""
    oblique, horizontal, right = planes
    # distance along the normal of the oblique surface, mm
    grad = np.sqrt(1.0 + (anat.fissure_slope * mm_per_u / anat.thorax_by) ** 2)
    scale = np.float32(mm_per_u / grad / FISSURE_MM)
    weight = 1.0 - np.abs(oblique - np.float32(u)) * scale
    across = 1.0 - np.abs(horizontal - np.float32(u)) * np.float32(mm_per_u / FISSURE_MM)
    across[~right | (oblique > u)] = 0.0
    np.maximum(weight, across, out=weight)
    return np.clip(weight, 0.0, 1.0, out=weight)


def draw_body(
    rng: np.random.Generator, geometry: Geometry, anat: Anatomy
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HU (float32) and the lung mask (bool), both ``(index, row, col)``."""
    n_z = geometry.shape_irc[0]
    spacing_z = geometry.spacing_irc_mm[0]
    p = _plane(geometry, anat)
    corr_mm = max(TEXTURE_MM, 2.0 * geometry.spacing_irc_mm[1])
    grain = SmoothField(rng, geometry.shape_irc, geometry.spacing_irc_mm, corr_mm)
    lung_map = (anat.lung_hu + anat.lung_hu_gradient * p.y / anat.thorax_by).astype(np.float32)
    mm_per_u = 1.0 / anat.u_per_mm
    planes = _fissure_planes(p, anat)
    hu = np.empty(geometry.shape_irc, dtype=np.float32)
    lung = np.empty(geometry.shape_irc, dtype=bool)
    texture = np.empty(0)
    for k in range(n_z):  # one slice at a time keeps temporaries small
        if k % TEXTURE_SLAB == 0:
            k1 = min(k + TEXTURE_SLAB, n_z)
            texture = grain.slab(k, k1) * np.float32(anat.texture_hu)
        z_mm = k * spacing_z
        u = float(anat.u_of_z(z_mm))
        s = thorax_scale(u)
        out = hu[k]
        out[...] = p.template
        _ribs(p, anat, s, z_mm, out)
        inside = p.rho < s
        out[inside] = MUSCLE_HU
        blocked = _spine(p, anat, z_mm, out)
        allowed = inside & ~blocked
        blocked |= _mediastinum(p, anat, u, out, allowed)
        blocked |= _domes(p, anat, u, out, allowed)
        lung_k = inside & ~blocked
        texture_k = texture[k % TEXTURE_SLAB]
        fissure = _fissures(planes, anat, u, mm_per_u)
        values = lung_map + texture_k + FISSURE_HU * fissure
        out[lung_k] = values[lung_k]
        soft = ~lung_k & (out > -200) & (out < 100)
        out[soft] += 0.4 * texture_k[soft]
        lung[k] = lung_k
    return hu, lung
