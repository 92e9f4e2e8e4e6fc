"""Batch augmentation on the device (GPU or CPU), a different random transform per sample.

:class:`BatchAugment` takes a batch of inputs ``(N, C, H, W)`` in HU and masks ``(N, 1, H, W)``
(bool or float) and returns augmented copies. Geometric transforms (flips, offset, scale,
rotation) are combined into one 2x3 affine matrix per sample and applied with
``affine_grid`` + ``grid_sample``; image and mask use the same grid, and the mask is
thresholded back to bool. Gaussian noise (in HU) touches the image only. Each transform can be
switched on alone; with all off the batch is returned unchanged (as a copy).

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

#: Names accepted by :meth:`AugmentConfig.from_names` (``"none"`` disables everything).
AUGMENTATIONS = ("flip", "offset", "scale", "rotate", "noise")

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
        noise: add Gaussian noise with standard deviation ``noise_hu`` (HU) to the image.
        offset_fraction: largest shift, as a fraction of height/width.
        scale_fraction: largest relative zoom.
        rotate_degrees: largest rotation, degrees.
        noise_hu: noise standard deviation, HU.
        padding_mode: ``grid_sample`` padding for the image outside the field of view.
    """

    flip: bool = False
    offset: bool = False
    scale: bool = False
    rotate: bool = False
    noise: bool = False
    offset_fraction: float = 0.1
    scale_fraction: float = 0.2
    rotate_degrees: float = 180.0
    noise_hu: float = 25.0
    padding_mode: str = "border"

    @property
    def geometric(self) -> bool:
        """True when any transform moves voxels."""
        return self.flip or self.offset or self.scale or self.rotate

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the transforms switched on."""
        return tuple(name for name in AUGMENTATIONS if getattr(self, name))

    @classmethod
    def from_names(cls, names: str | Iterable[str], **strengths: float) -> AugmentConfig:
        """Config from ``"flip,offset,scale,rotate,noise"``, ``"all"`` or ``"none"``/``""``.

        ``strengths`` override the magnitudes (``noise_hu=10``...).
        """
        if isinstance(names, str):
            names = [n for n in names.replace(" ", "").split(",") if n]
        chosen = set(names)
        if chosen == {"all"}:
            chosen = set(AUGMENTATIONS)
        chosen.discard("none")
        unknown = sorted(chosen - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(
                f"Unknown augmentation(s) {', '.join(unknown)}; choose from "
                f"{', '.join(AUGMENTATIONS)}, 'all' or 'none'."
            )
        options: dict[str, Any] = {n: True for n in chosen}
        options.update(strengths)
        return cls(**options)


class BatchAugment(nn.Module):
    """Random per-sample augmentation of a batch (works on any device, keeps dtypes).

    ``forward(image, mask, generator=None) -> (image, mask)``:
    image ``(N, C, H, W)`` float HU, mask ``(N, 1, H, W)`` bool or float; returns the image in
    its dtype and the mask as bool. Inputs are never modified.
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
        if cfg.noise:
            noise = torch.randn(
                image.shape, generator=generator, device=image.device, dtype=torch.float32
            )
            out_image = (out_image.float() + cfg.noise_hu * noise).to(image.dtype)
            out_image = out_image.clamp(HU_CLAMP[0], HU_CLAMP[1])
        if out_image is image:
            out_image = image.clone()
        return out_image, out_mask.clone() if out_mask is mask else out_mask
