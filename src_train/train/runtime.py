"""Where and how a training run executes: processes (DDP), device, mixed precision, signals.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) a run trains with DistributedDataParallel: NCCL
on GPUs, gloo on CPUs; only rank 0 writes files and calls callbacks.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist

from src_train.devices import cpu_bf16_pays, resolve_device

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long processes of a distributed run wait for each other (e.g. while caching series).
DIST_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a distributed run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items`` (every ``world_size``-th from its rank)."""
        return list(items[self.rank :: self.world_size])

    def any(self, flag: bool, device: torch.device) -> bool:
        """True when ``flag`` is true in any process (all processes must call this; one
        all-reduce on ``device`` when distributed)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather(self, item: T) -> list[T]:
        """``item`` of every process, in rank order (``[item]`` when not distributed)."""
        if not self.active:
            return [item]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, item)
        return out

    def barrier(self) -> None:
        """Wait for every process (nothing when not distributed)."""
        if self.active:
            dist.barrier()


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=DIST_TIMEOUT)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def choose_device(name: str, d: DistInfo) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and d.active and device.index is None:
        return torch.device("cuda", d.local_rank)
    return device


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``mode`` on ``device`` (None = full precision).

    ``auto``: bf16 on GPUs that support it, else fp16 on GPUs; on CPUs bf16 where the CPU has
    native bf16 instructions and AMX (:func:`~src_train.devices.cpu_bf16_pays`: training a
    64x64 batch of 16 measured ~2x faster than fp32 on a Xeon with AMX, but 0.84x on one with
    AVX-512 bf16 and no AMX, ``benchmarks/train_throughput.py``), else full precision.
    """
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_pays() else None


def step_settings(
    amp: str, channels_last: str, device: torch.device
) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (None = full precision) and memory format a run uses on ``device``.

    ``amp`` is one of :data:`AMP_MODES`, ``channels_last`` one of :data:`ON_OFF_AUTO`.
    ``channels_last="auto"`` turns it on on GPUs, and on CPUs under bf16 autocast (measured
    faster there only, ``benchmarks/train_throughput.py``).
    """
    amp_dtype = _amp_dtype(amp, device)
    layout = channels_last == "on" or (
        channels_last == "auto" and (device.type == "cuda" or amp_dtype == torch.bfloat16)
    )
    return amp_dtype, layout


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Stoppable(Protocol):
    """Anything that can be asked to stop (the Trainer)."""

    @property
    def stop_requested(self) -> bool: ...

    def request_stop(self) -> None: ...


def install_stop_signals(
    trainer: Stoppable, on_signal: Callable[[int], None] | None = None
) -> Callable[[], None]:
    """Make SIGTERM and the first SIGINT a stop request (a second SIGINT interrupts at once).

    ``on_signal(signum)`` is called for each stop request (the CLI exits with 128 + signum).
    Returns a function that restores the previous handlers. Main thread only.
    """
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and trainer.stop_requested:
            raise KeyboardInterrupt
        log.warning("%s received: stopping after the current batch", signal.Signals(signum).name)
        if on_signal is not None:
            on_signal(signum)
        trainer.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
