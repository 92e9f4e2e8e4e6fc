"""What a candidate looks like to a ranker: a few numbers, and a logistic model over them.

Features (:data:`FEATURE_NAMES`) come from the segmenter's output alone, in millimetres, so they
do not depend on how a file orders its axes: size (voxels, equivalent diameter, the longest and
shortest axis of its ellipsoid), shape (elongation: a vessel branch is long and thin, a nodule
round) and the segmenter's confidence (highest and mean voxel probability). A logistic model
over the standardised features (:class:`LogisticModel`, fitted with class-balanced weights and
an L2 penalty) turns them into a nodule probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from src_train.errors import ConfigError
from src_train.records.candidate import CandidateNodule

#: Feature order of :func:`candidate_features`.
FEATURE_NAMES: tuple[str, ...] = (
    "log_voxels",
    "diameter_mm",
    "longest_axis_mm",
    "shortest_axis_mm",
    "log_elongation",
    "max_probability",
    "mean_probability",
)

#: L2 penalty of the logistic model (on standardised features).
DEFAULT_L2 = 1e-2
#: Optimiser steps of the logistic fit (L-BFGS; it converges in far fewer on these sizes).
LOGISTIC_STEPS = 200
#: Smallest standard deviation a feature is divided by.
_MIN_STD = 1e-6


def candidate_features(candidates: Sequence[CandidateNodule]) -> np.ndarray:
    """Feature matrix ``(N, len(FEATURE_NAMES))`` float64 of ``candidates``."""
    rows = []
    for c in candidates:
        longest, _, shortest = (0.0, 0.0, 0.0) if math.isnan(c.axes_mm[0]) else c.axes_mm
        elongation = c.elongation if math.isfinite(c.elongation) else 1.0
        rows.append(
            (
                math.log(max(c.voxel_count, 1)),
                c.diameter_mm,
                longest,
                shortest,
                math.log(max(elongation, 1.0)),
                c.max_probability if math.isfinite(c.max_probability) else c.probability,
                c.mean_probability if math.isfinite(c.mean_probability) else c.probability,
            )
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


@dataclass
class LogisticModel:
    """``p = sigmoid(w . (x - mean) / std + b)`` over feature columns.

    Attributes:
        mean, std: standardisation of each column.
        weights, bias: the fitted model.
    """

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Log-odds ``(N,)`` of rows of ``features``."""
        if features.shape[1] != len(self.weights):
            raise ConfigError(
                f"The ranker expects {len(self.weights)} features, got {features.shape[1]}."
            )
        z = (features - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weights) + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Nodule probabilities ``(N,)``."""
        return 1.0 / (1.0 + np.exp(-self.logits(features)))

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form."""
        return {"mean": self.mean, "std": self.std, "weights": self.weights, "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict) -> LogisticModel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
            weights=[float(v) for v in data["weights"]],
            bias=float(data["bias"]),
        )


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = DEFAULT_L2) -> LogisticModel:
    """Fit :class:`LogisticModel` to ``features`` ``(N, F)`` and 0/1 ``labels`` ``(N,)``.

    Classes are weighted to equal total weight (nodules are rare among candidates). Raises
    :class:`ConfigError` without examples of both classes.
    """
    y = np.asarray(labels, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ConfigError(
            f"A ranker needs nodules and non-nodules among the training candidates; got "
            f"{n_pos} nodule(s) of {len(y)}. Train on more series or a better segmenter."
        )
    mean = features.mean(axis=0)
    std = np.maximum(features.std(axis=0), _MIN_STD)
    x = torch.from_numpy((features - mean) / std)
    target = torch.from_numpy(y)
    weight = torch.where(target > 0.5, 0.5 / n_pos, 0.5 / (len(y) - n_pos)).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=LOGISTIC_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, weight=weight, reduction="sum"
        )
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LogisticModel(
        mean=mean.tolist(),
        std=std.tolist(),
        weights=w.detach().tolist(),
        bias=float(b.detach()[0]),
    )
