"""A small 3-D nodule / non-nodule classifier on candidate patches, and its training loop.

The second stage of the reference chapter's pipeline, scaled to a CPU: three 3x3x3 convolution
blocks (batch norm, ReLU, 2x max pooling) over a :mod:`.patches` cube, then two linear layers to
one logit (nodule). Training draws balanced batches (nodules are rare among candidates), moves
each patch by a few voxels and flips/rotates it (a nodule has no preferred direction), and is
deterministic for a seed. Input: HU patches ``(N, D, H, W)``; output logits ``(N,)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from src_train.classify.patches import PATCH_HU_RANGE, PATCH_VOXELS
from src_train.errors import CancelledError, ConfigError

log = logging.getLogger(__name__)

#: HU that maps to 0 and the HU span that maps to 1 at the classifier's input.
_INPUT_CENTER_HU = 0.5 * (PATCH_HU_RANGE[0] + PATCH_HU_RANGE[1])
_INPUT_SCALE_HU = 0.5 * (PATCH_HU_RANGE[1] - PATCH_HU_RANGE[0])


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of :class:`NoduleClassifier` and how it is trained.

    Attributes:
        patch_voxels: side of the input cube (voxels of the patches it is trained on).
        filters: channels of the first block (doubling per block).
        hidden: units of the hidden linear layer.
        crop_voxels: side of the randomly placed crop taken from each patch while training
            (and centered at inference); ``patch_voxels - crop_voxels`` is the jitter range.
        epochs, batch_size, lr: the schedule (Adam).
        seed: seed of initialisation, batch order and augmentation.
    """

    patch_voxels: int = PATCH_VOXELS
    filters: int = 8
    hidden: int = 32
    crop_voxels: int = PATCH_VOXELS - 4
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.crop_voxels <= self.patch_voxels:
            raise ConfigError(
                f"crop_voxels must lie in [8, patch_voxels={self.patch_voxels}]; got "
                f"{self.crop_voxels}."
            )

    def to_dict(self) -> dict[str, float]:
        """Plain-JSON form."""
        return asdict(self)


class NoduleClassifier(nn.Module):
    """Patches ``(N, D, H, W)`` in HU -> nodule logits ``(N,)`` (see the module docstring)."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ClassifierConfig()
        blocks: list[nn.Module] = []
        channels = 1
        size = cfg.crop_voxels
        for level in range(3):
            out = cfg.filters * 2**level
            blocks += [
                nn.Conv3d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm3d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(2),
            ]
            channels, size = out, size // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size**3, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, 1),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = (patches.float().unsqueeze(1) - _INPUT_CENTER_HU) / _INPUT_SCALE_HU
        return self.head(self.features(x))[:, 0]


def center_crop(patches: np.ndarray, size: int) -> np.ndarray:
    """The centered ``size``-cube of patches ``(N, D, H, W)``."""
    start = (patches.shape[1] - size) // 2
    end = start + size
    return patches[:, start:end, start:end, start:end]


def _augment(batch: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop (the jitter), flips of each axis and a quarter turn in-plane, per patch."""
    out = np.empty((len(batch), size, size, size), dtype=np.float32)
    span = batch.shape[1] - size + 1
    for k, patch in enumerate(batch):
        z, y, x = (int(v) for v in rng.integers(span, size=3))
        cube = patch[z : z + size, y : y + size, x : x + size]
        for axis in range(3):
            if rng.random() < 0.5:
                cube = np.flip(cube, axis=axis)
        cube = np.rot90(cube, k=int(rng.integers(4)), axes=(1, 2))
        out[k] = cube
    return out


def classifier_logits(
    model: NoduleClassifier, patches: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Logits ``(N,)`` of the centered crops of ``patches`` (eval mode, no gradients)."""
    model.eval()
    crops = center_crop(patches, model.config.crop_voxels)
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            out.append(
                model(torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size])))
            )
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def train_classifier(
    patches: np.ndarray,
    labels: np.ndarray,
    config: ClassifierConfig | None = None,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> NoduleClassifier:
    """Train a :class:`NoduleClassifier` on patches ``(N, D, H, W)`` HU and 0/1 ``labels``.

    Each epoch draws as many batches as it takes to show every non-nodule once, half of each
    batch nodules (repeated with new jitter and flips). Raises :class:`ConfigError` without
    both classes, :class:`CancelledError` when ``should_stop()`` turns true between batches.
    """
    cfg = config or ClassifierConfig()
    y = np.asarray(labels).astype(bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if not len(pos) or not len(neg):
        raise ConfigError(
            f"The classifier needs nodule and non-nodule patches; got {len(pos)} and {len(neg)}."
        )
    if patches.shape[1] != cfg.patch_voxels:
        raise ConfigError(
            f"Patches of {patches.shape[1]} voxels; the config says {cfg.patch_voxels}."
        )
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = NoduleClassifier(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    half = max(cfg.batch_size // 2, 1)
    steps = max(len(neg) // half, 1)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(neg)
        total = 0.0
        for step in range(steps):
            if should_stop is not None and should_stop():
                raise CancelledError("Classifier training stopped.")
            chosen = np.concatenate(
                [order[step * half : (step + 1) * half], rng.choice(pos, size=half)]
            )
            batch = torch.from_numpy(_augment(patches[chosen], cfg.crop_voxels, rng))
            target = torch.from_numpy(y[chosen].astype(np.float32))
            loss = nn.functional.binary_cross_entropy_with_logits(model(batch), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        log.info("classifier epoch %d/%d: loss %.4f", epoch, cfg.epochs, total / steps)
        if progress is not None:
            progress(epoch, cfg.epochs, f"classifier epoch {epoch}: loss {total / steps:.4f}")
    model.eval()
    return model
