"""Model input of RGB images, and prediction over a stack of them.

The models see RGB as float channels in ``[0, 1]`` (8-bit values divided by 255), ``(N, 3,
row, col)``; the batch norm on their input does the rest of the normalisation, as it does
for HU. One home for this rule: training, validation, test scoring and viewers call
:func:`to_model_input`.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: 8-bit RGB values are divided by this to give model inputs in [0, 1].
RGB_SCALE = 255.0

#: Default images per forward pass when predicting.
PREDICT_BATCH = 16


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, row, col)`` -> float32 in ``[0, 1]``, on the tensor's device."""
    return images.to(torch.float32) / RGB_SCALE


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, row, col, 3)`` (as :class:`~src_train.images2d.dataset.ImageSet` holds
    them) -> uint8 tensor ``(N, 3, row, col)``, contiguous, on the CPU."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = PREDICT_BATCH
) -> torch.Tensor:
    """Logits ``(N, 1, row, col)`` (float32, on the CPU) of uint8 images ``(N, 3, row, col)``.

    Batches run on the model's device. The model is put in eval mode (batch norm uses its
    running statistics) and left there.
    """
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = to_model_input(images[start : start + batch_size].to(device))
        out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 1, *images.shape[2:]))


def predict_masks(
    model: nn.Module, images: np.ndarray, batch_size: int = PREDICT_BATCH
) -> np.ndarray:
    """bool ``(N, row, col)``: lesion where the probability is above 0.5 (logit > 0), for
    uint8 RGB images ``(N, row, col, 3)``, computed on the model's device."""
    logits = predict_logits(model, images_to_tensor(images), batch_size)
    return (logits[:, 0] > 0).numpy()


def iter_probabilities(
    model: nn.Module,
    images: np.ndarray,
    model_size: int | None = None,
    batch_size: int = PREDICT_BATCH,
) -> Generator[int, None, np.ndarray]:
    """Lesion probability of uint8 RGB images ``(N, row, col, 3)``, batch by batch.

    Yields the number of images done after each batch (stop iterating to cancel) and returns
    float32 ``(N, row, col)`` in ``[0, 1]``. With ``model_size`` (the side the model was
    trained at, e.g. a checkpoint's ``image_size``) each batch is resized to ``model_size x
    model_size`` before the model (bilinear, antialiased, as the loader resizes) and the
    probabilities back to ``(row, col)`` (bilinear). Runs on the model's device, eval mode.
    """
    n, rows, cols = images.shape[:3]
    out = np.empty((n, rows, cols), dtype=np.float32)
    side = model_size if model_size is not None else rows
    resize = (rows, cols) != (side, side) and model_size is not None
    for start in range(0, n, batch_size):
        batch = images_to_tensor(images[start : start + batch_size])
        if resize:
            batch = (
                F.interpolate(batch.float(), size=(side, side), mode="bilinear", antialias=True)
                .round()
                .clamp(0, RGB_SCALE)
                .to(torch.uint8)
            )
        prob = torch.sigmoid(predict_logits(model, batch, batch_size))
        if resize:
            prob = F.interpolate(prob, size=(rows, cols), mode="bilinear", align_corners=False)
        out[start : start + batch_size] = prob[:, 0].numpy()
        yield min(start + batch_size, n)
    return out
