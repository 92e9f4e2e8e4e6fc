"""Scanner-robustness augmentation of CT batches (src_train/augment.py: intensity, kernel,
resolution), on known inputs."""

from __future__ import annotations

import pytest
import torch

from src_train.augment import (
    AUGMENTATIONS,
    SCANNER_AUGMENTATIONS,
    AugmentConfig,
    BatchAugment,
    ScannerParams,
    apply_scanner,
)
from src_train.errors import ConfigError

RANGE = (-1000.0, 1000.0)


def _params(n: int, **values: list[float]) -> ScannerParams:
    neutral = {"scale": [1.0] * n, "offset_hu": [0.0] * n, "kernel": [0.0] * n, "block": [1.0] * n}
    neutral.update(values)
    return ScannerParams(**{k: torch.tensor(v) for k, v in neutral.items()})


def test_off_by_default_and_only_when_named() -> None:
    assert AugmentConfig().enabled == ()
    assert not set(SCANNER_AUGMENTATIONS) & set(AugmentConfig.from_names("all").enabled)
    assert not set(SCANNER_AUGMENTATIONS) & set(AUGMENTATIONS)  # the trainer's default list
    chosen = AugmentConfig.from_names("all,kernel,intensity")
    assert chosen.kernel and chosen.intensity and chosen.flip and not chosen.resolution
    with pytest.raises(ConfigError, match="kernel"):
        AugmentConfig.from_names("kernel", modality="rgb")


def test_neutral_parameters_change_nothing() -> None:
    image = torch.randn(3, 2, 16, 16) * 200
    out = apply_scanner(image, _params(3), 1.2, 0.8, RANGE)
    assert torch.allclose(out, image.clamp(*RANGE))


def test_intensity_scales_and_offsets_hu() -> None:
    image = torch.full((2, 1, 8, 8), 100.0)
    out = apply_scanner(image, _params(2, scale=[1.1, 0.9], offset_hu=[20.0, -30.0]), 1, 1, RANGE)
    assert torch.allclose(out[0], torch.full((1, 8, 8), 130.0))
    assert torch.allclose(out[1], torch.full((1, 8, 8), 60.0))


def test_kernel_blurs_a_point_and_sharpens_an_edge() -> None:
    point = torch.zeros(1, 1, 15, 15)
    point[0, 0, 7, 7] = 900.0
    blurred = apply_scanner(point, _params(1, kernel=[-1.0]), 1.2, 0.8, RANGE)
    assert abs(float(blurred.sum()) - 900.0) < 1.0  # blurring keeps the total
    assert float(blurred.max()) < 200 and float(blurred[0, 0, 7, 8]) > 50
    step = torch.zeros(1, 1, 8, 16)
    step[..., 8:] = 500.0
    sharp = apply_scanner(step, _params(1, kernel=[1.0]), 1.2, 0.8, RANGE)
    assert float(sharp.max()) > 550 and float(sharp.min()) < -50  # overshoot both sides
    assert torch.allclose(sharp[..., 0], step[..., 0]) and torch.allclose(
        sharp[..., -1], step[..., -1]
    )


def test_resolution_loses_fine_detail_keeps_flat_regions() -> None:
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 400.0 - 200.0
    image = torch.stack([checker, torch.full((16, 16), -600.0)])[:, None]  # (2, 1, 16, 16)
    out = apply_scanner(image, _params(2, block=[2.0, 2.0]), 1.2, 0.8, RANGE)
    assert float(out[0].abs().max()) < 1.0  # one-pixel pattern averaged away
    assert torch.allclose(out[1], image[1])


def test_batch_augment_draws_per_sample_and_keeps_the_mask() -> None:
    config = AugmentConfig(intensity=True, kernel=True, resolution=True)
    augment = BatchAugment(config)
    image = torch.full((6, 7, 32, 32), -800.0)
    image[:, :, 12:20, 12:20] = 40.0
    mask = torch.zeros(6, 1, 32, 32, dtype=torch.bool)
    mask[:, :, 12:20, 12:20] = True
    gen = torch.Generator().manual_seed(0)
    params = augment.random_scanner(6, torch.device("cpu"), gen)
    assert params.scale.unique().numel() == 6 and params.kernel.abs().max() <= 1
    assert float(params.block.min()) >= 1 and float(params.block.max()) <= 2
    out, out_mask = augment(image, mask, torch.Generator().manual_seed(1))
    assert torch.equal(out_mask, mask)  # no geometric transform: the mask is untouched
    assert not torch.equal(out[0], out[1]) and out.dtype == image.dtype
    assert float(out.min()) >= RANGE[0] and float(out.max()) <= RANGE[1]


def test_scanner_fraction_leaves_the_other_samples_as_scanned() -> None:
    n = 400
    config = AugmentConfig(intensity=True, kernel=True, resolution=True, scanner_fraction=0.25)
    params = BatchAugment(config).random_scanner(
        n, torch.device("cpu"), torch.Generator().manual_seed(3)
    )
    touched = (
        (params.scale != 1) | (params.offset_hu != 0) | (params.kernel != 0) | (params.block != 1)
    )
    # each sample is either neutral in every transform or drawn in every one
    assert torch.equal(touched, params.scale != 1) and torch.equal(touched, params.block != 1)
    assert 0.18 < touched.float().mean() < 0.32  # 100 expected of 400 (binomial sd 8.7)
    image = torch.randn(n, 3, 16, 16) * 300
    out = apply_scanner(image, params, 1.2, 0.8, RANGE)
    assert torch.equal(out[~touched], image[~touched].clamp(*RANGE))
    assert not torch.isclose(out[touched], image[touched]).all()
    everyone = BatchAugment(AugmentConfig(intensity=True)).random_scanner(
        n, torch.device("cpu"), torch.Generator().manual_seed(3)
    )
    assert bool((everyone.scale != 1).all())  # the default (1) touches every sample
    with pytest.raises(ConfigError, match="scanner_fraction"):
        AugmentConfig(kernel=True, scanner_fraction=1.5)
    with pytest.raises(ConfigError, match="needs a scanner augmentation"):
        AugmentConfig(flip=True, scanner_fraction=0.5)
