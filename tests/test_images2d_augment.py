"""Augmentation of RGB images: colour jitter, noise in [0, 1] units, per-modality clamping."""

from __future__ import annotations

import pytest
import torch

from src_train.augment import (
    AUGMENTATIONS,
    AugmentConfig,
    BatchAugment,
    JitterParams,
    apply_jitter,
)
from src_train.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

N, H, W = 4, 16, 16


def _params(brightness=1.0, contrast=1.0, saturation=1.0, cast=(1.0, 1.0, 1.0)) -> JitterParams:
    return JitterParams(
        brightness=torch.full((N,), brightness),
        contrast=torch.full((N,), contrast),
        saturation=torch.full((N,), saturation),
        cast=torch.tensor(cast).repeat(N, 1),
    )


def _rgb(seed: int = 0) -> torch.Tensor:
    """Colours in [0.2, 0.6]: no jitter below overflows [0, 1] unless a test wants it."""
    gen = torch.Generator().manual_seed(seed)
    return 0.2 + 0.4 * torch.rand(N, 3, H, W, generator=gen)


def test_neutral_jitter_changes_nothing() -> None:
    image = _rgb()
    assert torch.allclose(apply_jitter(image, _params(), (0.0, 1.0)), image, atol=1e-6)


def test_brightness_and_cast_multiply_channels() -> None:
    image = _rgb()
    out = apply_jitter(image, _params(brightness=1.25, cast=(1.0, 0.5, 1.5)), (0.0, 1.0))
    gains = torch.tensor([1.25, 0.625, 1.875])[None, :, None, None]
    assert torch.allclose(out, (image * gains).clamp(0, 1), atol=1e-6)


def test_zero_saturation_gives_the_luma_grey() -> None:
    image = _rgb()
    out = apply_jitter(image, _params(saturation=0.0), (0.0, 1.0))
    luma = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    for channel in range(3):
        assert torch.allclose(out[:, channel], luma, atol=1e-6)


def test_zero_contrast_gives_the_mean_grey_everywhere() -> None:
    image = _rgb()
    out = apply_jitter(image, _params(contrast=0.0), (0.0, 1.0))
    luma = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    expected = luma.mean(dim=(1, 2))[:, None, None, None].expand_as(out)
    assert torch.allclose(out, expected, atol=1e-6)


def test_jitter_is_clamped_to_the_value_range() -> None:
    out = apply_jitter(torch.full((N, 3, H, W), 0.9), _params(brightness=1.5), (0.0, 1.0))
    assert torch.equal(out, torch.ones_like(out))


def test_jitter_leaves_the_mask_and_varies_per_sample() -> None:
    image = _rgb()
    mask = torch.zeros(N, 1, H, W, dtype=torch.bool)
    mask[:, :, 4:9, 5:11] = True
    augment = BatchAugment(AugmentConfig(jitter=True, modality="rgb"))
    out, out_mask = augment(image, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out_mask, mask)
    means = out.mean(dim=(1, 2, 3)) / image.mean(dim=(1, 2, 3))
    assert means.std() > 0.01, "brightness differs between samples"
    assert ((means > 0.6) & (means < 1.4)).all(), "within the configured strengths"
    again, _ = augment(image, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again), "same seed, same draws"


def test_rgb_noise_is_a_fraction_of_the_unit_range_and_clamped() -> None:
    cfg = AugmentConfig(noise=True, modality="rgb", noise_fraction=0.05)
    assert cfg.noise_sigma == pytest.approx(0.05)
    image = torch.full((N, 3, 64, 64), 0.5)
    mask = torch.zeros(N, 1, 64, 64, dtype=torch.bool)
    out, _ = BatchAugment(cfg)(image, mask, generator=torch.Generator().manual_seed(0))
    assert (out - image).std().item() == pytest.approx(0.05, rel=0.05)
    dark, _ = BatchAugment(cfg)(torch.zeros_like(image), mask)
    assert dark.min() == 0.0 and dark.max() < 0.3, "clamped at 0, not at -1000 HU"


def test_ct_noise_still_uses_hu() -> None:
    cfg = AugmentConfig(noise=True, noise_hu=30.0)
    assert cfg.modality == "ct" and cfg.noise_sigma == 30.0 and cfg.value_range == (-1000, 1000)


def test_all_depends_on_the_modality() -> None:
    assert AugmentConfig.from_names("all").enabled == AUGMENTATIONS
    assert AugmentConfig.from_names("all", modality="rgb").enabled == (*AUGMENTATIONS, "jitter")
    with pytest.raises(ConfigError, match="jitter"):
        AugmentConfig.from_names("flip,jitter")
    with pytest.raises(ConfigError, match="RGB"):
        AugmentConfig(jitter=True)
    with pytest.raises(ConfigError, match="modality"):
        AugmentConfig(modality="mri")


def test_jitter_on_a_non_rgb_batch_raises() -> None:
    augment = BatchAugment(AugmentConfig(jitter=True, modality="rgb"))
    with pytest.raises(ConfigError, match="RGB"):
        augment(torch.rand(2, 7, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.bool))
