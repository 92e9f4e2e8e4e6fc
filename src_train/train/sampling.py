"""Which training samples a process draws, and the pool of hard negatives.

* :class:`EpochSampler` -- the indices of one epoch this process trains on, in order, starting
  at any batch (a run stopped mid-epoch resumes at the exact sample);
* :class:`HardNegativePool` -- places where the model fired although the crop held no nodule
  (from the negative crops of earlier batches), ranked by how much it fired there; the
  dataset draws hard negatives near them (:mod:`src_train.datasets`).

Both are deterministic: the pool after an epoch depends only on what that epoch's batches
showed, merged in a fixed order, so a resumed run rebuilds exactly the pool it had.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Sampler

from src_train.datasets import NODULE, HardNegative, TrainingDataset
from src_train.train.runtime import DistInfo, ignore_stop_signals

#: Most spots the pool keeps (the ones the model fired on most).
HARD_POOL_SIZE = 512
#: A negative crop enters the pool when the model marks at least this many of its pixels.
HARD_MIN_PIXELS = 8
#: Each epoch an old spot's weight is multiplied by this (spots the model no longer fires on
#: fade out; new ones replace them).
HARD_DECAY = 0.5
#: Spots closer than this (pixels, in-plane, same slice) count as one (the heavier is kept).
HARD_MERGE_PX = 16


class EpochSampler(Sampler[int]):
    """Dataset indices of one epoch for one process: ``rank::world_size`` of ``0..n-1`` (padded
    with the first indices so every process gets as many, as ``DistributedSampler`` does,
    without shuffling: the dataset draws per ``(seed, epoch, index)``), from batch
    ``start_batch`` on."""

    def __init__(
        self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, start_batch: int = 0
    ) -> None:
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start_batch = int(start_batch)

    @property
    def per_process(self) -> int:
        """Indices each process sees in a whole epoch."""
        return math.ceil(self.n / self.world_size)

    @property
    def batches(self) -> int:
        """Batches of a whole epoch (the first ``start_batch`` included)."""
        return math.ceil(self.per_process / self.batch_size)

    def indices(self) -> list[int]:
        """This process's indices of the whole epoch, in order."""
        total = self.per_process * self.world_size
        padded = list(range(self.n)) + list(range(total - self.n))
        return padded[self.rank :: self.world_size]

    def batch_indices(self, batch: int) -> list[int]:
        """Dataset indices of batch ``batch`` (0-based, counted from the epoch's start)."""
        return self.indices()[batch * self.batch_size : (batch + 1) * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(self.per_process - self.start_batch * self.batch_size, 0)


#: A pool entry: a spot and how many pixels the model marked there.
WeightedSpot = tuple[HardNegative, float]


@dataclass
class HardNegativePool:
    """Where the model fired without a nodule (see the module docstring).

    Attributes:
        spots: the pool the current epoch draws from, heaviest first.
        found: spots of the current epoch so far (merged into :attr:`spots` at its end).
        size: :data:`HARD_POOL_SIZE`.
    """

    spots: list[WeightedSpot] = field(default_factory=list)
    found: list[WeightedSpot] = field(default_factory=list)
    size: int = HARD_POOL_SIZE

    def record(self, spot: HardNegative, fired_pixels: float) -> None:
        """Note a negative crop (no nodule voxel) on which the model marked pixels."""
        if fired_pixels >= HARD_MIN_PIXELS:
            self.found.append((tuple(int(v) for v in spot), float(fired_pixels)))  # type: ignore[arg-type]

    def note_batch(
        self,
        dataset: TrainingDataset,
        indices: Sequence[int],
        logits: torch.Tensor,
        label: torch.Tensor,
    ) -> None:
        """Record the batch's negative crops (drawn without a nodule, and showing no nodule
        voxel) on which the model fired: ``logits`` and ``label`` ``(N, 1, H, W)``, crop
        ``i`` being ``dataset``'s sample ``indices[i]``."""
        fired = ((logits > 0) & ~(label > 0.5)).sum(dim=(1, 2, 3)).cpu().tolist()
        has_nodule = (label > 0.5).any(dim=3).any(dim=2).any(dim=1).cpu().tolist()
        for index, count, nodule in zip(indices, fired, has_nodule, strict=True):
            spec = dataset.spec(index)
            if spec.kind != NODULE and not nodule:
                self.record((spec.series, spec.index, spec.row0, spec.col0), count)

    def end_epoch(self, found_elsewhere: Sequence[WeightedSpot] = ()) -> None:
        """Merge this epoch's spots (and other processes' ``found_elsewhere``) into the pool:
        old weights decay, nearby spots merge, the heaviest :attr:`size` stay."""
        merged: dict[tuple[int, int, int, int], WeightedSpot] = {}
        candidates = [(spot, weight * HARD_DECAY) for spot, weight in self.spots]
        candidates += list(self.found) + [(tuple(s), float(w)) for s, w in found_elsewhere]  # type: ignore[misc]
        for spot, weight in candidates:
            series, index, row0, col0 = spot
            key = (series, index, row0 // HARD_MERGE_PX, col0 // HARD_MERGE_PX)
            kept = merged.get(key)
            if kept is None or (weight, spot) > (kept[1], kept[0]):
                merged[key] = (spot, weight)
        ranked = sorted(merged.values(), key=lambda item: (-item[1], item[0]))
        self.spots = ranked[: self.size]
        self.found = []

    @property
    def locations(self) -> list[HardNegative]:
        """The pool's spots, heaviest first (what the dataset draws from)."""
        return [spot for spot, _ in self.spots]

    def state(self) -> dict[str, list]:
        """Plain lists for a checkpoint."""
        return {
            "spots": [[*spot, weight] for spot, weight in self.spots],
            "found": [[*spot, weight] for spot, weight in self.found],
        }

    @classmethod
    def from_state(cls, state: dict[str, list] | None) -> HardNegativePool:
        """Inverse of :meth:`state` (an empty pool for None)."""
        pool = cls()
        if state:
            pool.spots = [(_spot(row), float(row[4])) for row in state.get("spots", [])]
            pool.found = [(_spot(row), float(row[4])) for row in state.get("found", [])]
        return pool


def _spot(row: Sequence[float]) -> HardNegative:
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def epoch_loader(
    dataset: TrainingDataset,
    batch_size: int,
    num_workers: int,
    dist: DistInfo,
    start_batch: int = 0,
    *,
    pin_memory: bool = False,
) -> tuple[DataLoader, EpochSampler]:
    """One epoch's loader for this process from batch ``start_batch`` on (the dataset's epoch
    and hard negatives set first), and its sampler; workers leave stop signals to the main
    process."""
    sampler = EpochSampler(len(dataset), batch_size, dist.rank, dist.world_size, start_batch)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        worker_init_fn=ignore_stop_signals,
    )
    return loader, sampler
