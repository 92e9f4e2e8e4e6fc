"""Voxel metrics and the TP/FN/FP colour code, in one place.

Every comparison of a predicted mask with a ground-truth mask goes through here: precision,
recall, Dice and IoU from counts with one convention for empty masks (:func:`overlap_scores`),
the Dice the mask report and Mask QA show, the voxel precision/recall ``lunaseg infer``
prints, the error volume (1 TP, 2 FN, 3 FP; see :mod:`src_train.colors`) the viewer colours,
and the RGB overlay TensorBoard and the reports draw over a grey CT slice or an RGB image.
Arrays may have any shape, as long as both inputs share it (volumes are ``(index, row, col)``,
slices ``(row, col)``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from src_train.colors import (
    ERROR_BACKGROUND,
    ERROR_COLORS_RGB,
    ERROR_FN,
    ERROR_FP,
    ERROR_TP,
    LUNG_WINDOW_HU,
)
from src_train.errors import ConfigError, GeometryError

#: Opacity of the TP/FN/FP colours over the image in :func:`error_overlay_rgb`.
OVERLAY_ALPHA = 0.6

#: Error code of each ``(truth, prediction)`` pair, indexed by ``2 * truth + prediction``.
_ERROR_LUT = np.array([ERROR_BACKGROUND, ERROR_FP, ERROR_FN, ERROR_TP], dtype=np.uint8)

#: RGB colour (0..255, float32) of each error code; the background's is never blended in.
_ERROR_RGB_LUT = np.array(
    [ERROR_COLORS_RGB.get(code, (0, 0, 0)) for code in range(max(ERROR_COLORS_RGB) + 1)],
    dtype=np.float32,
)


def check_same_shape(pred: np.ndarray, truth: np.ndarray) -> None:
    """:class:`GeometryError` unless the prediction and the ground truth share a shape."""
    if np.shape(pred) != np.shape(truth):
        raise GeometryError(
            f"Prediction {np.shape(pred)} and ground truth {np.shape(truth)} differ in shape; "
            "they must come from the same series."
        )


def overlap_scores(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike) -> dict[str, np.ndarray]:
    """``precision``, ``recall``, ``dice`` and ``iou`` from true-positive, false-positive and
    false-negative counts (voxels or pixels; scalars or arrays of one shape, one score per
    element, float64):

    * precision = TP / (TP + FP), recall = TP / (TP + FN),
    * Dice = 2 TP / (2 TP + FP + FN), IoU = TP / (TP + FP + FN).

    **Empty denominators, the one convention of LunaSeg.** A ratio whose denominator is 0 is
    1.0 when prediction and truth are both empty (nothing to find, nothing marked: a perfect
    answer, so an image or nodule-free series predicted empty is not punished, and a mean over
    images keeps every image) and 0.0 otherwise (no prediction against some truth has
    precision 0; a prediction where there is nothing to find has recall 0). In particular the
    Dice and IoU of two empty masks are 1.0, never NaN. Every Dice and IoU from counts (voxel
    metrics, the mask report, training metrics, validation, 2-D image scores) comes from here.
    """
    tp_, fp_, fn_ = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn))
    both_empty = (tp_ + fp_ + fn_) == 0

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.where(both_empty, 1.0, 0.0)
        np.divide(num, den, out=out, where=den > 0)
        return out

    return {
        "precision": ratio(tp_, tp_ + fp_),
        "recall": ratio(tp_, tp_ + fn_),
        "dice": ratio(2 * tp_, 2 * tp_ + fp_ + fn_),
        "iou": ratio(tp_, tp_ + fp_ + fn_),
    }


def _counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` voxel counts of two bool arrays of one shape."""
    check_same_shape(pred, truth)
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice ``2|a & b| / (|a| + |b|)`` of two bool arrays of one shape (1.0 when both are
    empty: :func:`overlap_scores`)."""
    return float(overlap_scores(*_counts(a, b))["dice"])


def voxel_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Voxel counts and scores of ``pred`` against ``truth`` (bool arrays, same shape).

    Returns ``tp``, ``fn``, ``fp`` (voxel counts) and ``precision``, ``recall``, ``dice``
    (:func:`overlap_scores`, whose convention gives every score a value).
    """
    tp, fp, fn = _counts(pred, truth)
    scores = overlap_scores(tp, fp, fn)
    return {
        "tp": float(tp),
        "fn": float(fn),
        "fp": float(fp),
        "precision": float(scores["precision"]),
        "recall": float(scores["recall"]),
        "dice": float(scores["dice"]),
    }


def error_volume(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Label array of prediction errors, the inputs' shape, uint8.

    Values: :data:`~src_train.colors.ERROR_TP` (1) where both are set, ``ERROR_FN`` (2) where
    only ``truth`` is, ``ERROR_FP`` (3) where only ``pred`` is, 0 elsewhere.
    """
    check_same_shape(pred, truth)
    code = np.left_shift(np.asarray(truth, dtype=bool).view(np.uint8), 1)
    code |= np.asarray(pred, dtype=bool).view(np.uint8)
    return _ERROR_LUT[code]


def window_to_grey(hu: np.ndarray, window_hu: tuple[float, float] = LUNG_WINDOW_HU) -> np.ndarray:
    """HU to float32 grey levels in ``[0, 1]`` through a display window ``(low, high)`` HU."""
    low, high = window_hu
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def _base_rgb(base: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``base`` as float32 RGB ``(row, col, 3)`` in 0..255 (see :func:`error_overlay_rgb`)."""
    base = np.asarray(base)
    if base.shape not in (shape, (*shape, 3)):
        raise GeometryError(
            f"The image under an overlay must be grey {shape} or RGB {(*shape, 3)} like its "
            f"masks; got {base.shape}."
        )
    if base.dtype == np.uint8:
        values = base.astype(np.float32)
    elif np.issubdtype(base.dtype, np.floating):
        values = np.clip(base.astype(np.float32), 0.0, 1.0) * np.float32(255.0)
    else:
        raise ConfigError(
            f"The image under an overlay must be uint8 (0-255) or float in [0, 1]; got "
            f"{base.dtype}. Use window_to_grey for a CT slice in HU."
        )
    return values if values.ndim == 3 else np.repeat(values[..., None], 3, axis=-1)


def error_overlay_rgb(
    base: np.ndarray, pred: np.ndarray, truth: np.ndarray, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """``base`` as uint8 RGB ``(row, col, 3)`` with true positives green, false negatives
    orange and false positives red (:mod:`src_train.colors`) blended in at opacity ``alpha``.

    ``base`` is grey ``(row, col)`` or RGB ``(row, col, 3)``, either uint8 (0-255) or float
    in ``[0, 1]`` (use :func:`window_to_grey` for a CT slice in HU); ``pred`` and ``truth``
    are bool ``(row, col)``. True negatives keep the base's colour.
    """
    codes = error_volume(pred, truth)
    rgb = _base_rgb(base, codes.shape)
    weight = np.where(codes == ERROR_BACKGROUND, 0.0, alpha).astype(np.float32)[..., None]
    blended = (1 - weight) * rgb + weight * _ERROR_RGB_LUT[codes]
    return np.rint(blended).astype(np.uint8)
