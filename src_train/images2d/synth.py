"""Synthetic dermoscopy-like images with their true lesion masks (``lunaseg synth2d``).

Each image is skin (a tone, smooth blotches, fine texture) with one pigmented lesion: an
irregular outline (a few harmonics of the angle plus a fine ragged edge), darker and
structured inside (a darker core, patchy regression, dark globules), blending into the skin
over a soft border. Over it: dark hairs that cross the lesion, uneven light (a gradient),
vignetting (corners darker, sometimes the black ring of the dermoscope's aperture) and sensor
noise. The mask is the lesion outline, before hairs and lighting: the truth, exactly.

:func:`generate_image` makes one image from ``(seed, index)``; :func:`write_image_set` writes a
folder in PH2 layout (``<ID>/<ID>_Dermoscopic_Image/<ID>.bmp``, ``<ID>/<ID>_lesion/
<ID>_lesion.bmp``) or flat (``images/<ID>.png``, ``masks/<ID>.png``) that
:func:`~src_train.images2d.folder.find_pairs` reads back. Image sizes vary a little, as real
sets do, so the loader's resizing is exercised.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from src_train.atomic import (
    atomic_write,
    check_generated_folder,
    make_folder,
    write_text_atomic,
)
from src_train.errors import CancelledError, ConfigError
from src_train.images2d.folder import PH2_IMAGE_FOLDER, PH2_MASK_FOLDER, PairedFolder, find_pairs
from src_train.options import option

log = logging.getLogger(__name__)

#: Marker written into every synthetic folder (seed, config); only such folders are replaced.
MARKER_FILE = "lunaseg-synth2d.json"

#: Layouts :func:`write_image_set` writes.
LAYOUTS = ("ph2", "flat")

#: ``progress(done, total, message)`` after each image.
ProgressCallback = Callable[[int, int, str], None]

#: Mask value of lesion pixels in the written files.
MASK_ON = 255

#: Skin tones (RGB in [0, 1]) the skin colour is blended from, light to dark.
SKIN_TONES_RGB = ((0.93, 0.75, 0.66), (0.80, 0.58, 0.46), (0.62, 0.43, 0.32))
#: Lesion pigment, light brown to near black (RGB in [0, 1]).
LESION_TONES_RGB = ((0.55, 0.36, 0.25), (0.30, 0.18, 0.12), (0.14, 0.09, 0.08))
#: Colour of hairs (RGB in [0, 1]).
HAIR_RGB = (0.12, 0.08, 0.06)
#: The harmonics of the lesion outline: orders 2 to this.
OUTLINE_HARMONICS = 6
#: Pixels of side the default sizes are drawn for; lengths in pixels scale with the image.
REFERENCE_SIDE_PX = 288


@dataclass(frozen=True)
class SynthImageConfig:
    """Ranges the synthetic images are drawn from (inclusive ``(low, high)``).

    Fractions are of the image's shorter side unless said otherwise; pixel widths are for a
    :data:`REFERENCE_SIDE_PX` image and scale with it.

    Attributes:
        rows, cols: nominal image size, pixels (PH2 is 560 x 768; default a smaller 288 x 384).
        size_jitter: each image's rows and cols vary by up to this fraction.
        lesion_radius: mean radius of the lesion outline.
        lesion_elongation: ratio of the short to the long axis.
        lesion_offset: distance of the lesion's center from the image center.
        irregularity: amplitude of the outline's harmonics (0 = an ellipse).
        ragged_edge: amplitude of the fine ragged edge, as a fraction of the radius.
        border_px: width of the soft border over which the lesion fades into the skin.
        pigment: strength of the pigment (0 = invisible, 1 = full lesion tone).
        regression: depth of lighter patches inside the lesion.
        globules: dark dots inside the lesion.
        hairs: hairs per image (few images get many).
        hair_length: length of a hair.
        hair_px: hair thickness.
        light_gradient: strength of the uneven light across the image.
        vignette: darkening at the corners.
        aperture_fraction: fraction of images with the dermoscope's black ring.
        noise: standard deviation of the sensor noise (RGB in [0, 1]).
    """

    rows: int = 288
    cols: int = 384
    size_jitter: float = 0.08
    lesion_radius: tuple[float, float] = (0.18, 0.42)
    lesion_elongation: tuple[float, float] = (0.65, 1.0)
    lesion_offset: tuple[float, float] = (0.0, 0.15)
    irregularity: tuple[float, float] = (0.02, 0.12)
    ragged_edge: tuple[float, float] = (0.01, 0.06)
    border_px: tuple[float, float] = (1.5, 9.0)
    pigment: tuple[float, float] = (0.45, 1.0)
    regression: tuple[float, float] = (0.0, 0.5)
    globules: tuple[int, int] = (0, 25)
    hairs: tuple[int, int] = (0, 12)
    hair_length: tuple[float, float] = (0.3, 1.0)
    hair_px: tuple[float, float] = (1.0, 3.0)
    light_gradient: tuple[float, float] = (0.0, 0.25)
    vignette: tuple[float, float] = (0.1, 0.5)
    aperture_fraction: float = 0.3
    noise: tuple[float, float] = (0.005, 0.03)

    def __post_init__(self) -> None:
        if self.rows < 16 or self.cols < 16:
            raise ConfigError(
                f"Synthetic images need at least 16 x 16 pixels; got {self.rows} x {self.cols}."
            )
        if not 0 <= self.size_jitter < 0.5:
            raise ConfigError(f"size_jitter must be in [0, 0.5); got {self.size_jitter}.")

    @classmethod
    def tiny(cls) -> SynthImageConfig:
        """Small images for tests (64 x 80 nominal)."""
        return cls(rows=64, cols=80)


@dataclass
class Synth2dOptions:
    """Options of ``lunaseg synth2d`` (each field is an option; see :mod:`src_train.options`)."""

    out_dir: str = option(help="folder to write")
    images: int = option(200, help="images to write (PH2 has 200)")
    seed: int = option(0, help="seed of the whole set (image i depends on seed and i only)")
    layout: str = option(
        "ph2",
        help="ph2: <ID>/<ID>_Dermoscopic_Image/<ID>.bmp + <ID>_lesion/<ID>_lesion.bmp; "
        "flat: images/<ID>.png + masks/<ID>.png",
        choices=LAYOUTS,
    )
    rows: int = option(SynthImageConfig.rows, help="nominal image height, pixels")
    cols: int = option(SynthImageConfig.cols, help="nominal image width, pixels")
    overwrite: bool = option(False, help="replace an earlier synthetic image set there")

    def config(self) -> SynthImageConfig:
        """The drawing ranges these options ask for (sizes vary around ``rows`` x ``cols``)."""
        return SynthImageConfig(rows=self.rows, cols=self.cols)


@dataclass(frozen=True)
class SynthImage:
    """One synthetic image: ``rgb`` uint8 ``(row, col, 3)``, ``mask`` bool ``(row, col)``,
    and the drawn parameters that matter for reading results (``pigment``, ``hairs``...)."""

    key: str
    rgb: np.ndarray
    mask: np.ndarray
    params: dict[str, float]


def image_key(index: int) -> str:
    """Name of the ``index``-th synthetic image (``SYN001``...)."""
    return f"SYN{index + 1:03d}"


def _draw(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation, ``(row, col)``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(sigma_px, 0.5))
    return field / max(float(field.std()), 1e-12)


def _blend(tones: tuple[tuple[float, float, float], ...], t: float) -> np.ndarray:
    """Colour at ``t`` in [0, 1] along the piecewise-linear ramp of ``tones``."""
    ramp = np.asarray(tones, dtype=np.float64)
    pos = t * (len(ramp) - 1)
    low = min(int(pos), len(ramp) - 2)
    return ramp[low] + (pos - low) * (ramp[low + 1] - ramp[low])


def _lesion_distance(
    rng: np.random.Generator, cfg: SynthImageConfig, rows: int, cols: int, scale: float
) -> tuple[np.ndarray, dict[str, float]]:
    """Normalised distance ``(row, col)`` from the lesion center: < 1 inside the outline."""
    side = min(rows, cols)
    radius = _draw(rng, cfg.lesion_radius) * side
    offset = _draw(rng, cfg.lesion_offset) * side
    direction = rng.uniform(0, 2 * np.pi)
    center_rc = (rows / 2 + offset * np.sin(direction), cols / 2 + offset * np.cos(direction))
    rr, cc = np.mgrid[0:rows, 0:cols].astype(np.float64)
    dy, dx = rr - center_rc[0], cc - center_rc[1]
    tilt = rng.uniform(0, np.pi)
    along = dx * np.cos(tilt) + dy * np.sin(tilt)
    across = (-dx * np.sin(tilt) + dy * np.cos(tilt)) / _draw(rng, cfg.lesion_elongation)
    angle = np.arctan2(across, along)
    outline = np.ones_like(angle)
    irregularity = _draw(rng, cfg.irregularity)
    for order in range(2, OUTLINE_HARMONICS + 1):
        amplitude = irregularity * rng.uniform(0.3, 1.0) / (order - 1)
        outline += amplitude * np.cos(order * angle + rng.uniform(0, 2 * np.pi))
    ragged = _draw(rng, cfg.ragged_edge) * _smooth_noise(rng, (rows, cols), 2.5 * scale)
    distance = np.hypot(along, across) / (radius * outline) + ragged
    params = {"radius_px": radius, "irregularity": irregularity}
    return distance, params


def _hair_alpha(
    rng: np.random.Generator, cfg: SynthImageConfig, rows: int, cols: int, scale: float
) -> np.ndarray:
    """Opacity ``(row, col)`` of the hairs: curved strands of their own thickness each.

    Each hair is a quadratic Bezier curve rasterised to pixels; one distance transform gives
    every pixel its distance to (and the thickness of) the nearest hair pixel.
    """
    # few images have many hairs: the count's square-root is uniform
    count = round(cfg.hairs[0] + (cfg.hairs[1] - cfg.hairs[0]) * rng.uniform() ** 2)
    if count == 0:
        return np.zeros((rows, cols))
    side = min(rows, cols)
    half_width = np.zeros((rows, cols))
    t = np.linspace(0.0, 1.0, 2 * (rows + cols))[:, None]
    for _ in range(count):
        start = rng.uniform((-0.1 * rows, -0.1 * cols), (1.1 * rows, 1.1 * cols))
        heading = rng.uniform(0, 2 * np.pi)
        length = _draw(rng, cfg.hair_length) * side
        end = start + length * np.array([np.sin(heading), np.cos(heading)])
        bend = (start + end) / 2 + rng.normal(0, 0.15 * length, 2)
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        rc = np.rint(curve).astype(np.int64)
        inside = (rc[:, 0] >= 0) & (rc[:, 0] < rows) & (rc[:, 1] >= 0) & (rc[:, 1] < cols)
        half_width[rc[inside, 0], rc[inside, 1]] = _draw(rng, cfg.hair_px) * scale / 2
    on_hair = half_width > 0
    if not on_hair.any():
        return np.zeros((rows, cols))
    distance, (near_r, near_c) = ndimage.distance_transform_edt(~on_hair, return_indices=True)
    return np.clip(half_width[near_r, near_c] + 0.5 - distance, 0.0, 1.0)


def generate_image(seed: int, index: int, config: SynthImageConfig | None = None) -> SynthImage:
    """The ``index``-th image of the set made with ``seed`` (deterministic)."""
    cfg = config or SynthImageConfig()
    rng = np.random.default_rng([seed, index])
    rows = max(16, round(cfg.rows * (1 + rng.uniform(-cfg.size_jitter, cfg.size_jitter))))
    cols = max(16, round(cfg.cols * (1 + rng.uniform(-cfg.size_jitter, cfg.size_jitter))))
    scale = min(rows, cols) / REFERENCE_SIDE_PX

    skin = _blend(SKIN_TONES_RGB, rng.uniform(0, 1))[None, None, :]
    blotches = 0.05 * _smooth_noise(rng, (rows, cols), 25 * scale)
    texture = 0.015 * _smooth_noise(rng, (rows, cols), 1.0 * scale)
    rgb = skin * (1 + blotches + texture)[..., None]

    distance, params = _lesion_distance(rng, cfg, rows, cols, scale)
    mask = distance < 1.0
    border = _draw(rng, cfg.border_px) * scale / max(params["radius_px"], 1.0)
    pigment = _draw(rng, cfg.pigment)
    core = np.clip(1.0 - distance, 0.0, 1.0) ** 0.5  # darker towards the center
    regression = _draw(rng, cfg.regression) * np.clip(
        _smooth_noise(rng, (rows, cols), 12 * scale), 0, None
    )
    opacity = pigment / (1 + np.exp((distance - 1.0) / max(border, 1e-3)))
    opacity *= np.clip(0.75 + 0.25 * core - regression, 0.05, 1.0)
    lesion_tone = _blend(LESION_TONES_RGB, rng.uniform(0, 1))[None, None, :]
    rgb = rgb * (1 - opacity[..., None]) + lesion_tone * opacity[..., None]

    n_globules = int(rng.integers(cfg.globules[0], cfg.globules[1] + 1))
    if n_globules and mask.any():
        dots = np.zeros((rows, cols))
        inside = np.argwhere(distance < 0.85)
        if len(inside):
            picks = inside[rng.integers(0, len(inside), n_globules)]
            dots[picks[:, 0], picks[:, 1]] = 1.0
            dots = ndimage.gaussian_filter(dots, 2.0 * scale)
            dots = np.clip(dots / max(float(dots.max()), 1e-12), 0, 1) * 0.6
            rgb = rgb * (1 - dots[..., None]) + np.asarray(LESION_TONES_RGB[-1]) * dots[..., None]

    hair = _hair_alpha(rng, cfg, rows, cols, scale)
    rgb = rgb * (1 - hair[..., None]) + np.asarray(HAIR_RGB) * hair[..., None]

    rr, cc = np.mgrid[0:rows, 0:cols].astype(np.float64)
    yy, xx = (rr - rows / 2) / (rows / 2), (cc - cols / 2) / (cols / 2)
    light_angle = rng.uniform(0, 2 * np.pi)
    light = 1 + _draw(rng, cfg.light_gradient) * (
        xx * np.cos(light_angle) + yy * np.sin(light_angle)
    )
    radial = np.hypot(xx, yy) / np.sqrt(2)
    light *= 1 - _draw(rng, cfg.vignette) * radial**2
    has_aperture = rng.uniform() < cfg.aperture_fraction
    if has_aperture:  # a circle that cuts the corners off, a few pixels of soft edge
        ring_px = rng.uniform(0.95, 1.15) * cols / 2
        edge_px = 3.0 * scale
        beyond = np.hypot(rr - rows / 2, cc - cols / 2) - ring_px
        light *= 1 / (1 + np.exp(np.clip(beyond / edge_px, -50, 50)))
    rgb = rgb * light[..., None]
    rgb += _draw(rng, cfg.noise) * rng.standard_normal(rgb.shape)
    image = np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    params.update(
        pigment=pigment,
        hairs=float(hair.any()),
        hair_fraction=float(hair.mean()),
        aperture=float(has_aperture),
        lesion_fraction=float(mask.mean()),
    )
    return SynthImage(image_key(index), image, mask, params)


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def _paths(out: Path, key: str, layout: str) -> tuple[Path, Path]:
    """Image and mask paths of ``key`` in ``layout``."""
    if layout == "ph2":
        folder = out / key
        return (
            folder / f"{key}{PH2_IMAGE_FOLDER}" / f"{key}.bmp",
            folder / f"{key}{PH2_MASK_FOLDER}" / f"{key}{PH2_MASK_FOLDER}.bmp",
        )
    return out / "images" / f"{key}.png", out / "masks" / f"{key}.png"


def _prepare_output(out: Path, overwrite: bool) -> None:
    replace = check_generated_folder(
        out,
        overwrite=overwrite,
        marker=MARKER_FILE,
        command="lunaseg synth2d",
        what="synthetic image set",
    )
    if not replace:
        return
    for child in out.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def write_image_set(
    out_dir: str | os.PathLike[str],
    n_images: int = 200,
    seed: int = 0,
    config: SynthImageConfig | None = None,
    layout: str = "ph2",
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> PairedFolder:
    """Write ``n_images`` synthetic images with their masks and return the folder, paired.

    Args:
        out_dir: target folder; created if needed.
        n_images: images to write (>= 1); 200 as in PH2.
        seed: seed of the whole set (image ``i`` depends on ``(seed, i)`` only).
        config: ranges (default :class:`SynthImageConfig`).
        layout: ``"ph2"`` (BMP files in PH2's folders) or ``"flat"`` (``images/``,
            ``masks/`` PNG files).
        progress: called as ``progress(done, total, message)`` after each image.
        overwrite: replace an earlier synthetic set in ``out_dir`` (a non-empty folder is
            otherwise refused, and one this function did not write is always refused).
        should_stop: checked between images; True raises :class:`CancelledError`.
    """
    if n_images < 1:
        raise ConfigError(f"n_images must be at least 1; got {n_images}.")
    if layout not in LAYOUTS:
        raise ConfigError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    cfg = config or SynthImageConfig()
    out = Path(out_dir)
    _prepare_output(out, overwrite)
    make_folder(out, "the folder")
    marker: dict[str, object] = {
        "generator": "lunaseg synth2d",
        "seed": seed,
        "n_images": n_images,
        "layout": layout,
        "complete": False,
        "config": asdict(cfg),
    }
    write_text_atomic(out / MARKER_FILE, json.dumps(marker, indent=2), overwrite=True)
    fmt = "BMP" if layout == "ph2" else "PNG"
    started = time.perf_counter()
    for index in range(n_images):
        if should_stop is not None and should_stop():
            raise CancelledError(f"Synthetic image set in {out} stopped after {index} image(s).")
        image = generate_image(seed, index, cfg)
        image_path, mask_path = _paths(out, image.key, layout)
        _write_bytes(image_path, _encoded(image.rgb, fmt))
        _write_bytes(mask_path, _encoded(image.mask.astype(np.uint8) * MASK_ON, fmt))
        message = (
            f"image {index + 1}/{n_images}: {image.key} ({image.rgb.shape[1]}x"
            f"{image.rgb.shape[0]}, lesion {100 * image.params['lesion_fraction']:.0f}%)"
        )
        log.debug(message)
        if progress is not None:
            progress(index + 1, n_images, message)
    marker.update(complete=True, seconds=round(time.perf_counter() - started, 2))
    write_text_atomic(out / MARKER_FILE, json.dumps(marker, indent=2), overwrite=True)
    return find_pairs(out)
