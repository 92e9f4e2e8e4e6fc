"""Losses behave as their definitions say; metrics count voxels correctly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from src_train.errors import ConfigError
from src_train.losses import (
    LOSSES,
    SegmentationMetrics,
    build_loss,
    dice_fn_loss,
    dice_loss,
    false_negative_dice_loss,
    focal_loss,
    small_nodule_weights,
)

BIG = 30.0  # a logit large enough that sigmoid is 0 or 1 in float32


def _labels() -> torch.Tensor:
    lab = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    lab[:, :, 2:5, 2:6] = True
    return lab


def _logits_for(pred: torch.Tensor) -> torch.Tensor:
    return torch.where(pred, torch.tensor(BIG), torch.tensor(-BIG))


def test_dice_loss_is_zero_for_perfect_and_near_one_for_disjoint() -> None:
    lab = _labels()
    assert dice_loss(_logits_for(lab), lab).item() == pytest.approx(0.0, abs=1e-6)
    disjoint = torch.zeros_like(lab)
    disjoint[:, :, 6:, 6:] = True
    assert dice_loss(_logits_for(disjoint), lab).item() > 0.9


def test_false_negative_dice_ignores_false_positives() -> None:
    lab = _labels()
    everything = torch.ones_like(lab)
    assert false_negative_dice_loss(_logits_for(everything), lab).item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert dice_loss(_logits_for(everything), lab).item() > 0.3
    nothing = torch.zeros_like(lab)
    assert false_negative_dice_loss(_logits_for(nothing), lab).item() > 0.9


def test_soft_dice_values_by_hand() -> None:
    """Logit 0 = probability 0.5 everywhere; 12 of 64 voxels are label (smooth 1)."""
    lab = _labels()
    logits = torch.zeros(lab.shape)
    dice = (2 * 0.5 * 12 + 1) / (0.5 * 64 + 12 + 1)
    fn_dice = (2 * 0.5 * 12 + 1) / (0.5 * 12 + 12 + 1)  # Dice(pred * label, label)
    assert dice_loss(logits, lab).item() == pytest.approx(1 - dice)
    assert false_negative_dice_loss(logits, lab).item() == pytest.approx(1 - fn_dice)
    assert dice_fn_loss(logits, lab).item() == pytest.approx((1 - dice) + 8 * (1 - fn_dice))


def test_dice_fn_weights_misses_eight_times() -> None:
    lab = _labels()
    logits = torch.randn(lab.shape)
    expected = dice_loss(logits, lab) + 8 * false_negative_dice_loss(logits, lab)
    assert torch.allclose(build_loss("dice-fn")(logits, lab), expected)
    assert torch.allclose(
        dice_fn_loss(logits, lab, fn_weight=2.0),
        dice_loss(logits, lab) + 2 * false_negative_dice_loss(logits, lab),
    )


def test_bool_and_float_labels_agree() -> None:
    lab = _labels()
    logits = torch.randn(lab.shape)
    for name in LOSSES:
        loss = build_loss(name)
        assert torch.allclose(loss(logits, lab), loss(logits, lab.float()))


def test_bce_matches_definition_and_is_stable_for_huge_logits() -> None:
    lab = _labels()
    logits = torch.randn(lab.shape)
    p = torch.sigmoid(logits)
    manual = -(lab * torch.log(p) + (~lab) * torch.log(1 - p)).mean()
    assert build_loss("bce")(logits, lab).item() == pytest.approx(manual.item(), rel=1e-5)
    huge = _logits_for(~lab) * 100  # confidently wrong everywhere
    assert math.isfinite(build_loss("bce")(huge, lab).item())


def test_focal_gamma_zero_is_bce_and_gamma_downweights_easy_voxels() -> None:
    lab = _labels()
    logits = torch.randn(lab.shape)
    bce = F.binary_cross_entropy_with_logits(logits, lab.float())
    assert focal_loss(logits, lab, gamma=0.0).item() == pytest.approx(bce.item(), rel=1e-6)
    assert focal_loss(logits, lab, gamma=2.0) < focal_loss(logits, lab, gamma=0.5)
    assert build_loss("focal", focal_gamma=0.0)(logits, lab).item() == pytest.approx(bce.item())


def test_losses_are_float32_under_bf16_logits_and_have_gradients() -> None:
    lab = _labels()
    for name in LOSSES:
        logits = torch.randn(lab.shape, requires_grad=True)
        loss = build_loss(name)(logits.to(torch.bfloat16), lab)
        assert loss.dtype == torch.float32
        loss.backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_small_nodule_weights_by_hand() -> None:
    lab = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    lab[0, 0, 0, :2] = True  # 2 label voxels: each weighs 12 / 2 = 6
    lab[1, 0, :4, :4] = True  # 16 voxels, more than 12: weight 1
    weights = small_nodule_weights(lab, 12.0)
    assert weights[0][lab[0]].tolist() == [6.0, 6.0]
    assert weights[0][~lab[0]].unique().tolist() == [1.0]
    assert weights[1].unique().tolist() == [1.0]
    assert weights[2].unique().tolist() == [1.0]  # no label: background weighs 1


def test_small_nodule_px_weights_small_nodules_in_bce_and_focal() -> None:
    lab = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    lab[0, 0, 3, 3] = True  # a 1-voxel nodule
    lab[1, 0, :5, :5] = True  # a 25-voxel one
    logits = torch.randn(lab.shape)
    ce = F.binary_cross_entropy_with_logits(logits, lab.float(), reduction="none")
    weights = torch.ones_like(ce)
    weights[0, 0, 3, 3] = 10.0  # 10 / 1; the big nodule stays at 1
    expected = (ce * weights).mean().item()
    assert build_loss("bce", small_nodule_px=10.0)(logits, lab).item() == pytest.approx(expected)
    focal = build_loss("focal", focal_gamma=0.0, small_nodule_px=10.0)(logits, lab)
    assert focal.item() == pytest.approx(expected)
    assert build_loss("bce", small_nodule_px=0.0)(logits, lab).item() == pytest.approx(
        ce.mean().item()
    )


def test_small_nodule_px_needs_a_voxel_loss() -> None:
    with pytest.raises(ConfigError, match="no voxel weights"):
        build_loss("dice-fn", small_nodule_px=20.0)
    with pytest.raises(ConfigError, match="must not be negative"):
        build_loss("bce", small_nodule_px=-1.0)


@pytest.mark.parametrize("name", ["hinge", ""])
def test_unknown_loss_raises(name: str) -> None:
    with pytest.raises(ConfigError, match="Unknown loss"):
        build_loss(name)


def test_metrics_count_voxels() -> None:
    lab = _labels()  # 2 x 12 label voxels
    pred = lab.clone()
    pred[:, :, 2, 2:6] = False  # 4 FN per sample
    pred[:, :, 7, 0:3] = True  # 3 FP per sample
    metrics = SegmentationMetrics()
    metrics.update(_logits_for(pred), lab.float(), torch.tensor(0.5))
    metrics.update(_logits_for(pred), lab, torch.tensor(1.5))
    m = metrics.compute()
    tp, fn, fp = 4 * 8, 4 * 4, 4 * 3
    assert (m["tp"], m["fn"], m["fp"]) == (tp, fn, fp)
    assert m["tp"] + m["fn"] + m["fp"] + m["tn"] == 4 * 64
    assert m["loss"] == pytest.approx(1.0)
    assert m["tp_pct"] == pytest.approx(100 * tp / (tp + fn))
    assert m["fn_pct"] == pytest.approx(100 * fn / (tp + fn))
    assert m["fp_pct"] == pytest.approx(100 * fp / (tp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))


def test_metrics_without_labels_do_not_divide_by_zero() -> None:
    metrics = SegmentationMetrics()
    metrics.update(torch.full((1, 1, 4, 4), -BIG), torch.zeros(1, 1, 4, 4))
    assert all(math.isfinite(v) for v in metrics.compute().values())


def test_loss_config_rejects_unknown_parameter() -> None:
    with pytest.raises(TypeError):
        build_loss("focal", beta=1.0)


def test_float_labels_after_interpolation_threshold_at_half() -> None:
    """Soft labels (e.g. from a resampled mask) count as label above 0.5 only."""
    lab = torch.tensor([[[[0.2, 0.6], [0.5, 1.0]]]])
    metrics = SegmentationMetrics()
    metrics.update(torch.full_like(lab, BIG), lab)
    m = metrics.compute()
    assert (m["tp"], m["fp"]) == (2, 2)
