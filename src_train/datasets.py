"""Training and validation samples read from the cache (see :mod:`src_train.cache`).

Samples are ``(image, label)``: image float32 ``(C, H, W)`` = the slice and its context
slices in HU, clamped (:mod:`src_train.context`); label bool ``(1, H, W)``. Randomness
depends only on ``(seed, epoch, index)``, so a run draws the same samples with any number of
loader workers, and a resumed run draws what the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from src_train.cache import SeriesCache
from src_train.context import DEFAULT_CONTEXT_SLICES, HU_CLAMP, context_stack
from src_train.errors import ConfigError


@dataclass(frozen=True)
class SampleConfig:
    """Shapes of training and validation samples.

    Attributes:
        crop_size: training crop height = width, pixels.
        window_size: side of the window centered on a nodule inside which the crop is taken.
        context_slices: neighbouring slices on each side (channels = ``2 * context + 1``).
    """

    crop_size: int = 64
    window_size: int = 96
    context_slices: int = DEFAULT_CONTEXT_SLICES

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.window_size < self.crop_size:
            raise ConfigError(
                f"Need 1 <= crop size <= window size; got crop {self.crop_size}, window "
                f"{self.window_size}."
            )


def _crop_start(center: int, size: int, sample: SampleConfig, offset: int) -> int:
    """First row/col of a crop at ``offset`` inside the window around ``center``, kept inside."""
    start = center - sample.window_size // 2 + offset
    return int(np.clip(start, 0, max(size - sample.crop_size, 0)))


def _pad_to(array: np.ndarray, size: int, value: float) -> np.ndarray:
    """Pad the last two axes at the end up to ``size`` (only for images smaller than a crop)."""
    pad_r = size - array.shape[-2]
    pad_c = size - array.shape[-1]
    if pad_r <= 0 and pad_c <= 0:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, max(pad_r, 0)), (0, max(pad_c, 0))]
    return np.pad(array, widths, constant_values=value)


class TrainingDataset(Dataset):
    """Nodule-centered training crops from the cache.

    Item ``i`` of epoch ``e`` is a nodule from a per-epoch shuffled cycle over all nodules of
    the given series, cropped at a random offset (``crop_size``) inside a ``window_size``
    window centered on it, on its center slice with ``context_slices`` neighbours each side.
    Returns ``(image float32 (C, crop, crop) HU clamped, mask bool (1, crop, crop))``.
    Randomness depends only on ``(seed, epoch, i)``, so it is the same with any worker count.
    """

    def __init__(
        self,
        cache: SeriesCache,
        uids: Sequence[str],
        epoch_samples: int,
        sample: SampleConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.cache = cache
        self.sample = sample or SampleConfig()
        self.epoch_samples = int(epoch_samples)
        self.seed = int(seed)
        self.nodules: list[tuple[str, tuple[int, int, int]]] = [
            (uid, center) for uid in uids for center in cache.meta(uid).nodule_centers_irc
        ]
        if not self.nodules:
            raise ConfigError(
                f"The {len(uids)} training series have no annotated nodules inside their "
                "volumes; check annotations.csv or the data folder."
            )
        if self.epoch_samples < 1:
            raise ConfigError(f"epoch_samples must be positive; got {epoch_samples}.")
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the nodule cycle for ``epoch``."""
        self.epoch = int(epoch)
        rng = np.random.default_rng((self.seed, self.epoch))
        self._order = rng.permutation(len(self.nodules))

    def __len__(self) -> int:
        return self.epoch_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        uid, (z, r, c) = self.nodules[int(self._order[index % len(self.nodules)])]
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        hu, mask = self.cache.arrays(uid)
        s = self.sample
        span = s.window_size - s.crop_size + 1
        r0 = _crop_start(r, hu.shape[1], s, int(rng.integers(span)))
        c0 = _crop_start(c, hu.shape[2], s, int(rng.integers(span)))
        rows, cols = slice(r0, r0 + s.crop_size), slice(c0, c0 + s.crop_size)
        image = context_stack(hu, np.array([z]), s.context_slices, rows, cols)[0]
        label = np.asarray(mask[z, rows, cols], dtype=bool)[None]
        image = _pad_to(image, s.crop_size, HU_CLAMP[0])
        label = _pad_to(label, s.crop_size, False)
        return torch.from_numpy(image), torch.from_numpy(label)


class ValidationDataset(Dataset):
    """Whole slices that contain mask voxels, from the given (held-out) series.

    Returns ``(image float32 (C, H, W) HU clamped, mask bool (1, H, W))``; slices of different
    series may differ in size, so batch them with :meth:`batches` (one series per batch).
    """

    def __init__(
        self,
        cache: SeriesCache,
        uids: Sequence[str],
        context_slices: int = DEFAULT_CONTEXT_SLICES,
    ) -> None:
        self.cache = cache
        self.context_slices = context_slices
        self.items: list[tuple[str, int]] = [
            (uid, z) for uid in uids for z in cache.meta(uid).mask_slices
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        uid, z = self.items[index]
        hu, mask = self.cache.arrays(uid)
        image = context_stack(hu, np.array([z]), self.context_slices)[0]
        label = np.asarray(mask[z], dtype=bool)[None]
        return torch.from_numpy(image), torch.from_numpy(label)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """Index batches of at most ``batch_size`` slices, never mixing series; this rank's
        share (every ``world_size``-th batch starting at ``rank``)."""
        out: list[list[int]] = []
        current: list[int] = []
        for i, (uid, _) in enumerate(self.items):
            if current and (len(current) == batch_size or self.items[current[0]][0] != uid):
                out.append(current)
                current = []
            current.append(i)
        if current:
            out.append(current)
        return out[rank::world_size]
