"""Batch augmentation on the device (GPU or CPU), a different random transform per sample.

:class:`BatchAugment` takes a batch of inputs ``(N, C, H, W)`` and masks ``(N, 1, H, W)``
(bool or float) and returns augmented copies. Geometric transforms (flips, offset, scale,
rotation) are combined into one 2x3 affine matrix per sample and applied with
``affine_grid`` + ``grid_sample``; image and mask use the same grid, and the mask is
thresholded back to bool. Colour jitter (RGB only) and Gaussian noise touch the image only and
are clamped to the modality's value range: HU clamped as the model sees them for CT
(``"ct"``), channels scaled to ``[0, 1]`` for RGB images (``"rgb"``). Each transform can be
switched on alone; with all off the batch is returned unchanged (as a copy). Random parameters
are drawn (:meth:`BatchAugment.random_matrices`, :meth:`BatchAugment.random_jitter`) apart
from applying them (:func:`apply_jitter`), so either can be tested or replayed alone.

For CT, scanner transforms (:data:`SCANNER_AUGMENTATIONS`: HU calibration, kernel, pixel
size; drawn by :meth:`BatchAugment.random_scanner`, applied by :func:`apply_scanner`) run
after the geometric ones and before the noise, only when named.

Coordinates follow ``affine_grid``: normalised ``(x, y)`` = ``(col, row)`` in ``[-1, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src_train.context import HU_CLAMP
from src_train.errors import ConfigError

#: Transforms for every modality, accepted by :meth:`AugmentConfig.from_names` (``"none"``
#: disables everything, ``"all"`` enables those that suit the modality).
AUGMENTATIONS = ("flip", "offset", "scale", "rotate", "noise")

#: Transforms for RGB images only.
COLOR_AUGMENTATIONS = ("jitter",)

#: Scanner-robustness transforms for CT only, off unless named (not part of ``"all"``):
#: ``intensity`` (HU calibration offset and scale), ``kernel`` (a smoother or sharper
#: reconstruction kernel) and ``resolution`` (larger pixels: down- then up-sampled).
SCANNER_AUGMENTATIONS = ("intensity", "kernel", "resolution")

#: Value range of each modality's model input; noise and jitter results are clamped to it.
#: ``"ct"``: HU as the model sees them; ``"rgb"``: 8-bit channels divided by 255.
MODALITY_RANGES: dict[str, tuple[float, float]] = {
    "ct": (float(HU_CLAMP[0]), float(HU_CLAMP[1])),
    "rgb": (0.0, 1.0),
}

#: ITU-R BT.601 luma weights of R, G, B (the grey that saturation jitter blends towards).
LUMA_WEIGHTS_RGB = (0.299, 0.587, 0.114)

#: A mask voxel resampled by bilinear interpolation is label when above this value.
MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class AugmentConfig:
    """Which transforms run, and how strong each is.

    Attributes:
        flip: random left-right and up-down flips (each with probability 1/2).
        offset: shift by up to ``offset_fraction`` of the image size along rows and cols.
        scale: zoom by a factor drawn from ``[1 - scale_fraction, 1 + scale_fraction]`` per axis.
        rotate: rotate by an angle drawn from ``[-rotate_degrees, rotate_degrees]``.
        noise: add Gaussian noise to the image: standard deviation ``noise_hu`` (HU) for CT,
            ``noise_fraction`` of the value range for RGB (see :attr:`noise_sigma`).
        jitter: colour jitter of RGB images (brightness, contrast, saturation and a colour
            cast per channel, as lighting and cameras vary between dermoscopy images).
        modality: ``"ct"`` or ``"rgb"``; sets the value range (:data:`MODALITY_RANGES`) that
            noise and jitter clamp to, and allows ``jitter`` (RGB only, 3 channels).
        offset_fraction: largest shift, as a fraction of height/width.
        scale_fraction: largest relative zoom.
        rotate_degrees: largest rotation, degrees.
        noise_hu: noise standard deviation for CT, HU.
        noise_fraction: noise standard deviation for RGB, as a fraction of the value range.
        jitter_brightness: brightness factor drawn from ``[1 - b, 1 + b]``.
        jitter_contrast: contrast factor (about the image's mean grey) from ``[1 - c, 1 + c]``.
        jitter_saturation: saturation factor (blend with the luma grey) from ``[1 - s, 1 + s]``.
        jitter_cast: per-channel gain drawn from ``[1 - g, 1 + g]`` (a tinted light).
        padding_mode: ``grid_sample`` padding for the image outside the field of view.
        intensity: CT only: ``hu * scale + offset`` with scale from ``[1 - s, 1 + s]``
            (``intensity_scale``) and offset from ``[-o, o]`` HU (``intensity_offset_hu``).
        kernel: CT only: each sample either blurred in-plane (Gaussian, sigma up to
            ``kernel_blur_px``) or sharpened (``x + g (x - blur(x))``, g up to
            ``kernel_sharpen_gain``), half the samples each.
        resolution: CT only: each sample averaged over blocks of ``f`` x ``f`` pixels and
            interpolated back, ``f`` from ``[1, resolution_factor]``.
        scanner_fraction: share of the samples the scanner transforms (intensity, kernel,
            resolution) touch; the others keep their scan's own calibration, kernel and pixel
            size. 1: every sample.
    """

    flip: bool = False
    offset: bool = False
    scale: bool = False
    rotate: bool = False
    noise: bool = False
    jitter: bool = False
    modality: str = "ct"
    offset_fraction: float = 0.1
    scale_fraction: float = 0.2
    rotate_degrees: float = 180.0
    noise_hu: float = 25.0
    noise_fraction: float = 0.02
    jitter_brightness: float = 0.2
    jitter_contrast: float = 0.2
    jitter_saturation: float = 0.2
    jitter_cast: float = 0.05
    padding_mode: str = "border"
    intensity: bool = False
    kernel: bool = False
    resolution: bool = False
    intensity_scale: float = 0.05
    intensity_offset_hu: float = 40.0
    kernel_blur_px: float = 1.2
    kernel_sharpen_gain: float = 0.8
    resolution_factor: float = 2.0
    scanner_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.modality not in MODALITY_RANGES:
            raise ConfigError(
                f"Unknown modality {self.modality!r}; choose one of {', '.join(MODALITY_RANGES)}."
            )
        if self.jitter and self.modality != "rgb":
            raise ConfigError(
                f"Colour jitter needs RGB images; this augmentation is for {self.modality!r}. "
                "Drop 'jitter' from the augmentations."
            )
        scanner = [n for n in SCANNER_AUGMENTATIONS if getattr(self, n)]
        if scanner and self.modality != "ct":
            raise ConfigError(
                f"{', '.join(scanner)} augmentation needs CT inputs; this one is for "
                f"{self.modality!r}. Drop it from the augmentations."
            )
        if not (0 <= self.intensity_scale < 1 and self.resolution_factor >= 1):
            raise ConfigError(
                f"intensity_scale must be in [0, 1) and resolution_factor >= 1; got "
                f"{self.intensity_scale} and {self.resolution_factor}."
            )
        if not 0 <= self.scanner_fraction <= 1:
            raise ConfigError(f"scanner_fraction must be in [0, 1]; got {self.scanner_fraction}.")
        if self.scanner_fraction < 1 and not scanner:
            raise ConfigError(
                f"scanner_fraction {self.scanner_fraction} needs a scanner augmentation to "
                f"share out: add {', '.join(SCANNER_AUGMENTATIONS)} (one or more) to the "
                "augmentations (--augment), or leave scanner_fraction at 1."
            )
        factors = ("jitter_brightness", "jitter_contrast", "jitter_saturation", "jitter_cast")
        for name in factors:
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1); got {getattr(self, name)}.")

    @property
    def geometric(self) -> bool:
        """True when any transform moves voxels."""
        return self.flip or self.offset or self.scale or self.rotate

    @property
    def value_range(self) -> tuple[float, float]:
        """``(low, high)`` the image is clamped to after noise and jitter (modality units)."""
        return MODALITY_RANGES[self.modality]

    @property
    def noise_sigma(self) -> float:
        """Noise standard deviation in the modality's units (HU for CT, [0, 1] for RGB)."""
        if self.modality == "ct":
            return self.noise_hu
        low, high = self.value_range
        return self.noise_fraction * (high - low)

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the transforms switched on."""
        every = AUGMENTATIONS + COLOR_AUGMENTATIONS + SCANNER_AUGMENTATIONS
        return tuple(name for name in every if getattr(self, name))

    @classmethod
    def from_names(
        cls, names: str | Iterable[str], modality: str = "ct", **strengths: float
    ) -> AugmentConfig:
        """Config from ``"flip,offset,scale,rotate,noise[,jitter]"``, ``"all"`` or
        ``"none"``/``""``. ``"all"`` is every transform that suits ``modality`` (jitter for
        RGB only); the scanner transforms (:data:`SCANNER_AUGMENTATIONS`, CT only) run only
        when named, and can follow ``"all"`` (``"all,kernel"``).

        ``strengths`` override the magnitudes (``noise_hu=10``...).
        """
        if isinstance(names, str):
            names = [n for n in names.replace(" ", "").split(",") if n]
        basic = AUGMENTATIONS + (COLOR_AUGMENTATIONS if modality == "rgb" else ())
        known = basic + (SCANNER_AUGMENTATIONS if modality == "ct" else ())
        chosen = set(names)
        if "all" in chosen:
            chosen = (chosen - {"all"}) | set(basic)
        chosen.discard("none")
        unknown = sorted(chosen - set(known))
        if unknown:
            raise ConfigError(
                f"Unknown augmentation(s) {', '.join(unknown)} for {modality!r} inputs; choose "
                f"from {', '.join(known)}, 'all' or 'none'."
            )
        options: dict[str, Any] = {n: True for n in chosen}
        options.update(strengths)
        return cls(modality=modality, **options)


@dataclass(frozen=True)
class JitterParams:
    """Colour jitter factors per sample, as :meth:`BatchAugment.random_jitter` draws them.

    Attributes:
        brightness: ``(N,)`` multiplies every channel.
        contrast: ``(N,)`` scales the distance from the image's mean grey.
        saturation: ``(N,)`` scales the distance of each pixel from its luma grey.
        cast: ``(N, 3)`` per-channel gain (R, G, B).
    """

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    cast: torch.Tensor


def apply_jitter(
    image: torch.Tensor, params: JitterParams, value_range: tuple[float, float]
) -> torch.Tensor:
    """Colour-jittered copy of an RGB batch ``(N, 3, H, W)`` in ``value_range`` (float32).

    Applied in the order cast, brightness, contrast, saturation; the result is clamped to
    ``value_range``. All factors 1 return the image unchanged.
    """
    if image.ndim != 4 or image.shape[1] != len(LUMA_WEIGHTS_RGB):
        raise ConfigError(
            f"Colour jitter needs RGB batches (N, 3, H, W); got {tuple(image.shape)}. "
            "Drop 'jitter' from the augmentations for other inputs."
        )
    x = image.float() * params.cast[:, :, None, None]
    x = x * params.brightness[:, None, None, None]
    luma = torch.tensor(LUMA_WEIGHTS_RGB, device=x.device, dtype=x.dtype)[None, :, None, None]
    grey = (x * luma).sum(dim=1, keepdim=True)
    mean_grey = grey.mean(dim=(2, 3), keepdim=True)
    contrast = params.contrast[:, None, None, None]
    x = (x - mean_grey) * contrast + mean_grey
    grey = grey * contrast + mean_grey * (1 - contrast)  # the luma of x after the contrast step
    x = grey + (x - grey) * params.saturation[:, None, None, None]
    return x.clamp(value_range[0], value_range[1])


@dataclass(frozen=True)
class ScannerParams:
    """Scanner transforms per sample, as :meth:`BatchAugment.random_scanner` draws them.

    Attributes:
        scale: ``(N,)`` HU multiplier (1: none).
        offset_hu: ``(N,)`` HU added after scaling (0: none).
        kernel: ``(N,)`` in ``[-1, 1]``: negative blurs with sigma ``-kernel * blur_px``,
            positive sharpens with gain ``kernel * sharpen_gain`` (0: none).
        block: ``(N,)`` block size ``f >= 1`` in pixels of the resolution loss (1: none).
    """

    scale: torch.Tensor
    offset_hu: torch.Tensor
    kernel: torch.Tensor
    block: torch.Tensor


def _gaussian_blur(image: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """In-plane Gaussian blur of ``(N, C, H, W)`` with one sigma (pixels) per sample."""
    n, c, h, w = image.shape
    radius = max(int(torch.ceil(3 * sigma_px.max()).item()), 1)
    taps = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
    safe = sigma_px.clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (taps[None, :] / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (N, K); sigma ~0 gives a delta
    kernel = kernel.repeat_interleave(c, dim=0)  # one per (sample, channel)
    x = image.float().reshape(1, n * c, h, w)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(x, kernel[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w)


def apply_scanner(
    image: torch.Tensor,
    params: ScannerParams,
    blur_px: float,
    sharpen_gain: float,
    value_range: tuple[float, float],
) -> torch.Tensor:
    """A CT batch ``(N, C, H, W)`` (HU) as another scanner might have made it (float32):
    resolution loss, then the kernel (blur or sharpen), then the HU calibration; clamped to
    ``value_range``. Parameters at their neutral values return the image unchanged."""
    x = image.float()
    for i in torch.nonzero(params.block > 1).flatten().tolist():
        size = x.shape[-2:]
        f = float(params.block[i])
        small = F.interpolate(x[i : i + 1], scale_factor=1 / f, mode="area")
        x[i : i + 1] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    k = params.kernel
    if bool((k != 0).any()):
        # blur: x - (x - blurred) = blurred; sharpen: x + gain (x - blurred at 1 px)
        sigma = torch.where(k < 0, -k * blur_px, torch.ones_like(k))
        gain = torch.where(k < 0, -torch.ones_like(k), k * sharpen_gain)
        gain = torch.where(k == 0, torch.zeros_like(k), gain)
        x = x + gain[:, None, None, None] * (x - _gaussian_blur(x, sigma))
    x = x * params.scale[:, None, None, None] + params.offset_hu[:, None, None, None]
    return x.clamp(value_range[0], value_range[1])


class BatchAugment(nn.Module):
    """Random per-sample augmentation of a batch (works on any device, keeps dtypes).

    ``forward(image, mask, generator=None) -> (image, mask)``:
    image ``(N, C, H, W)`` float in the modality's units (HU, or RGB in [0, 1]), mask
    ``(N, 1, H, W)`` bool or float; returns the image in its dtype and the mask as bool.
    Inputs are never modified.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config or AugmentConfig()

    def _uniform(
        self, n: int, low: float, high: float, device: torch.device, gen: torch.Generator | None
    ) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=gen, device=device)

    def random_matrices(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-sample affine matrices ``(N, 2, 3)`` in ``affine_grid``'s convention.

        The matrix maps output coordinates to input coordinates (where to sample from).
        """
        cfg = self.config
        linear = torch.eye(2, device=device).repeat(n, 1, 1)
        shift = torch.zeros(n, 2, device=device)
        if cfg.flip:
            signs = torch.randint(0, 2, (n, 2), generator=generator, device=device) * 2 - 1
            linear = linear * signs.to(linear.dtype)[:, None, :]
        if cfg.scale:
            factors = self._uniform(
                2 * n, 1 - cfg.scale_fraction, 1 + cfg.scale_fraction, device, generator
            ).view(n, 2)
            linear = linear * factors[:, None, :]
        if cfg.rotate:
            angle = torch.deg2rad(
                self._uniform(n, -cfg.rotate_degrees, cfg.rotate_degrees, device, generator)
            )
            cos, sin = torch.cos(angle), torch.sin(angle)
            rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)
            linear = rotation @ linear
        if cfg.offset:
            # normalised coordinates span 2 units over the image, so a fraction f is 2 f units
            shift = self._uniform(
                2 * n, -2 * cfg.offset_fraction, 2 * cfg.offset_fraction, device, generator
            ).view(n, 2)
        return torch.cat([linear, shift[:, :, None]], dim=2)

    def random_jitter(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> JitterParams:
        """Per-sample colour jitter factors, each uniform in ``[1 - strength, 1 + strength]``."""
        cfg = self.config

        def factors(strength: float, count: int) -> torch.Tensor:
            return self._uniform(count, 1 - strength, 1 + strength, device, generator)

        return JitterParams(
            brightness=factors(cfg.jitter_brightness, n),
            contrast=factors(cfg.jitter_contrast, n),
            saturation=factors(cfg.jitter_saturation, n),
            cast=factors(cfg.jitter_cast, 3 * n).view(n, 3),
        )

    def random_scanner(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> ScannerParams:
        """Per-sample scanner transforms; those switched off, and the samples outside
        ``scanner_fraction``, get the neutral value."""
        cfg = self.config
        ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
        scale, offset, kernel, block = ones, zeros, zeros, ones
        if cfg.intensity:
            s, o = cfg.intensity_scale, cfg.intensity_offset_hu
            scale = self._uniform(n, 1 - s, 1 + s, device, generator)
            offset = self._uniform(n, -o, o, device, generator)
        if cfg.kernel:
            kernel = self._uniform(n, -1.0, 1.0, device, generator)
        if cfg.resolution:
            block = self._uniform(n, 1.0, cfg.resolution_factor, device, generator)
        if cfg.scanner_fraction < 1:
            kept = self._uniform(n, 0.0, 1.0, device, generator) < cfg.scanner_fraction
            scale, offset = torch.where(kept, scale, ones), torch.where(kept, offset, zeros)
            kernel, block = torch.where(kept, kernel, zeros), torch.where(kept, block, ones)
        return ScannerParams(scale=scale, offset_hu=offset, kernel=kernel, block=block)

    def forward(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch; see the class docstring for shapes."""
        if image.ndim != 4 or mask.ndim != 4 or image.shape[0] != mask.shape[0]:
            raise ConfigError(
                f"BatchAugment needs image (N, C, H, W) and mask (N, 1, H, W); got "
                f"{tuple(image.shape)} and {tuple(mask.shape)}."
            )
        cfg = self.config
        out_mask = mask if mask.dtype == torch.bool else mask > MASK_THRESHOLD
        out_image = image
        if cfg.geometric:
            n = image.shape[0]
            theta = self.random_matrices(n, image.device, generator)
            grid = F.affine_grid(theta, list(image.shape), align_corners=False)
            out_image = F.grid_sample(
                image.float(),
                grid,
                mode="bilinear",
                padding_mode=cfg.padding_mode,
                align_corners=False,
            ).to(image.dtype)
            warped = F.grid_sample(
                out_mask.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            out_mask = warped > MASK_THRESHOLD
        low, high = cfg.value_range
        if cfg.jitter:
            params = self.random_jitter(image.shape[0], image.device, generator)
            out_image = apply_jitter(out_image, params, cfg.value_range).to(image.dtype)
        if cfg.intensity or cfg.kernel or cfg.resolution:
            scanner = self.random_scanner(image.shape[0], image.device, generator)
            out_image = apply_scanner(
                out_image, scanner, cfg.kernel_blur_px, cfg.kernel_sharpen_gain, cfg.value_range
            ).to(image.dtype)
        if cfg.noise:
            noise = torch.randn(
                image.shape, generator=generator, device=image.device, dtype=torch.float32
            )
            out_image = (out_image.float() + cfg.noise_sigma * noise).to(image.dtype)
            out_image = out_image.clamp(low, high)
        if out_image is image:
            out_image = image.clone()
        return out_image, out_mask.clone() if out_mask is mask else out_mask
