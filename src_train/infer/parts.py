"""Which series one process of a run takes: parts of a data set, torchrun's ranks, its GPU.

A run over many series can be split into ``N`` parts that any scheduler starts at once, on one
machine or many sharing the output folder (nnU-Net's ``-num_parts/-part_id``). Part ``I`` takes
the series at positions ``I, I + N, I + 2N, ...`` of the run's sorted series list (round robin,
so every part gets series from every subset). Under ``torchrun`` (``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set) each process is one part and runs on GPU ``LOCAL_RANK`` when the device is
CUDA; no process group is formed, the parts never wait for each other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from src_train.errors import ConfigError

T = TypeVar("T")

#: Environment variables ``torchrun`` sets in each process it starts.
RANK_ENV = "RANK"
WORLD_SIZE_ENV = "WORLD_SIZE"
LOCAL_RANK_ENV = "LOCAL_RANK"


@dataclass(frozen=True)
class Part:
    """This process's share of a run.

    Attributes:
        part_id: which part, ``0 <= part_id < num_parts``.
        num_parts: how many parts the series are split into.
        local_rank: ``LOCAL_RANK`` under torchrun (the GPU of this process); None otherwise.
    """

    part_id: int = 0
    num_parts: int = 1
    local_rank: int | None = None

    def __post_init__(self) -> None:
        if self.num_parts < 1:
            raise ConfigError(f"--num-parts must be at least 1; got {self.num_parts}.")
        if not 0 <= self.part_id < self.num_parts:
            raise ConfigError(
                f"--part-id {self.part_id} is outside 0..{self.num_parts - 1} "
                f"(--num-parts {self.num_parts}); give a part id from 0 to {self.num_parts - 1}."
            )

    @property
    def is_split(self) -> bool:
        """True when the series are shared with other parts."""
        return self.num_parts > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This part's items of a sorted sequence: positions ``part_id, part_id + N, ...``."""
        return list(items[self.part_id :: self.num_parts])

    def describe(self) -> str:
        """``part 2/4`` (1-based for people) or ``all series``."""
        return f"part {self.part_id + 1}/{self.num_parts}" if self.is_split else "all series"


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"Environment variable {name}={value!r} is not an integer.") from None


def resolve_part(
    num_parts: int | None, part_id: int | None, env: Mapping[str, str] | None = None
) -> Part:
    """The part this process runs, from the options or else from torchrun's environment.

    ``--num-parts``/``--part-id`` win; without them ``WORLD_SIZE``/``RANK`` (torchrun) give the
    part and ``LOCAL_RANK`` the GPU. Options that contradict the environment, one option
    without the other, or a part id outside ``0..N-1`` raise :class:`ConfigError`.
    """
    environ = os.environ if env is None else env
    world = _env_int(environ, WORLD_SIZE_ENV)
    rank = _env_int(environ, RANK_ENV)
    local_rank = _env_int(environ, LOCAL_RANK_ENV)
    if num_parts is None and part_id is None:
        if world is not None and world > 1:
            return Part(rank or 0, world, local_rank)
        return Part()
    if num_parts is None or part_id is None:
        given = "--num-parts" if num_parts is not None else "--part-id"
        missing = "--part-id" if num_parts is not None else "--num-parts"
        raise ConfigError(f"{given} needs {missing} too (e.g. --num-parts 4 --part-id 0).")
    if world is not None and world > 1 and (world, rank) != (num_parts, part_id):
        raise ConfigError(
            f"--num-parts {num_parts} --part-id {part_id} contradict torchrun's "
            f"WORLD_SIZE={world} RANK={rank}; drop the options under torchrun (each process "
            "takes its rank's part) or run without torchrun."
        )
    return Part(part_id, num_parts, local_rank if world is not None and world > 1 else None)


def device_for_part(device: str, part: Part, cuda_available: bool) -> str:
    """The device this part runs on: under torchrun ``auto``/``cuda`` become ``cuda:LOCAL_RANK``.

    An explicit ``cuda:N`` or ``cpu`` is kept; without CUDA ``auto`` stays ``auto`` (the CPU).
    """
    name = device.strip().lower()
    if part.local_rank is None or not cuda_available or name not in ("auto", "cuda"):
        return device
    return f"cuda:{part.local_rank}"
