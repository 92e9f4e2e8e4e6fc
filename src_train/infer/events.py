"""What a ``lunaseg infer`` run tells the outside world: its plan, progress events, its result.

:class:`InferPlan` is what a run is about to do (known before the first series), a
:class:`SeriesReport` or :class:`SeriesFailure` what became of one series, and
:class:`InferRunSummary` the outcome. On the way the run emits an :class:`InferEvent` when it
starts, after each series (done or failed) and when it ends. Each carries the position in this
process's part (done / total, skipped, failed), the run's position over the whole data set
(series complete in the output folder, all parts together), the rate of the series this
process computed (series per minute) and the time left for its part at that rate. The CLI
prints them as lines or, with ``--progress-json``, as one JSON object per line for the viewer.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src_train.evaluate import FrocResult
from src_train.infer.outputs import SeriesOutputs
from src_train.infer.parts import Part
from src_train.infer.runner import InferenceSettings
from src_train.model import ModelConfig

#: Seconds per minute (rates are shown per minute).
SECONDS_PER_MINUTE = 60.0

#: Kinds of :class:`InferEvent`.
EVENT_KINDS = ("start", "series", "failed", "end")


@dataclass(frozen=True)
class InferEvent:
    """One step of a run.

    Attributes:
        kind: ``"start"`` (before the first series), ``"series"`` (one written),
            ``"failed"`` (one failed; ``message`` has the reason), ``"end"``.
        series_uid: the series of a ``series``/``failed`` event.
        part: ``"I/N"``, this process's part (1-based).
        done, total: series of this part complete (skipped ones included) and in it.
        skipped: series of this part found complete at the start (not recomputed).
        failed: series of this part that failed so far.
        run_done, run_total: series of the whole run complete in the output folder (every
            part's) and in it.
        series_per_minute: series this process computed per minute of wall time (NaN before
            the first).
        eta_s: seconds left for this part at that rate (NaN before the first series).
        seconds: wall time of this series (``series``) or of the run so far.
        n_candidates: candidates of this series (``series``) or in the tables (``end``).
        message: a line for people.
        time: wall clock, seconds since the epoch.
    """

    kind: str
    series_uid: str = ""
    part: str = "1/1"
    done: int = 0
    total: int = 0
    skipped: int = 0
    failed: int = 0
    run_done: int = 0
    run_total: int = 0
    series_per_minute: float = math.nan
    eta_s: float = math.nan
    seconds: float = 0.0
    n_candidates: int = 0
    message: str = ""
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        """One line of JSON (NaN becomes null)."""
        data = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }
        return json.dumps(data, separators=(",", ":"))

    def progress_text(self) -> str:
        """``[3/10 of part 1/2, 7/20 in all] 4.2 series/min, ETA 0:01:40``."""
        where = f"{self.done}/{self.total}"
        if self.part != "1/1":
            where += f" of part {self.part}, {self.run_done}/{self.run_total} in all"
        rate = (
            f"{self.series_per_minute:.1f} series/min, ETA {format_seconds(self.eta_s)}"
            if math.isfinite(self.series_per_minute)
            else "rate pending"
        )
        extra = f", {self.failed} failed" if self.failed else ""
        return f"[{where}{extra}] {rate}"


EventCallback = Callable[[InferEvent], None]


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    whole = round(max(seconds, 0.0))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class RateMeter:
    """Series per minute and time left for one process's part.

    The rate counts only series this process computed (skipped ones cost nothing), over the
    wall time since it started computing, so loading, writing and tuning are included.
    """

    def __init__(self, total: int, done: int, clock: Callable[[], float] = time.perf_counter):
        self.total = total
        self.done = done
        self.failed = 0
        self.computed = 0
        self._clock = clock
        self._start = clock()

    def series_done(self) -> None:
        """One more series written."""
        self.done += 1
        self.computed += 1

    def series_failed(self) -> None:
        """One more series failed (it counts in the rate: its time was spent)."""
        self.failed += 1
        self.computed += 1

    @property
    def elapsed(self) -> float:
        """Seconds since the meter started."""
        return self._clock() - self._start

    @property
    def series_per_minute(self) -> float:
        """Series computed (done or failed) per minute; NaN before the first."""
        if self.computed == 0 or self.elapsed <= 0:
            return math.nan
        return self.computed * SECONDS_PER_MINUTE / self.elapsed

    @property
    def eta_s(self) -> float:
        """Seconds until the part's remaining series are computed at the current rate."""
        rate = self.series_per_minute
        left = self.total - self.done - self.failed
        if left <= 0:
            return 0.0
        return left * SECONDS_PER_MINUTE / rate if math.isfinite(rate) and rate > 0 else math.nan


@dataclass(frozen=True)
class InferPlan:
    """What :func:`~src_train.commands.infer_folder.infer_to_folder` is about to do (before any
    series).

    Attributes:
        series: ``(uid, path)`` of every series of the run (all parts), in order.
        part: this process's part of them.
        todo: ``(uid, path)`` of this part's series to compute, in order.
        skipped: this part's series already complete in the output folder (not recomputed).
        out_dir: the output folder.
        candidates_csv: the candidates of every series (LUNA16 submission + extra columns).
        series_list: the series of the run, one UID per line (read by ``lunaseg eval``).
        checkpoint: the model checkpoint.
        checkpoint_sha1: its SHA-1.
        model_config: the checkpoint's model configuration.
        annotations_path: the annotations the results are compared with; None without truth.
        settings_key: the key of the run's settings (``OUT/run.json``) every record carries.
        notes: things the user should know (e.g. the series selection changed).
    """

    series: list[tuple[str, Path]]
    part: Part
    todo: list[tuple[str, Path]]
    skipped: list[str]
    out_dir: Path
    candidates_csv: Path
    series_list: Path
    checkpoint: Path
    checkpoint_sha1: str
    model_config: ModelConfig
    annotations_path: Path | None
    settings_key: str
    notes: list[str] = field(default_factory=list)

    @property
    def mine(self) -> int:
        """Series of this part (to compute and skipped)."""
        return len(self.todo) + len(self.skipped)

    def outputs(self, uid: str) -> SeriesOutputs:
        """The volume files of series ``uid``."""
        return SeriesOutputs.for_series(self.out_dir, uid)

    def describe(self) -> str:
        """One line: the run, this part, what is left."""
        line = f"{len(self.series)} series"
        if self.part.is_split:
            line += f"; {self.part.describe()}: {self.mine} series"
        return line + f"; {len(self.skipped)} already complete (skipped), {len(self.todo)} to run"


@dataclass(frozen=True)
class SeriesReport:
    """One processed series of :func:`~src_train.commands.infer_folder.infer_to_folder`.

    Attributes:
        series_uid: the series.
        n_slices: its slices (the CT's first array axis).
        seconds: wall time of :func:`~src_train.infer.runner.run_inference` on it.
        slices_per_second: slices per second of model time.
        settings: how the model ran.
        n_candidates: candidates found in it.
        outputs: the files written for it (``outputs.error`` only when ``voxel_metrics`` is set).
        voxel_metrics: :func:`~src_train.metrics.voxel_metrics` of the mask against the masks
            generated from the annotations; None without truth.
        left_out: less probable candidates left out by the detector's ``max_candidates``.
    """

    series_uid: str
    n_slices: int
    seconds: float
    slices_per_second: float
    settings: InferenceSettings | None
    n_candidates: int
    outputs: SeriesOutputs
    voxel_metrics: dict[str, float] | None = None
    left_out: int = 0

    def describe(self) -> str:
        """One line for logs and the CLI."""
        how = self.settings.describe() if self.settings else ""
        line = (
            f"{self.series_uid}: {self.n_slices} slices in {self.seconds:.1f} s "
            f"({self.slices_per_second:.1f} slices/s, {how}), "
            f"{self.n_candidates} candidates"
        )
        if self.left_out:
            line += f" (the most probable; {self.left_out} less probable left out)"
        if self.voxel_metrics is not None:
            m = self.voxel_metrics
            line += (
                f"; voxels vs generated masks: precision {m['precision']:.3f}, "
                f"recall {m['recall']:.3f}, Dice {m['dice']:.3f}"
            )
        return line


@dataclass(frozen=True)
class SeriesFailure:
    """A series that could not be processed: its UID and the reason, in one line."""

    series_uid: str
    reason: str

    def describe(self) -> str:
        """``<uid>: <reason>``."""
        return f"{self.series_uid}: {self.reason}"


@dataclass(frozen=True)
class InferRunSummary:
    """Outcome of :func:`~src_train.commands.infer_folder.infer_to_folder`.

    Attributes:
        plan: what was run (series, part, files, model, annotations).
        series: one report per series computed by this call, in processing order.
        failures: this call's series that failed, with their reasons.
        not_attempted: this part's series left untried (the disk filled up).
        incomplete: series of the whole run still without a complete record at the end
            (failed, or left to another part); the tables are written only when it is empty.
        n_candidates: candidates in ``plan.candidates_csv`` (0 while the run is incomplete).
        froc: nodule recall, FROC and CPM of those candidates against the annotated nodules
            (with a diameter) of the run's series; None without truth or while incomplete.
        seconds: wall time of the whole call.
    """

    plan: InferPlan
    series: list[SeriesReport]
    failures: list[SeriesFailure]
    not_attempted: list[str]
    incomplete: list[str]
    n_candidates: int
    froc: FrocResult | None
    seconds: float

    @property
    def candidates_csv(self) -> Path:
        """The candidates file (written only when :attr:`complete`)."""
        return self.plan.candidates_csv

    @property
    def complete(self) -> bool:
        """True when every series of the run is done and the tables are written."""
        return not self.incomplete

    @property
    def ok(self) -> bool:
        """True when nothing of this call failed or was left untried."""
        return not self.failures and not self.not_attempted
