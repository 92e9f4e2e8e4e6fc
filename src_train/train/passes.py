"""Whole-series passes of a CT run (validation, the second stage's examples), as its processes
share them: progress events, stop requests and the threads the runner may use."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from src_train.cache import SeriesCache
from src_train.errors import CancelledError
from src_train.infer.runner import InferenceOptions, InferenceProgress
from src_train.infer.tuner import TunerCache
from src_train.train.runtime import DistInfo
from src_train.train.validation import SeriesValidation, iter_validate_series


@dataclass
class SeriesPasses:
    """Runs generators of inference progress for a training run.

    Attributes:
        cache: the run's series cache.
        options: inference options of validation and the second stage.
        tuners: inference tuning shared by the run's passes.
        dist: this process's place in the run.
        emit: ``emit(kind, **fields)``, the run's progress events.
        stop_requested: polled between batches.
        threads: threads the runner may use during a pass (None: leave torch's setting).
    """

    cache: SeriesCache
    options: InferenceOptions
    tuners: TunerCache
    dist: DistInfo
    emit: Callable[..., None]
    stop_requested: Callable[[], bool]
    threads: int | None = None

    def drive(
        self,
        steps: Generator[InferenceProgress, None, Any],
        kind: str,
        *,
        epoch: int = 0,
        offset: int = 0,
        total: int | None = None,
    ) -> Any:
        """Run a generator of inference progress, emitting ``kind`` events (``offset`` +
        slices done of ``total``, default the generator's own); returns its value. A stop
        request raises :class:`CancelledError` (checked between batches when not distributed;
        distributed runs agree on stops between generators)."""
        threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)  # the runner measures these and one
        try:
            while True:
                step = next(steps)
                if not self.dist.active and self.stop_requested():
                    steps.close()
                    raise CancelledError(f"stopped during {kind}")
                self.emit(
                    kind,
                    epoch=epoch,
                    batch=offset + step.done,
                    batches=step.total if total is None else total,
                    message=step.message,
                )
        except StopIteration as finished:
            return finished.value
        finally:
            torch.set_num_threads(threads)

    def validate_all(self, uids: Sequence[str], model: nn.Module) -> list[SeriesValidation]:
        """``model`` over every series of ``uids`` (shared among processes, gathered in rank
        order); :class:`CancelledError` on a stop request."""
        outcomes = [
            self.drive(
                iter_validate_series(self.cache, uid, model, self.options, self.tuners),
                "validation",
            )
            for uid in self.dist.share(uids)
        ]
        return [o for part in self.dist.gather(outcomes) for o in part]
