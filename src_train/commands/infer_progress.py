"""How an inference run reports as it goes (:func:`~.infer_folder.infer_to_folder`): the
events a front end shows, and what a failed series leaves behind (nothing of its outputs; a
failure record saying why)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Sequence

from src_train.infer.events import EventCallback, InferEvent, InferPlan, RateMeter
from src_train.infer.outputs import discard_volumes
from src_train.infer.records import RecordIndex, record_path, write_failure

log = logging.getLogger(__name__)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it came from says the disk is full."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:  # a chain may loop back
        chain.append(current)
        current = current.__cause__ or current.__context__
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC) or os.strerror(errno.ENOSPC) in str(e)
        for e in chain
    )


def failure_reason(exc: BaseException) -> str:
    """One line: the error's type and message (a LunaSegError's message names file and fix)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def discard_series(plan: InferPlan, uid: str) -> None:
    """Remove what a failed series left (its record first): nothing of it is trusted."""
    record_path(plan.out_dir, uid).unlink(missing_ok=True)
    discard_volumes(plan.outputs(uid))


def part_name(plan: InferPlan) -> str:
    """``I/N``: this process's part of the run."""
    return f"{plan.part.part_id + 1}/{plan.part.num_parts}"


def record_failure(plan: InferPlan, uid: str, exc: BaseException) -> str:
    """Log a failed series, remove what it left, write its failure record; its reason."""
    reason = failure_reason(exc)
    log.error("series %s failed: %s", uid, reason, exc_info=log.isEnabledFor(logging.DEBUG))
    discard_series(plan, uid)
    write_failure(plan.out_dir, uid, reason, part_name(plan))
    return reason


def event_sender(
    on_event: EventCallback | None,
    plan: InferPlan,
    uids: Sequence[str],
    index: RecordIndex,
    meter: RateMeter,
) -> Callable[..., None]:
    """``event(kind, uid, seconds, n, message)``: an :class:`InferEvent` with the run's
    progress to ``on_event`` (nothing when None)."""

    def event(
        kind: str, uid: str = "", seconds: float = 0.0, n: int = 0, message: str = ""
    ) -> None:
        if on_event is None:
            return
        run_done = len(uids) - len(index.incomplete(uids))
        on_event(
            InferEvent(
                kind=kind,
                series_uid=uid,
                part=part_name(plan),
                done=meter.done,
                total=meter.total,
                skipped=len(plan.skipped),
                failed=meter.failed,
                run_done=run_done,
                run_total=len(uids),
                series_per_minute=meter.series_per_minute,
                eta_s=meter.eta_s,
                seconds=seconds,
                n_candidates=n,
                message=message,
            )
        )

    return event
