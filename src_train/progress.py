"""How long work reports progress and learns that it should stop.

Core functions that take a while accept ``progress(done, total, message)`` (called after each
step) and ``should_stop()`` (polled between steps; True raises :class:`CancelledError`). The
viewer wraps them in a worker thread with a Cancel button, the CLI in a progress line.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from src_train.errors import CancelledError

T = TypeVar("T")

#: ``progress(done, total, message)``: ``done`` of ``total`` steps finished.
Progress = Callable[[int, int, str], None]

#: ``should_stop()``: True when the caller asks the work to stop at the next step.
ShouldStop = Callable[[], bool]


def check_stop(should_stop: ShouldStop | None, what: str) -> None:
    """Raise :class:`CancelledError` ("<what> stopped on request.") when ``should_stop()``."""
    if should_stop is not None and should_stop():
        raise CancelledError(f"{what} stopped on request.")


def emit(progress: Progress | None, done: int, total: int, message: str) -> None:
    """Call ``progress`` when one was given."""
    if progress is not None:
        progress(done, total, message)


def run_steps(
    steps: Generator[Any, None, T],
    progress: Progress | None,
    should_stop: ShouldStop | None,
    what: str,
    unit: str = "steps",
) -> T:
    """Drive a generator of progress events to its return value.

    Each event (anything with ``done``, ``total`` and ``message``) goes to ``progress``; after
    each one ``should_stop()`` is polled and, when True, the generator is closed (its cleanup
    runs) and :class:`CancelledError` is raised naming ``what`` and how far it got (in
    ``unit``).
    """
    try:
        while True:
            event = next(steps)
            emit(progress, event.done, event.total, event.message)
            if should_stop is not None and should_stop():
                steps.close()
                raise CancelledError(f"{what} stopped after {event.done} of {event.total} {unit}.")
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
