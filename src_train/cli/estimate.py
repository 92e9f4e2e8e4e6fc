"""A time estimate for a long job, printed once its first epoch is timed.

:class:`EpochClock` reads a trainer's progress events (each carries its wall-clock ``time``):
the first ``batch`` event starts the clock, the first ``validation`` event splits the epoch
into training and validation, and the first ``epoch`` event ends it. The estimate is then
training seconds x epochs left + validation seconds x validations left (+ whole runs left, for
a comparison, each assumed to cost as much as the timed one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the events are only read; importing the trainers here would be slow
    from src_train.train.events import ProgressEvent

#: Seconds in a minute and an hour, for the estimate's wording.
MINUTE_S = 60.0
HOUR_S = 3600.0


def human_duration(seconds: float) -> str:
    """``40 s``, ``12 min``, ``3 h 10 min``."""
    if seconds < MINUTE_S:
        return f"{seconds:.0f} s"
    if seconds < HOUR_S:
        return f"{seconds / MINUTE_S:.0f} min"
    hours, rest = divmod(seconds, HOUR_S)
    return f"{hours:.0f} h {rest / MINUTE_S:.0f} min"


@dataclass
class EpochClock:
    """Times the first epoch a job trains (see the module docstring).

    Args:
        validated: whether an epoch (1-based) is followed by a validation.
    """

    validated: Callable[[int], bool]
    started: float | None = None
    validation_started: float | None = None
    reported: bool = False

    def estimate(self, event: ProgressEvent, runs_after: int = 0) -> str | None:
        """The estimate line once ``event`` ends the first timed epoch; None before and after.

        ``runs_after``: further runs of the same cost after this one (a comparison's).
        """
        if self.reported:
            return None
        if event.kind == "batch" and self.started is None:
            self.started = event.time
        elif event.kind == "validation" and self.validation_started is None:
            self.validation_started = event.time
        elif event.kind == "epoch" and self.started is not None:
            self.reported = True
            return self._line(self.started, event, runs_after)
        return None

    def _line(self, started: float, event: ProgressEvent, runs_after: int) -> str:
        split = self.validation_started or event.time
        train_s, val_s = split - started, event.time - split
        epoch, epochs = event.epoch, event.epochs
        later = range(epoch + 1, epochs + 1)
        left = train_s * len(later) + val_s * sum(1 for e in later if self.validated(e))
        whole_run = train_s * epochs + val_s * sum(
            1 for e in range(1, epochs + 1) if self.validated(e)
        )
        left += runs_after * whole_run
        runs = f" and {runs_after} more run(s) like it" if runs_after else ""
        parts = (
            f" (training {train_s:.1f} s, validation {val_s:.1f} s)"
            if self.validation_started is not None
            else ""  # a trainer that reports no validation steps: one figure
        )
        return (
            f"estimate: epoch {epoch} took {human_duration(train_s + val_s)}{parts}; the "
            f"{epochs - epoch} epoch(s) left{runs} need about {human_duration(left)} more on "
            "this machine"
        )
