"""Per-image IoU, IoU score, Dice, precision, recall against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src_train.errors import ImageSetError
from src_train.images2d.metrics import (
    IOU_SCORE_THRESHOLDS,
    count_errors,
    iou_score,
    score_images,
)


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """Image 0: truth 10 px, prediction 8 px of them + 2 outside -> TP 8, FP 2, FN 2.
    Image 1: both empty. Image 2: truth 4 px, nothing predicted."""
    pred = np.zeros((3, 6, 6), bool)
    truth = np.zeros((3, 6, 6), bool)
    truth[0, 0, :5] = truth[0, 1, :5] = True  # 10 px
    pred[0, 0, :5] = True
    pred[0, 1, :3] = True  # 8 inside
    pred[0, 5, :2] = True  # 2 outside
    truth[2, 2:4, 2:4] = True
    return pred, truth


def test_scores_match_hand_computed_values() -> None:
    pred, truth = _pair()
    scores = score_images(pred, truth)
    assert scores.tp.tolist() == [8, 0, 0] and scores.fp.tolist() == [2, 0, 0]
    assert scores.fn.tolist() == [2, 0, 4]
    assert scores.iou == pytest.approx([8 / 12, 1.0, 0.0])
    assert scores.dice == pytest.approx([16 / 20, 1.0, 0.0])
    assert scores.precision == pytest.approx([0.8, 1.0, 0.0])
    assert scores.recall == pytest.approx([0.8, 1.0, 0.0])
    # IoU 2/3: thresholds 0.50, 0.55, 0.60, 0.65 lie below it -> 4 of 10
    assert scores.iou_score == pytest.approx([0.4, 1.0, 0.0])
    means = scores.mean()
    assert means["iou"] == pytest.approx((8 / 12 + 1) / 3)
    assert means["iou_score"] == pytest.approx(1.4 / 3)


def test_iou_score_thresholds_are_strict_and_exact() -> None:
    assert IOU_SCORE_THRESHOLDS.tolist() == pytest.approx(
        [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    )
    got = iou_score(np.array([0.8, 0.75, 0.5, 0.49, 0.951, 1.0]))
    assert got == pytest.approx([0.6, 0.5, 0.0, 0.0, 1.0, 1.0])


def test_torch_and_numpy_count_the_same() -> None:
    pred, truth = _pair()
    from_numpy = count_errors(pred, truth)
    from_torch = count_errors(torch.from_numpy(pred)[:, None], torch.from_numpy(truth)[:, None])
    for a, b in zip(from_numpy, from_torch, strict=True):
        assert a.dtype == np.int64 and a.tolist() == b.tolist()


def test_float_masks_count_above_zero() -> None:
    pred, truth = _pair()
    assert score_images(pred.astype(np.uint8), truth.astype(np.float32)).tp.tolist() == [8, 0, 0]


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ImageSetError, match="differ in shape"):
        count_errors(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))
    with pytest.raises(ImageSetError, match="Masks must be"):
        count_errors(np.zeros((2, 3, 4, 4), bool), np.zeros((2, 3, 4, 4), bool))
