"""Per-image segmentation scores of 2-D image sets, and the TP/FN/FP picture of one image.

Masks are bool arrays ``(N, H, W)`` (or ``(N, 1, H, W)``): row, col per image. Every score is
computed per image and then averaged over images (so a small lesion counts as much as a large
one), as dermoscopy studies report them:

- IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN), precision = TP / (TP + FP),
  recall = TP / (TP + FN), by :func:`src_train.metrics.overlap_scores` (its convention: a
  ratio whose denominator is empty is 1 when prediction and truth are both empty and 0
  otherwise).
- IoU score (the thresholded IoU of the Kaggle segmentation challenges the study follows): per
  image, the fraction of the thresholds 0.50, 0.55, ..., 0.95 that its IoU is strictly above.
  An IoU of 0.8 scores 0.6 (six thresholds from 0.50 to 0.75 lie below it); 0.5 scores 0.

The TP/FN/FP picture of an image is :func:`src_train.metrics.error_overlay_rgb` (the one
overlay, for grey CT slices and RGB images alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from src_train.errors import ImageSetError
from src_train.metrics import overlap_scores

#: Thresholds of the IoU score: 0.50 to 0.95 in steps of 0.05 (exact: k / 20).
IOU_SCORE_THRESHOLDS = np.arange(10, 20) / 20

#: Names of the per-image scores, in report order.
SCORE_NAMES = ("iou", "iou_score", "dice", "precision", "recall")

Mask = np.ndarray | torch.Tensor


def _per_image(mask: Mask) -> Mask:
    """``(N, H, W)`` or ``(N, 1, H, W)`` -> ``(N, H*W)`` bool."""
    if mask.ndim not in (3, 4) or (mask.ndim == 4 and mask.shape[1] != 1):
        raise ImageSetError(
            f"Masks must be (N, H, W) or (N, 1, H, W); got shape {tuple(mask.shape)}."
        )
    flat = mask.reshape(mask.shape[0], -1)
    if isinstance(flat, torch.Tensor):
        return flat if flat.dtype == torch.bool else flat > 0
    return flat if flat.dtype == np.bool_ else flat > 0


def count_errors(pred: Mask, truth: Mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image pixel counts ``(tp, fp, fn)``, each int64 ``(N,)``.

    ``pred`` and ``truth`` are bool (or 0/1) masks of the same shape, numpy arrays or torch
    tensors (counted on their device; only the counts come back to the host).
    """
    if tuple(pred.shape) != tuple(truth.shape):
        raise ImageSetError(
            f"Prediction {tuple(pred.shape)} and truth {tuple(truth.shape)} differ in shape."
        )
    p, t = _per_image(pred), _per_image(truth)
    counts = [(p & t).sum(1), (p & ~t).sum(1), (~p & t).sum(1)]
    if isinstance(pred, torch.Tensor):
        stacked = torch.stack(counts).cpu().numpy()
    else:
        stacked = np.stack(counts)
    tp, fp, fn = (np.asarray(c, dtype=np.int64) for c in stacked)
    return tp, fp, fn


def iou_score(iou: np.ndarray) -> np.ndarray:
    """Per-image fraction of :data:`IOU_SCORE_THRESHOLDS` that ``iou`` ``(N,)`` is above."""
    values = np.asarray(iou, dtype=np.float64)
    return (values[:, None] > IOU_SCORE_THRESHOLDS[None, :]).mean(axis=1)


@dataclass(frozen=True)
class ImageScores:
    """Scores of ``N`` images: pixel counts and the :data:`SCORE_NAMES`, each ``(N,)``."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray
    iou_score: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def __len__(self) -> int:
        return len(self.tp)

    def mean(self) -> dict[str, float]:
        """Every score averaged over the images (NaN for no image)."""
        return {
            name: float(np.mean(getattr(self, name))) if len(self) else float("nan")
            for name in SCORE_NAMES
        }


def scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> ImageScores:
    """Per-image scores (see the module docstring) from pixel counts ``(N,)``."""
    tp, fp, fn = (np.asarray(c, dtype=np.int64) for c in (tp, fp, fn))
    scores = overlap_scores(tp, fp, fn)
    return ImageScores(
        tp=tp,
        fp=fp,
        fn=fn,
        iou=scores["iou"],
        iou_score=iou_score(scores["iou"]),
        dice=scores["dice"],
        precision=scores["precision"],
        recall=scores["recall"],
    )


def score_images(pred: Mask, truth: Mask) -> ImageScores:
    """Per-image scores of predicted against true masks (shapes as :func:`count_errors`)."""
    return scores_from_counts(*count_errors(pred, truth))
