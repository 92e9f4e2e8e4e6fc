"""Picking CPU threads, memory format and batch size by timing real batches.

A :class:`Tuner` searches one configuration space while inference runs (every batch it times is
real work). A :class:`TunerCache` holds the tuners of one caller (a ``lunaseg infer`` run, one
Inference widget): series of similar slice area share a choice, and a search a short series
left unfinished goes on with the next. Nothing is kept per process: the caller owns the cache.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from src_train.infer.backends import EngineCache

#: Batch sizes the CPU tuner may try, ascending; it stops at the first that is not faster.
CPU_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8)

#: Batch sizes the CUDA tuner may try, ascending.
CUDA_BATCH_SIZES: tuple[int, ...] = (8, 16, 32, 64)

#: A larger batch must be at least this much faster per slice to be preferred.
TUNE_MIN_GAIN = 0.03

#: How a batch runs: PyTorch with channels-last (True) or NCHW (False), or a CPU runtime's name
#: (:mod:`.backends`).
Execution = bool | str

#: A tuned configuration: ``(cpu threads, execution, batch_size)``.
RunConfig = tuple[int, Execution, int]


class Tuner:
    """Chooses CPU threads, execution (memory format, or a CPU runtime) and batch size by
    timing real batches of the series.

    A coordinate search over the three axes in that order: each option of an axis is tried with
    the best options found so far on the others; for batch sizes (ascending) the search stops
    at the first size that is not faster. Each configuration runs twice and the second run is
    timed (the first builds kernels); a candidate must be :data:`TUNE_MIN_GAIN` faster per
    slice to win. Every batch it runs is real work, so tuning costs only the slower
    configurations' extra time. Threads matter on a shared machine: when other processes hold
    the cores, one thread can be several times faster than two that wait for each other.
    """

    def __init__(
        self, threads: Sequence[int], formats: Sequence[Execution], batch_sizes: Sequence[int]
    ) -> None:
        self._axes: list[list[int] | list[Execution]] = [
            list(threads),
            list(formats),
            list(batch_sizes),
        ]
        self.best: RunConfig = (threads[0], formats[0], batch_sizes[0])
        self._seconds_per_slice: dict[RunConfig, float] = {}
        self._axis = 0
        self._option = 0
        self._runs = 0
        self._current = self.best
        self.done = False
        self._step()

    def _with(self, axis: int, value: int | Execution) -> RunConfig:
        config: list[int | Execution] = list(self.best)
        config[axis] = value
        execution = config[1]
        if not isinstance(execution, (bool, str)):
            execution = bool(execution)
        return (int(config[0]), execution, int(config[2]))

    def _step(self) -> None:
        """Move to the next configuration to measure; ``done`` when none is left."""
        while self._axis < len(self._axes):
            options = self._axes[self._axis]
            if self._option >= len(options):
                self._axis += 1
                self._option = 0
                continue
            config = self._with(self._axis, options[self._option])
            if config in self._seconds_per_slice:
                self._option += 1
                continue
            self._current = config
            self._runs = 0
            return
        self.done = True

    def propose(self) -> RunConfig:
        """Configuration for the next batch."""
        return self.best if self.done else self._current

    def cap(self, batch_size: int) -> None:
        """Stop tuning and use ``batch_size`` (after an out-of-memory error)."""
        threads, fmt, _ = self.propose()
        self.best = (threads, fmt, batch_size)
        self.done = True

    def report(self, config: RunConfig, n_slices: int, seconds: float) -> None:
        """Record one batch's time; advances the search after each timed run."""
        if self.done or config != self._current:
            return
        self._runs += 1
        if self._runs < 2:
            return
        per_slice = seconds / max(n_slices, 1)
        self._seconds_per_slice[config] = per_slice
        best = self._seconds_per_slice.get(self.best)
        if best is None or per_slice < best * (1 - TUNE_MIN_GAIN):
            self.best = config
            self._option += 1
        elif self._axis == len(self._axes) - 1:
            self._option = len(self._axes[self._axis])  # larger batches: stop at the first loss
        else:
            self._option += 1
        self._step()

    def timings(self) -> dict[RunConfig, float]:
        """Seconds per slice measured so far, by configuration."""
        return dict(self._seconds_per_slice)


class TunerCache:
    """The tuners of one caller, by key (device, precision, slice-area class, model...), and
    the models it exported for CPU runtimes (:class:`~src_train.infer.backends.EngineCache`)."""

    def __init__(self) -> None:
        self._tuners: dict[Hashable, Tuner] = {}
        self.engines = EngineCache()

    def get(
        self,
        key: Hashable,
        threads: Sequence[int],
        formats: Sequence[Execution],
        batch_sizes: Sequence[int],
    ) -> Tuner:
        """The tuner for ``key``, made with these options on first use."""
        tuner = self._tuners.get(key)
        if tuner is None:
            tuner = self._tuners[key] = Tuner(threads, formats, batch_sizes)
        return tuner

    def __len__(self) -> int:
        return len(self._tuners)
