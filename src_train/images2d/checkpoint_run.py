"""A 2-D checkpoint run over a stack of RGB images: load it (refusing CT models), predict at
the size it was trained at, threshold. What the viewer's Inference widget runs on an image set.

Images are uint8 RGB ``(N, row, col, 3)``; probabilities float32 ``(N, row, col)``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from src_train.errors import CheckpointError
from src_train.images2d.predict import iter_probabilities
from src_train.images2d.trainer import RGB_CHANNELS
from src_train.model import load_checkpoint, load_model


@dataclass
class ImageSetPrediction:
    """Probability float32 ``(image, row, col)``, the mask at the threshold, the checkpoint and
    the seconds the prediction took."""

    prob: np.ndarray
    mask: np.ndarray
    checkpoint: Path
    seconds: float


def load_image_model(checkpoint: Path, device: str) -> tuple[nn.Module, int | None]:
    """The model of a 2-D checkpoint (3 input channels) on ``device`` and the image side it was
    trained at (None when the checkpoint does not say); a CT checkpoint raises
    :class:`CheckpointError` naming the file and what to use instead."""
    saved = load_checkpoint(checkpoint, map_location="cpu")
    channels = saved.model_config.in_channels
    if channels != RGB_CHANNELS:
        raise CheckpointError(
            f"{checkpoint.name} is a CT model ({channels} input channels); an image set needs "
            "a 2-D checkpoint (3 channels, RGB) written by 'lunaseg compare'."
        )
    model, _config = load_model(checkpoint, device=device)
    size = saved.extra.get("image_size")
    return model, int(size) if size else None


def iter_image_set_prediction(
    images: np.ndarray, checkpoint: Path, device: str, threshold: float
) -> Generator[int, None, ImageSetPrediction]:
    """Run ``checkpoint`` over ``images``; yields the images done after each batch (stop
    iterating to cancel) and returns the prediction with its mask ``prob >= threshold``."""
    model, size = load_image_model(checkpoint, device)
    started = time.perf_counter()
    prob = yield from iter_probabilities(model, images, size)
    return ImageSetPrediction(prob, prob >= threshold, checkpoint, time.perf_counter() - started)
