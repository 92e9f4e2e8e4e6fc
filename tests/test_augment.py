"""Each augmentation changes what it should and nothing else; image and mask move together."""

from __future__ import annotations

import pytest
import torch

from src_train.augment import AUGMENTATIONS, AugmentConfig, BatchAugment
from src_train.errors import ConfigError

N, C, H, W = 24, 7, 48, 48
BACKGROUND_HU = -800.0
BLOB_HU = 500.0


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _batch(float_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Identical samples: a 6x10 blob off the center (rows 14..20, cols 26..36)."""
    image = torch.full((N, C, H, W), BACKGROUND_HU)
    mask = torch.zeros((N, 1, H, W), dtype=torch.bool)
    image[:, :, 14:20, 26:36] = BLOB_HU
    mask[:, :, 14:20, 26:36] = True
    return image, (mask.float() if float_mask else mask)


def _run(cfg: AugmentConfig, seed: int = 0, **kw: bool) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = _batch(**kw)
    gen = torch.Generator().manual_seed(seed)
    return BatchAugment(cfg)(image, mask, generator=gen)


def _centroid(mask: torch.Tensor) -> torch.Tensor:
    """Row/col centroid ``(N, 2)`` of a bool batch ``(N, 1, H, W)``, in pixels."""
    m = mask[:, 0].float()
    rows = torch.arange(m.shape[1], dtype=torch.float32)[None, :, None]
    cols = torch.arange(m.shape[2], dtype=torch.float32)[None, None, :]
    area = m.sum(dim=(1, 2))
    return torch.stack([(m * rows).sum(dim=(1, 2)) / area, (m * cols).sum(dim=(1, 2)) / area], 1)


def _image_blob(image: torch.Tensor) -> torch.Tensor:
    """Where the first channel is closer to the blob's HU than to the background's."""
    return image[:, :1] > (BLOB_HU + BACKGROUND_HU) / 2


CENTER = torch.tensor([(H - 1) / 2, (W - 1) / 2])


def test_no_augmentation_returns_an_equal_copy() -> None:
    image, mask = _batch()
    out_img, out_mask = BatchAugment(AugmentConfig())(image, mask)
    assert torch.equal(out_img, image) and torch.equal(out_mask, mask)
    assert out_img.data_ptr() != image.data_ptr()


def test_flip_only_flips_image_and_mask_the_same_way() -> None:
    image, mask = _batch()
    out_img, out_mask = _run(AugmentConfig(flip=True))
    seen = set()
    for i in range(N):
        matches = [
            dims
            for dims in ((), (2,), (3,), (2, 3))
            if torch.allclose(out_img[i : i + 1], image[i : i + 1].flip(dims), atol=1e-3)
        ]
        assert len(matches) == 1, "each sample is exactly one of the four flips"
        assert torch.equal(out_mask[i : i + 1], mask[i : i + 1].flip(matches[0]))
        seen.add(matches[0])
    assert len(seen) >= 3, "flips are drawn per sample"


def test_offset_only_shifts_without_resizing() -> None:
    _, mask = _batch()
    out_img, out_mask = _run(AugmentConfig(offset=True))
    shift = _centroid(out_mask) - _centroid(mask)
    max_shift = AugmentConfig().offset_fraction * H
    assert (shift.abs() <= max_shift + 1).all()
    assert (shift.norm(dim=1) > 0.5).float().mean() > 0.8, "the image actually moves"
    assert shift[:, 0].std() > 0.5 and shift[:, 1].std() > 0.5, "per-sample, both axes"
    area = out_mask.sum(dim=(1, 2, 3)).float()
    assert ((area - 60).abs() <= 16).all(), "a shift keeps the size (up to resampling)"
    assert (_image_blob(out_img) ^ out_mask).sum(dim=(1, 2, 3)).max() <= 12


def test_scale_only_resizes_about_the_center() -> None:
    _, mask = _batch()
    out_img, out_mask = _run(AugmentConfig(scale=True))
    area = out_mask.sum(dim=(1, 2, 3)).float()
    s = AugmentConfig().scale_fraction
    assert (area >= 60 / (1 + s) ** 2 - 14).all() and (area <= 60 / (1 - s) ** 2 + 14).all()
    assert area.std() > 3, "zoom differs per sample"
    # the center is fixed: the blob's offset from it scales, its direction stays
    before = _centroid(mask) - CENTER
    after = _centroid(out_mask) - CENTER
    assert (torch.sign(after) == torch.sign(before)).all()
    assert (_image_blob(out_img) ^ out_mask).sum(dim=(1, 2, 3)).max() <= 14


def test_rotate_only_turns_about_the_center_keeping_size() -> None:
    _, mask = _batch()
    out_img, out_mask = _run(AugmentConfig(rotate=True))
    area = out_mask.sum(dim=(1, 2, 3)).float()
    assert ((area - 60).abs() <= 14).all(), "rotation keeps the area"
    before = _centroid(mask) - CENTER
    after = _centroid(out_mask) - CENTER
    assert torch.allclose(after.norm(dim=1), before.norm(dim=1).expand(N), atol=1.0)
    angles = torch.rad2deg(
        torch.atan2(after[:, 0], after[:, 1]) - torch.atan2(before[:, 0], before[:, 1])
    )
    assert angles.std() > 20, "angles differ per sample"
    assert (_image_blob(out_img) ^ out_mask).sum(dim=(1, 2, 3)).max() <= 14


def test_noise_only_changes_the_image_by_the_given_sigma() -> None:
    image, mask = _batch()
    cfg = AugmentConfig(noise=True, noise_hu=20.0)
    out_img, out_mask = _run(cfg)
    assert torch.equal(out_mask, mask), "noise never touches the mask"
    diff = out_img - image
    assert diff.std().item() == pytest.approx(20.0, rel=0.05)
    assert diff.mean().abs() < 1.0
    assert not torch.equal(out_img[0], out_img[1]), "independent noise per sample"


def test_mask_stays_binary_with_float_input_and_everything_on() -> None:
    out_img, out_mask = _run(AugmentConfig.from_names("all"), float_mask=True)
    assert out_mask.dtype == torch.bool
    assert out_img.dtype == torch.float32 and out_img.shape == (N, C, H, W)
    assert out_img.min() >= -1000 and out_img.max() <= 1000


def test_inputs_are_not_modified() -> None:
    image, mask = _batch()
    image0, mask0 = image.clone(), mask.clone()
    BatchAugment(AugmentConfig.from_names("all"))(image, mask)
    assert torch.equal(image, image0) and torch.equal(mask, mask0)


def test_same_generator_seed_gives_same_result() -> None:
    cfg = AugmentConfig.from_names("all")
    a = _run(cfg, seed=3)
    b = _run(cfg, seed=3)
    c = _run(cfg, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_from_names() -> None:
    assert AugmentConfig.from_names("none").enabled == ()
    assert AugmentConfig.from_names("").enabled == ()
    assert AugmentConfig.from_names("all").enabled == AUGMENTATIONS
    cfg = AugmentConfig.from_names("flip, noise", noise_hu=5.0)
    assert cfg.enabled == ("flip", "noise") and cfg.noise_hu == 5.0
    with pytest.raises(ConfigError, match="wobble"):
        AugmentConfig.from_names("flip,wobble")


def test_bad_shapes_raise() -> None:
    with pytest.raises(ConfigError):
        BatchAugment(AugmentConfig(flip=True))(torch.zeros(2, 7, 8), torch.zeros(2, 1, 8, 8))
