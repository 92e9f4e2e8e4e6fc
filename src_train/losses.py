"""Losses on logits and per-epoch segmentation metrics.

Every function takes logits ``(N, 1, H, W)`` as the model returns them and labels of the same
shape (bool, or float in ``[0, 1]``); the sigmoid is applied here, in float32, where it is
numerically right (``binary_cross_entropy_with_logits``, ``logsigmoid``). A predicted voxel is
positive when its logit is > 0 (probability > 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from src_train.errors import ConfigError
from src_train.metrics import overlap_scores

#: Loss names :func:`build_loss` accepts; the first is the SPEC's default.
LOSSES = ("dice-fn", "dice", "bce", "focal")

#: Losses with per-voxel weights (``small_nodule_px`` applies to them only).
WEIGHTED_LOSSES = ("bce", "focal")

#: Added to Dice numerator and denominator so empty label and prediction give Dice 1.
DICE_SMOOTH = 1.0


@dataclass(frozen=True)
class LossConfig:
    """Which loss and its parameters.

    Attributes:
        name: one of :data:`LOSSES`.
        fn_weight: weight of the false-negative Dice term in ``"dice-fn"`` (the SPEC's 8).
        focal_gamma: focusing exponent of the focal loss (0 = plain BCE).
        focal_alpha: weight of the positive class in the focal loss, or None for none.
        small_nodule_px: in ``"bce"`` and ``"focal"``, the label voxels of a sample that has
            fewer than this many are weighted ``small_nodule_px / count``, so a small nodule
            weighs as much as a nodule of that many voxels (0 = every voxel weighs 1). A
            training crop shows one nodule's center slice, where a 3 mm nodule has ~15 voxels
            and a 20 mm one ~600: unweighted, the small ones hardly count.
    """

    name: str = "dice-fn"
    fn_weight: float = 8.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    small_nodule_px: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ConfigError(f"Unknown loss {self.name!r}; choose one of {', '.join(LOSSES)}.")
        if self.fn_weight < 0 or self.focal_gamma < 0 or self.small_nodule_px < 0:
            raise ConfigError(
                "fn_weight, focal_gamma and small_nodule_px must not be negative; got "
                f"{self.fn_weight}, {self.focal_gamma}, {self.small_nodule_px}."
            )
        if self.small_nodule_px > 0 and self.name not in WEIGHTED_LOSSES:
            raise ConfigError(
                f"small_nodule_px weights voxels of the bce and focal losses; the {self.name} "
                "loss has no voxel weights (use --loss bce or focal, or leave it at 0)."
            )


def _as_float(labels: torch.Tensor) -> torch.Tensor:
    return labels.to(torch.float32)


def soft_dice(
    pred: torch.Tensor, labels: torch.Tensor, smooth: float = DICE_SMOOTH
) -> torch.Tensor:
    """Per-sample soft Dice ``(N,)`` of probabilities ``pred`` against ``labels`` ``(N, ...)``."""
    dims = tuple(range(1, pred.ndim))
    overlap = (pred * labels).sum(dim=dims)
    total = pred.sum(dim=dims) + labels.sum(dim=dims)
    return (2 * overlap + smooth) / (total + smooth)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``1 - soft Dice``, mean over the batch."""
    prob = torch.sigmoid(logits.float())
    return (1 - soft_dice(prob, _as_float(labels))).mean()


def false_negative_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``1 - Dice(prediction * label, label)``: only missed label voxels cost, mean over batch."""
    prob = torch.sigmoid(logits.float())
    lab = _as_float(labels)
    return (1 - soft_dice(prob * lab, lab)).mean()


def dice_fn_loss(
    logits: torch.Tensor, labels: torch.Tensor, fn_weight: float = LossConfig.fn_weight
) -> torch.Tensor:
    """The SPEC's loss: soft Dice loss + ``fn_weight`` x false-negative Dice loss."""
    return dice_loss(logits, labels) + fn_weight * false_negative_dice_loss(logits, labels)


def small_nodule_weights(labels: torch.Tensor, small_nodule_px: float) -> torch.Tensor:
    """Voxel weights ``(N, ...)``: 1, except label voxels of a sample with ``count`` <
    ``small_nodule_px`` of them, which weigh ``small_nodule_px / count``."""
    lab = _as_float(labels)
    count = lab.sum(dim=tuple(range(1, lab.ndim)), keepdim=True)
    boost = (small_nodule_px / count.clamp(min=1.0)).clamp(min=1.0)
    return 1.0 + lab * (boost - 1.0)


def bce_loss(
    logits: torch.Tensor, labels: torch.Tensor, small_nodule_px: float = 0.0
) -> torch.Tensor:
    """Binary cross-entropy on logits, mean over voxels (small nodules weighted up when
    ``small_nodule_px`` > 0, see :func:`small_nodule_weights`)."""
    weight = small_nodule_weights(labels, small_nodule_px) if small_nodule_px > 0 else None
    return F.binary_cross_entropy_with_logits(logits.float(), _as_float(labels), weight=weight)


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = LossConfig.focal_gamma,
    alpha: float | None = LossConfig.focal_alpha,
    small_nodule_px: float = 0.0,
) -> torch.Tensor:
    """Focal loss ``-(1 - p_t)**gamma * log(p_t)``, mean over voxels (``gamma=0`` is BCE)."""
    x = logits.float()
    lab = _as_float(labels)
    ce = F.binary_cross_entropy_with_logits(x, lab, reduction="none")
    p_t = torch.exp(-ce)  # probability given to the true class
    loss = (1 - p_t).pow(gamma) * ce
    if alpha is not None:
        loss = loss * (alpha * lab + (1 - alpha) * (1 - lab))
    if small_nodule_px > 0:
        loss = loss * small_nodule_weights(lab, small_nodule_px)
    return loss.mean()


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SegmentationLoss(nn.Module):
    """A loss chosen by name (see :data:`LOSSES`); ``forward(logits, labels) -> scalar``."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()  # LossConfig has checked the name

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar float32 loss of logits ``(N, 1, H, W)`` against labels of the same shape."""
        cfg = self.config
        if cfg.name == "dice-fn":
            return dice_fn_loss(logits, labels, cfg.fn_weight)
        if cfg.name == "dice":
            return dice_loss(logits, labels)
        if cfg.name == "bce":
            return bce_loss(logits, labels, cfg.small_nodule_px)
        return focal_loss(logits, labels, cfg.focal_gamma, cfg.focal_alpha, cfg.small_nodule_px)


def build_loss(name: str = "dice-fn", **params: float) -> SegmentationLoss:
    """The loss called ``name`` with optional parameters (``fn_weight``, ``focal_gamma``...)."""
    return SegmentationLoss(LossConfig(name=name, **params))


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
#: A float label voxel (e.g. a resampled mask) counts as label above this value.
LABEL_THRESHOLD = 0.5

#: Order of the counters in :attr:`SegmentationMetrics.totals`.
_COUNTERS = ("loss_sum", "batches", "tp", "fn", "fp", "tn")


class SegmentationMetrics:
    """Accumulates voxel counts over an epoch and turns them into metrics.

    Counters live in one float64 tensor on the device (no host sync per batch); :meth:`reduce`
    sums them over distributed processes. Labels may be bool or float (label above
    :data:`LABEL_THRESHOLD`), so "not label" is exact with or without augmentation. A voxel is
    predicted positive when its logit is > 0 (probability > 0.5).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.totals = torch.zeros(len(_COUNTERS), dtype=torch.float64, device=device)

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor | None = None
    ) -> None:
        """Add one batch: logits and labels ``(N, 1, H, W)``, its (mean) loss."""
        pred = logits.detach() > 0
        lab = labels > LABEL_THRESHOLD if labels.dtype != torch.bool else labels
        counts = torch.stack(
            [
                (pred & lab).sum(),
                (~pred & lab).sum(),
                (pred & ~lab).sum(),
                (~pred & ~lab).sum(),
            ]
        ).to(torch.float64)
        self.totals[2:] += counts
        if loss is not None:
            self.totals[0] += loss.detach().to(torch.float64)
            self.totals[1] += 1

    def reduce(self) -> None:
        """Sum the counters over all processes of a distributed run (no-op otherwise)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.totals)

    def compute(self) -> dict[str, float]:
        """``loss``, ``tp_pct``/``fn_pct``/``fp_pct`` (% of label voxels), ``precision``,
        ``recall``, ``f1`` (= Dice), ``iou``, and the voxel counts."""
        loss_sum, batches, tp, fn, fp, tn = (float(v) for v in self.totals.cpu())
        labelled = tp + fn

        # Loss and shares of label voxels: 0 without batches or label voxels.
        def ratio(num: float, den: float) -> float:
            return num / den if den > 0 else 0.0

        scores = overlap_scores(tp, fp, fn)  # the one convention for empty masks
        return {
            "loss": ratio(loss_sum, batches),
            "tp_pct": 100.0 * ratio(tp, labelled),
            "fn_pct": 100.0 * ratio(fn, labelled),
            "fp_pct": 100.0 * ratio(fp, labelled),
            "precision": float(scores["precision"]),
            "recall": float(scores["recall"]),
            "f1": float(scores["dice"]),
            "iou": float(scores["iou"]),
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "tn": tn,
        }
