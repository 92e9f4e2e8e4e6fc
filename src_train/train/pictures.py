"""CT slices with the TP/FN/FP colour code, for a run's TensorBoard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from src_train.metrics import error_overlay_rgb, window_to_grey

#: A picture: ``(HU slice, predicted mask, true mask)``, 2-D arrays ``(row, col)``.
Picture = tuple[np.ndarray, np.ndarray, np.ndarray]


def batch_pictures(
    image: torch.Tensor, logits: torch.Tensor, label: torch.Tensor, count: int
) -> list[Picture]:
    """The center slices of the first ``count`` crops of a batch: ``image`` ``(N, C, H, W)``
    HU, ``logits`` and ``label`` ``(N, 1, H, W)``."""
    center = image.shape[1] // 2
    return [
        (
            image[j, center].float().cpu().numpy(),
            (logits[j, 0] > 0).cpu().numpy(),
            label[j, 0].cpu().numpy(),
        )
        for j in range(min(image.shape[0], count))
    ]


def log_pictures(
    writer: Any, tag: str, epoch: int, pictures: Sequence[Picture], first: int = 0
) -> None:
    """Each picture with the colour code as TensorBoard image ``tag/<n>`` (numbered from
    ``first``) of step ``epoch``."""
    for j, (hu, pred, truth) in enumerate(pictures):
        rgb = error_overlay_rgb(window_to_grey(hu), pred, truth)
        writer.add_image(f"{tag}/{first + j}", rgb, epoch, dataformats="HWC")
