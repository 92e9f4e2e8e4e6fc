"""Dice, voxel metrics, the error volume and the TP/FN/FP overlay: one home, known answers."""

from __future__ import annotations

import numpy as np
import pytest

from src_train.colors import ERROR_FN, ERROR_FP, ERROR_TP, FN_RGB, FP_RGB, TP_RGB
from src_train.errors import ConfigError, GeometryError
from src_train.metrics import (
    dice,
    error_overlay_rgb,
    error_volume,
    overlap_scores,
    voxel_metrics,
    window_to_grey,
)


def test_dice() -> None:
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    assert dice(a, b) == 1.0
    a[0, 0, :2] = True
    b[0, 0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "precision", "recall", "dice_", "iou"),
    [
        (0, 0, 0, 1.0, 1.0, 1.0, 1.0),  # nothing to find, nothing marked: perfect
        (0, 0, 5, 0.0, 0.0, 0.0, 0.0),  # nothing marked, something to find
        (0, 3, 0, 0.0, 0.0, 0.0, 0.0),  # marks where there is nothing to find
        (2, 1, 1, 2 / 3, 2 / 3, 2 / 3, 0.5),
    ],
)
def test_overlap_scores_one_convention_for_empty_denominators(
    tp: int, fp: int, fn: int, precision: float, recall: float, dice_: float, iou: float
) -> None:
    got = overlap_scores(tp, fp, fn)
    want = {"precision": precision, "recall": recall, "dice": dice_, "iou": iou}
    assert {k: float(v) for k, v in got.items()} == pytest.approx(want)
    many = overlap_scores(np.array([tp, 0]), np.array([fp, 0]), np.array([fn, 0]))
    assert many["dice"].tolist() == pytest.approx([dice_, 1.0])  # element by element


@pytest.mark.parametrize("case", ["both empty", "nothing marked", "overlap"])
def test_every_dice_and_iou_from_counts_agrees(case: str) -> None:
    """Voxel metrics, the training metrics, validation and the 2-D image scores give the same
    Dice and IoU for the same masks, the case of two empty masks included."""
    import torch

    from src_train.images2d.metrics import score_images
    from src_train.losses import SegmentationMetrics
    from src_train.records.truth import ScoringTruth
    from src_train.train.validation import SeriesValidation, score_validation

    truth = np.zeros((1, 6, 6), bool)
    pred = np.zeros_like(truth)
    if case != "both empty":
        truth[0, 1:4, 1:4] = True
    if case == "overlap":
        pred[0, 2:5, 2:5] = True
    tp, fp, fn = (int(np.count_nonzero(m)) for m in (pred & truth, pred & ~truth, ~pred & truth))
    expected = overlap_scores(tp, fp, fn)

    voxels = voxel_metrics(pred, truth)
    training = SegmentationMetrics()
    logits = torch.from_numpy(np.where(pred, 30.0, -30.0)).float()[:, None]
    training.update(logits, torch.from_numpy(truth)[:, None])
    trained = training.compute()
    images = score_images(pred, truth)
    outcome = SeriesValidation("s", [], (tp, fp, fn, pred.size - tp - fp - fn))
    validated = score_validation([outcome], ScoringTruth(), ["s"])

    dice_ = float(expected["dice"])
    iou = float(expected["iou"])
    assert dice(pred, truth) == pytest.approx(dice_)
    assert voxels["dice"] == pytest.approx(dice_)
    assert (trained["f1"], trained["iou"]) == pytest.approx((dice_, iou))
    assert (images.dice[0], images.iou[0]) == pytest.approx((dice_, iou))
    assert (validated["voxel_f1"], validated["voxel_iou"]) == pytest.approx((dice_, iou))
    if case == "both empty":
        assert dice_ == 1.0 and iou == 1.0


def test_error_volume_and_metrics() -> None:
    pred = np.zeros((2, 3, 4), dtype=bool)
    truth = np.zeros_like(pred)
    pred[0, 0, :3] = True  # 3 predicted
    truth[0, 0, 1:4] = True  # 3 true, 2 shared
    err = error_volume(pred, truth)
    assert err.dtype == np.uint8
    assert err[0, 0].tolist() == [ERROR_FP, ERROR_TP, ERROR_TP, ERROR_FN]
    assert np.count_nonzero(err) == 4
    m = voxel_metrics(pred, truth)
    assert (m["tp"], m["fn"], m["fp"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["dice"] == pytest.approx(2 / 3)
    empty = voxel_metrics(np.zeros_like(pred), np.zeros_like(pred))
    assert (empty["precision"], empty["recall"], empty["dice"]) == (1.0, 1.0, 1.0)
    with pytest.raises(GeometryError):
        error_volume(pred, truth[:1])


def test_error_overlay_uses_the_colour_code() -> None:
    hu = np.full((4, 4), -1350.0)  # bottom of the lung window: black
    pred = np.zeros((4, 4), bool)
    label = np.zeros((4, 4), bool)
    pred[0, 0] = label[0, 0] = True  # TP
    label[1, 1] = True  # FN
    pred[2, 2] = True  # FP
    rgb = error_overlay_rgb(window_to_grey(hu), pred, label, alpha=1.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3)
    assert tuple(rgb[0, 0]) == TP_RGB and tuple(rgb[1, 1]) == FN_RGB
    assert tuple(rgb[2, 2]) == FP_RGB and tuple(rgb[3, 3]) == (0, 0, 0)


def _three_classes() -> tuple[np.ndarray, np.ndarray]:
    """TP at (0, 0), FN at (1, 1), FP at (2, 2) of a 4 x 4 slice."""
    pred = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    pred[0, 0] = truth[0, 0] = True
    truth[1, 1] = True
    pred[2, 2] = True
    return pred, truth


def test_error_overlay_over_an_rgb_image_keeps_its_colour_where_no_mask_is() -> None:
    pred, truth = _three_classes()
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 100, 50, 10
    out = error_overlay_rgb(image, pred, truth, alpha=1.0)
    assert tuple(out[0, 0]) == TP_RGB and tuple(out[1, 1]) == FN_RGB
    assert tuple(out[2, 2]) == FP_RGB and tuple(out[3, 3]) == (100, 50, 10)
    half = error_overlay_rgb(image, pred, truth, alpha=0.5)
    blended = [round(0.5 * b + 0.5 * c) for b, c in zip((100, 50, 10), TP_RGB, strict=True)]
    assert list(half[0, 0]) == blended


def test_error_overlay_reads_uint8_and_float_bases_alike() -> None:
    pred, truth = _three_classes()
    grey_u8 = np.full((4, 4), 51, np.uint8)
    grey_float = np.full((4, 4), 0.2, np.float32)  # 0.2 x 255 = 51
    rgb_float = np.full((4, 4, 3), 0.2, np.float64)
    expected = error_overlay_rgb(grey_u8, pred, truth)
    assert np.array_equal(error_overlay_rgb(grey_float, pred, truth), expected)
    assert np.array_equal(error_overlay_rgb(rgb_float, pred, truth), expected)
    assert tuple(expected[3, 3]) == (51, 51, 51)


def test_error_overlay_refuses_a_base_of_another_size_or_type() -> None:
    pred, truth = _three_classes()
    with pytest.raises(GeometryError, match=r"grey \(4, 4\) or RGB \(4, 4, 3\)"):
        error_overlay_rgb(np.zeros((4, 5, 3), np.uint8), pred, truth)
    with pytest.raises(GeometryError, match="differ in shape"):
        error_overlay_rgb(np.zeros((4, 4)), pred, truth[:3])
    with pytest.raises(ConfigError, match="int16"):
        error_overlay_rgb(np.zeros((4, 4), np.int16), pred, truth)
