"""Where synthetic nodules go: target diameters drawn from LUNA16's, and a center for each kind
(``solid`` and the ground-glass kinds inside a lung, ``juxtapleural`` touching the chest wall,
``edge`` cut by the first or last slice), apart from the other nodules.

Positions are array mm ``(z, y, x)`` (see :mod:`src_train.synth.primitives`).
"""

from __future__ import annotations

import json
import logging
from importlib import resources

import numpy as np

from src_train.luna import TRUE_NODULE_KINDS
from src_train.synth.config import SynthConfig
from src_train.synth.nodule_shape import NoduleSpec, make_spec
from src_train.synth.primitives import box_offsets, index_box

log = logging.getLogger(__name__)

#: A solid nodule's center keeps this far (mm) from other nodules.
NODULE_GAP_MM = 3.0

_DIAMETERS_ASSET = "luna16_diameters.json"

_DIAMETER_CACHE: list[np.ndarray] = []


def luna16_diameters_mm() -> np.ndarray:
    """The 1,186 LUNA16 reference diameters (mm, sorted), shipped with the package."""
    if not _DIAMETER_CACHE:
        text = (
            resources.files("src_train")
            .joinpath("assets", _DIAMETERS_ASSET)
            .read_text(encoding="utf-8")
        )
        _DIAMETER_CACHE.append(np.asarray(json.loads(text)["diameters_mm"], dtype=np.float64))
    return _DIAMETER_CACHE[0]


def draw_diameters(rng: np.random.Generator, cfg: SynthConfig, n: int) -> np.ndarray:
    """``n`` target diameters (mm): LUNA16 diameters within ``cfg.diameter_mm_range``, or
    uniform in that range when none of them falls inside it."""
    low, high = cfg.diameter_mm_range
    pool = luna16_diameters_mm()
    pool = pool[(pool >= low) & (pool <= high)]
    if pool.size == 0:
        return rng.uniform(low, high, size=n)
    return rng.choice(pool, size=n)


def lung_fraction(
    lung: np.ndarray, center_mm: np.ndarray, radius_mm: float, spacing: np.ndarray
) -> float:
    """Fraction of a sphere's voxels (inside the volume) that are lung."""
    box = index_box(center_mm - radius_mm, center_mm + radius_mm, spacing, lung.shape)
    if box is None:
        return 0.0
    dz, dy, dx = box_offsets(box, spacing, center_mm)
    sphere = dz**2 + dy**2 + dx**2 <= radius_mm**2
    total = int(np.count_nonzero(sphere))
    return float(np.count_nonzero(lung[box] & sphere)) / total if total else 0.0


def snap_to_voxel(
    center_mm: np.ndarray, spacing: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Near a voxel center (within a quarter voxel), so a small nodule covers its center voxel."""
    return (np.round(center_mm / spacing) + rng.uniform(-0.25, 0.25, size=3)) * spacing


def draw_nodule_center(
    rng: np.random.Generator,
    kind: str,
    lung: np.ndarray,
    spacing: np.ndarray,
    extent_mm: float,
) -> np.ndarray | None:
    """A center (array mm) for a nodule of ``kind``, or None when this try failed."""
    n_z = lung.shape[0]
    margin = int(np.ceil(extent_mm / spacing[0])) + 1
    if kind == "edge":
        at_end = bool(rng.integers(2))
        depth = rng.uniform(0.0, 0.3) * extent_mm / spacing[0]
        k = n_z - 1 - int(np.rint(depth)) if at_end else int(np.rint(depth))
        k = int(np.clip(k, 0, n_z - 1))
    elif n_z > 2 * margin:
        k = int(rng.integers(margin, n_z - margin))
    else:
        k = int(rng.integers(n_z))
    pixels = np.flatnonzero(lung[k])
    if pixels.size == 0:
        return None
    if kind == "juxtapleural":
        plane = lung[k]
        edge = plane.copy()
        edge[1:-1, 1:-1] &= ~(
            plane[:-2, 1:-1] & plane[2:, 1:-1] & plane[1:-1, :-2] & plane[1:-1, 2:]
        )
        pixels = np.flatnonzero(edge)
        pixel = int(rng.choice(pixels))
        row, col = divmod(pixel, lung.shape[2])
        rows, cols = np.nonzero(plane)
        same_side = (cols < lung.shape[2] / 2) == (col < lung.shape[2] / 2)
        target = np.array([rows[same_side].mean(), cols[same_side].mean()])
        inward = target - np.array([row, col])
        inward = inward * spacing[1:] / (np.linalg.norm(inward * spacing[1:]) or 1.0)
        # close to the wall: the pleura cuts a broad base off the nodule
        yx = np.array([row, col]) * spacing[1:] + inward * rng.uniform(0.15, 0.55) * extent_mm
        return np.array([k * spacing[0], yx[0], yx[1]])
    pixel = int(rng.choice(pixels))
    row, col = divmod(pixel, lung.shape[2])
    return np.array([k * spacing[0], row * spacing[1], col * spacing[2]])


def place_nodules(
    rng: np.random.Generator,
    cfg: SynthConfig,
    lung: np.ndarray,
    spacing: np.ndarray,
    kind_offset: int,
    max_tries: int = 60,
) -> list[NoduleSpec]:
    """Draw and place the nodules of one scan (kinds in turn from ``kind_offset``), each
    centered in the ``lung`` mask ``(index, row, col)`` as its kind wants; one that finds no
    place in ``max_tries`` is skipped."""
    n = int(rng.integers(cfg.nodules_per_scan_range[0], cfg.nodules_per_scan_range[1] + 1))
    diameters = draw_diameters(rng, cfg, n)
    placed: list[NoduleSpec] = []
    for j in range(n):
        kind = TRUE_NODULE_KINDS[(kind_offset + j) % len(TRUE_NODULE_KINDS)]
        spec = make_spec(rng, cfg, kind, float(diameters[j]), spacing)
        for attempt in range(max_tries):
            if attempt and attempt % 20 == 0:  # crowded or small lungs: try a smaller nodule
                spec = make_spec(rng, cfg, kind, max(spec.radius_mm * 1.4, 1.5), spacing)
            center = draw_nodule_center(rng, kind, lung, spacing, spec.extent_mm)
            if center is None:
                continue
            center = snap_to_voxel(center, spacing, rng)
            if not np.all(
                (center >= -0.5 * spacing) & (center <= (np.array(lung.shape) - 0.5) * spacing)
            ):
                continue
            if any(
                np.linalg.norm(center - other.center_mm)
                < spec.extent_mm + other.extent_mm + NODULE_GAP_MM
                for other in placed
            ):
                continue
            index = tuple(
                np.clip(np.round(center / spacing).astype(int), 0, np.array(lung.shape) - 1)
            )
            if not lung[index]:
                continue
            fraction = lung_fraction(lung, center, spec.extent_mm, spacing)
            wanted = (0.4, 0.9) if kind == "juxtapleural" else (0.97, 1.0)
            if wanted[0] <= fraction <= wanted[1]:
                spec.center_mm = center
                placed.append(spec)
                break
        else:
            log.debug("could not place a %s nodule of %.1f mm; skipped", kind, 2 * spec.radius_mm)
    return placed
