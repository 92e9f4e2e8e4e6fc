"""A whole inference run: series of a data folder in, volumes and ``candidates.csv`` out.

:func:`infer_to_folder` is what ``lunaseg infer`` does, usable from any front end. For each
series ``OUT`` gets, in the CT's geometry: ``<uid>_prob.mhd`` (uint8 ``round(p * 255)``),
``<uid>_pred.mhd`` (the mask, uint8 0/1) and, where annotations exist, ``<uid>_error.mhd``
(1 TP, 2 FN, 3 FP against masks built from the annotations), then its record ``<uid>.json``
(candidates, settings key, file sizes and SHA-1s; see :mod:`.records`). When every series of
the run is complete, ``candidates.csv`` (LUNA16 submission + extra columns) and
``seriesuids.csv`` (the series, for ``lunaseg eval``) are assembled from the records and, with
annotations, the run is scored (nodule recall, FROC, CPM).

A run survives a kill and can be shared out: run again on the same ``OUT`` and the complete
series are skipped; ``--num-parts N --part-id I`` (or torchrun's ranks) take 1/N of the series
each (:mod:`.parts`); a series that fails is reported and the others go on.

The steps of a run, in order: :func:`choose_scope` (which series, scored against what),
:func:`run_settings` (what shapes the outputs, recorded in ``OUT/run.json``), :func:`plan_run`
(this process's part, what is complete), then the loop over the series left.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from src_train.commands.infer_progress import (
    event_sender,
    is_disk_full,
    part_name,
    record_failure,
)
from src_train.ct import SERIES_SUFFIXES, is_series_path, load_ct, series_uid_of
from src_train.errors import (
    CancelledError,
    CheckpointError,
    ConfigError,
    SeriesNotFoundError,
    SeriesReadError,
)
from src_train.evaluate import Candidate as FrocCandidate
from src_train.evaluate import FrocResult, evaluate_froc
from src_train.infer.detector import (
    Detector,
    check_ct_input,
    load_detector,
    run_detection,
    with_threshold,
)
from src_train.infer.events import (
    EventCallback,
    InferPlan,
    InferRunSummary,
    RateMeter,
    SeriesFailure,
    SeriesReport,
)
from src_train.infer.ground_truth import TruthDefinition
from src_train.infer.outputs import write_series_volumes
from src_train.infer.parts import device_for_part, resolve_part
from src_train.infer.records import (
    RecordIndex,
    RunManifest,
    SeriesRecord,
    assemble_tables,
    describe_files,
    open_run,
    read_failures,
    record_path,
    remove_tables,
    write_record,  # re-exported: lunaseg eval's series list, written by .records
)
from src_train.infer.runner import InferenceOptions
from src_train.infer.tuner import TunerCache
from src_train.luna import LunaFolder, find_luna_root, is_luna_folder
from src_train.model import Checkpoint, file_sha1, load_checkpoint
from src_train.options import option
from src_train.progress import Progress, ShouldStop, check_stop
from src_train.records.candidate import CandidateNodule
from src_train.records.contract import contract_of_checkpoint
from src_train.records.infer_files import CANDIDATES_CSV, SERIES_LIST_NAME
from src_train.records.threshold import checkpoint_threshold
from src_train.records.truth import SPLITS, scoring_truth, select_split
from src_train.reviews import ReviewedFolder

log = logging.getLogger(__name__)

#: The demo checkpoint shipped in the package (default of ``lunaseg infer`` and the viewer).
DEMO_CHECKPOINT: Path = Path(__file__).resolve().parent.parent / "assets" / "demo_unet.pt"

#: Fields of :class:`InferenceOptions` that choose how the model runs, not what it outputs
#: (beyond float rounding): parts of one run may differ in them (CPU here, GPU there).
EXECUTION_FIELDS = ("device", "batch_size", "channels_last", "num_threads", "engine")

#: Output-shaping options added after the first ``run.json`` format, with their default: one at
#: its default is left out of the recorded settings, so a folder written before it still resumes.
LATER_FIELDS = {"mirror": False}


@dataclass(frozen=True)
class InferRunOptions:
    """What ``lunaseg infer`` runs (every field is one of its options).

    Attributes:
        checkpoint: model checkpoint; None = :data:`DEMO_CHECKPOINT`.
        series: only these series UIDs (None: every series).
        limit: only the first N series.
        with_truth: compare with the annotations when the data has them.
        reviewed: compare with the reviewed nodules instead (rejected dropped, added included).
        overwrite: recompute every series (of this part) and replace the run's settings.
        num_parts, part_id: process only part ``part_id`` of ``num_parts`` (round robin over
            the sorted series); None = torchrun's ``WORLD_SIZE``/``RANK``, else all series.
        inference: how each series is run (device, precision, threshold, candidates...).
    """

    checkpoint: str | None = option(
        None, help="model checkpoint (default: the shipped demo U-Net)", metavar="PT"
    )
    series: tuple[str, ...] | None = option(None, help="only these series", metavar="UID")
    limit: int | None = option(None, help="only the first N series", metavar="N")
    with_truth: bool = option(True, help="skip the ground-truth comparison", flag="--no-truth")
    reviewed: bool = option(False, help="compare with the reviewed nodules (DATA/reviews/)")
    split: str = option(
        "all",
        help="series of the checkpoint's run to process: test (no choice looked at them), val "
        "(the selection set), train, or all (warns when training series are included)",
        choices=SPLITS,
    )
    overwrite: bool = option(
        False, help="recompute series already complete in OUT_DIR and replace its settings"
    )
    num_parts: int | None = option(
        None,
        help="split the series into N parts run by separate processes or machines sharing "
        "OUT_DIR (default: torchrun's WORLD_SIZE, else 1)",
        metavar="N",
    )
    part_id: int | None = option(
        None, help="the part this process runs, 0..N-1 (default: torchrun's RANK)", metavar="I"
    )
    inference: InferenceOptions = field(default_factory=InferenceOptions)

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file to load."""
        return Path(self.checkpoint) if self.checkpoint else DEMO_CHECKPOINT


def find_series(
    data: Path, series: Sequence[str] | None = None, limit: int | None = None
) -> tuple[LunaFolder | None, list[tuple[str, Path]]]:
    """The series to process in ``data``: a LUNA16-layout folder or one series.

    Returns the LUNA folder (None for a series outside one) and ``(uid, path)`` pairs, sorted.
    ``series`` picks UIDs (unknown ones raise :class:`SeriesNotFoundError`); ``limit`` keeps the
    first N. A series file inside ``ROOT/subsetN/`` gets its folder (for annotations).
    """
    if not data.exists():
        raise SeriesReadError(f"{data} does not exist; check the path.")
    wanted = list(series or [])
    folder: LunaFolder | None
    if is_luna_folder(data):
        folder = LunaFolder(data)
        uids = folder.series_uids
        unknown = sorted(set(wanted) - set(uids))
        if unknown:
            raise SeriesNotFoundError(
                f"Series {', '.join(unknown[:3])} not found under {data}/subset*/; it holds "
                f"{len(uids)} series (e.g. {', '.join(uids[:2]) or 'none'}). Check the UID."
            )
        if wanted:
            uids = [u for u in uids if u in set(wanted)]
        pairs = [(u, folder.series_path(u)) for u in uids]
    elif is_series_path(data):
        uid = series_uid_of(data) or data.name
        if wanted and wanted != [uid]:
            raise SeriesNotFoundError(
                f"{data} holds series {uid}, not {', '.join(wanted)}; drop --series or point "
                "at the folder that holds them."
            )
        root = find_luna_root(data)
        folder = LunaFolder(root) if root is not None else None
        pairs = [(uid, data)]
    else:
        raise SeriesReadError(
            f"{data} is neither a LUNA16 folder (subset*/, annotations.csv) nor a series "
            f"({', '.join(SERIES_SUFFIXES)} or a DICOM folder)."
        )
    if limit is not None:
        pairs = pairs[: max(limit, 0)]
    if not pairs:
        raise SeriesNotFoundError(f"No series to process in {data}.")
    return folder, pairs


# ---------------------------------------------------------------------------------------------
# Which series, scored against what; what shapes the outputs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunScope:
    """Which series a run covers and what its outputs are compared with.

    Attributes:
        series: ``(uid, path)`` of every series of the run (all parts), sorted.
        folder: the LUNA16 folder the series come from; None for a lone series.
        truth: the folder whose annotations define the ground truth; None: no comparison.
        definition: how voxel ground truth is made from the annotations (the checkpoint's
            mask method and threshold).
        notes: lines for the user: training series included, what results are scored against.
    """

    series: list[tuple[str, Path]]
    folder: LunaFolder | None
    truth: LunaFolder | None
    definition: TruthDefinition = field(default_factory=TruthDefinition)
    notes: tuple[str, ...] = ()

    @property
    def uids(self) -> list[str]:
        """The run's series UIDs, in order."""
        return [uid for uid, _ in self.series]


def choose_scope(
    data: str | os.PathLike[str], options: InferRunOptions, checkpoint: Checkpoint | None = None
) -> RunScope:
    """The run's series (``--series``, ``--split`` of ``checkpoint``'s run, then ``--limit``),
    its ground truth (annotations, or the reviewed nodules) and how voxel truth is made
    (``checkpoint``'s way; the defaults without one).

    Decided once per run, before anything else: every part computes the same scope.
    """
    folder, pairs = find_series(Path(data), options.series)
    has_truth = folder is not None and folder.annotations_path is not None
    truth = folder if options.with_truth and has_truth else None
    if options.reviewed and truth is not None:
        truth = ReviewedFolder(truth.root)  # its nodules(uid) are the reviewed ones
    notes: list[str] = []
    definition = TruthDefinition()
    contract = contract_of_checkpoint(checkpoint) if checkpoint is not None else None
    if checkpoint is not None:
        uids = [uid for uid, _ in pairs]
        chosen = select_split(uids, contract, options.split, options.checkpoint_path)
        keep = set(chosen.series)
        pairs = [pair for pair in pairs if pair[0] in keep]
        definition = TruthDefinition.of_train_config(checkpoint.train_config)
        if options.split != "all":
            notes.append(f"--split {options.split}: {len(pairs)} of {len(uids)} series")
    if options.limit is not None:
        pairs = pairs[: max(options.limit, 0)]
        if not pairs:
            raise SeriesNotFoundError(f"--limit {options.limit}: no series to process in {data}.")
    scoring = scoring_truth(truth) if truth is not None and checkpoint is not None else None
    if checkpoint is not None:  # the split's note and warnings count the series that will run
        ran = select_split(
            [uid for uid, _ in pairs], contract, options.split, options.checkpoint_path, scoring
        )
        if ran.warning:
            notes[:0] = ran.warning.splitlines()
    if scoring is not None:
        path = scoring.annotations_path
        excluded = scoring.excluded_path.name if scoring.excluded_path else "none"
        reviewed = " (reviewed nodules)" if options.reviewed else ""
        notes.append(
            f"scored against {path.name if path else 'no annotations'}{reviewed} (excluded "
            f"findings: {excluded}); voxel truth: {definition.describe()} (the checkpoint's)"
        )
    return RunScope(pairs, folder, truth, definition, tuple(notes))


def run_settings(
    options: InferRunOptions, checkpoint: Checkpoint, scope: RunScope
) -> dict[str, Any]:
    """Everything that shapes a series' outputs, as recorded in ``OUT/run.json``.

    The checkpoint's SHA-1, the inference options but those that only choose how the model
    runs (:data:`EXECUTION_FIELDS`; the threshold as it applies: the checkpoint's when none
    is asked), and the truth definition (the annotation file's SHA-1 and how masks are made
    from it; with ``--reviewed``, the SHA-1 of ``reviews.csv``, to which every verdict and
    correction appends a row) or None. Two runs into one output folder must agree on it.
    """
    applied = with_threshold(options.inference, checkpoint_threshold(checkpoint))
    inference = {
        k: v
        for k, v in asdict(applied).items()
        if k not in EXECUTION_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])
    }
    truth = None
    if scope.truth is not None and scope.truth.annotations_path is not None:
        truth = {
            "annotations_sha1": file_sha1(scope.truth.annotations_path),
            "mask_method": scope.definition.mask_method,
            "threshold_hu": scope.definition.threshold_hu,
            "reviewed": options.reviewed,
        }
        if isinstance(scope.truth, ReviewedFolder) and scope.truth.book.csv_path.is_file():
            truth["reviews_sha1"] = file_sha1(scope.truth.book.csv_path)  # a new verdict
    return {"checkpoint_sha1": checkpoint.sha1, "inference": inference, "truth": truth}


# ---------------------------------------------------------------------------------------------
# A whole run: series in, files out
# ---------------------------------------------------------------------------------------------
def _score_run(
    truth: LunaFolder, uids: Sequence[str], found: Sequence[CandidateNodule]
) -> FrocResult:
    """Nodule recall, FROC and CPM of a run's candidates, as ``lunaseg eval`` scores them
    (with ``--reviewed`` ``truth`` is a :class:`ReviewedFolder`: its nodules are the reviewed
    ones, unknown diameters scored at LUNA16's 10 mm like every other nodule)."""
    scoring = scoring_truth(truth)
    nodules = scoring.nodules_of(uids)
    marks = [FrocCandidate(c.series_uid, c.center_xyz_mm, c.probability) for c in found]
    wanted = set(uids)
    excluded = [f for f in scoring.excluded if f.series_uid in wanted]
    return evaluate_froc(nodules, marks, excluded=excluded, series_uids=uids)


def plan_run(
    data: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: InferRunOptions
) -> tuple[InferPlan, RunScope]:
    """Decide what this process does and start or join the run in ``out_dir``.

    Checks everything that can be checked before the model runs: the series exist, the
    checkpoint is a LunaSeg checkpoint, the part is valid, ``OUT/run.json`` (written now if
    absent) has the same settings (else :class:`OutputExistsError` naming each difference,
    unless ``options.overwrite``). This part's complete series are skipped; with ``overwrite``
    their records are removed, so they count as incomplete until recomputed.
    """
    checkpoint = load_checkpoint(options.checkpoint_path)
    check_ct_input(checkpoint, options.checkpoint_path)
    scope = choose_scope(data, options, checkpoint)
    part = resolve_part(options.num_parts, options.part_id)
    out = Path(out_dir)
    manifest = RunManifest(
        settings=run_settings(options, checkpoint, scope),
        series_uids=scope.uids,
        checkpoint=str(options.checkpoint_path),
        data=str(data),
    )
    manifest, run_notes = open_run(out, manifest, overwrite=options.overwrite, split=part.is_split)
    notes = [*scope.notes, *run_notes]
    candidates_csv, series_list = out / CANDIDATES_CSV, out / SERIES_LIST_NAME
    mine = part.take(scope.series)
    index = RecordIndex(out, manifest.key)
    if options.overwrite:
        for uid, _ in mine:
            record_path(out, uid).unlink(missing_ok=True)
        skipped: list[str] = []
    else:
        skipped = [uid for uid, _ in mine if index.is_complete(uid)]
    if index.incomplete(scope.uids):
        remove_tables(candidates_csv, series_list)  # they describe a finished run only
    done = set(skipped)
    plan = InferPlan(
        series=scope.series,
        part=part,
        todo=[(uid, path) for uid, path in mine if uid not in done],
        skipped=skipped,
        out_dir=out,
        candidates_csv=candidates_csv,
        series_list=series_list,
        checkpoint=options.checkpoint_path,
        checkpoint_sha1=checkpoint.sha1,
        model_config=checkpoint.model_config,
        annotations_path=scope.truth.annotations_path if scope.truth is not None else None,
        settings_key=manifest.key,
        notes=notes,
    )
    return plan, scope


#: Errors that concern the whole run (options, checkpoint, a stop), not one series: re-raised.
_RUN_ERRORS = (CancelledError, ConfigError, CheckpointError)


def _run_series(
    uid: str,
    path: Path,
    plan: InferPlan,
    scope: RunScope,
    detector: Detector,
    options: InferenceOptions,
    tuners: TunerCache,
    progress: Progress | None,
    should_stop: ShouldStop | None,
) -> SeriesReport:
    """Infer one series, write its volumes, then its record (last, atomically)."""
    t0 = time.perf_counter()
    ct = load_ct(path, series_uid=uid if path.is_dir() else None)
    record_path(plan.out_dir, uid).unlink(missing_ok=True)  # untrusted until rewritten
    result = run_detection(
        ct, detector, options, tuners=tuners, progress=progress, should_stop=should_stop
    )
    files = plan.outputs(uid)
    t_written = time.perf_counter()
    metrics = write_series_volumes(
        ct, result.prob, result.mask, files, scope.truth, scope.definition
    )
    load_seconds = t_written - t0 - result.seconds
    record = SeriesRecord(
        series_uid=uid,
        settings_key=plan.settings_key,
        files=describe_files(plan.out_dir, files.existing()),
        candidates=list(result.candidates),
        n_slices=ct.shape_irc[0],
        seconds=result.seconds,
        model_seconds=result.model_seconds,
        load_seconds=load_seconds,
        write_seconds=time.perf_counter() - t_written,
        execution=asdict(result.settings) if result.settings is not None else {},
        voxel_metrics=metrics,
        part=part_name(plan),
        left_out=result.left_out,
    )
    write_record(plan.out_dir, record)
    return SeriesReport(
        series_uid=uid,
        n_slices=ct.shape_irc[0],
        seconds=result.seconds,
        slices_per_second=result.slices_per_second,
        settings=result.settings,
        n_candidates=len(result.candidates),
        outputs=files,
        voxel_metrics=metrics,
        left_out=result.left_out,
    )


def _assemble_if_complete(
    plan: InferPlan, scope: RunScope, index: RecordIndex
) -> tuple[list[CandidateNodule] | None, list[str]]:
    """When every series of the run is complete, write ``candidates.csv`` and the series
    list; the candidates (None: not complete) and the series still incomplete."""
    incomplete = index.incomplete(scope.uids)
    found = None
    if not incomplete:
        found = assemble_tables(
            plan.out_dir, scope.uids, plan.settings_key, plan.candidates_csv, plan.series_list
        )
        if found is None:  # a record vanished between the two looks (another --overwrite)
            incomplete = index.incomplete(scope.uids)
    return found, incomplete


def infer_to_folder(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: InferRunOptions | None = None,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    on_start: Callable[[InferPlan], None] | None = None,
    on_series: Callable[[SeriesReport], None] | None = None,
    on_event: EventCallback | None = None,
) -> InferRunSummary:
    """Run a model over series and write its outputs to a folder (see the module docstring).

    Everything is checked before anything is written (:func:`plan_run`); the model is loaded
    only when this part has series left to compute.

    Args:
        data: a LUNA16-layout folder or one series (file or DICOM folder).
        out_dir: the output folder (created; a file there raises :class:`OutputExistsError`).
        options: what to run (checkpoint, series, part, inference options, truth, overwrite).
        progress: ``progress(slices_done, n_slices, message)`` within each series.
        should_stop: polled between batches and series; a stop raises
            :class:`CancelledError`, keeping the series finished so far (a later run skips
            them) and no tables.
        on_start: called with the :class:`InferPlan` before the first series.
        on_series: called after each series is written, with its :class:`SeriesReport`.
        on_event: called with an :class:`InferEvent` at the start, after each series (written
            or failed) and at the end: progress over the data set, rate, time left.
    """
    opts = options or InferRunOptions()
    started = time.perf_counter()
    plan, scope = plan_run(data, out_dir, opts)
    index = RecordIndex(plan.out_dir, plan.settings_key)
    meter = RateMeter(total=plan.mine, done=len(plan.skipped))

    event = event_sender(on_event, plan, scope.uids, index, meter)

    detector: Detector | None = None
    inference = opts.inference
    if plan.todo:
        device = device_for_part(inference.device, plan.part, torch.cuda.is_available())
        inference = dataclasses.replace(inference, device=device)
        detector = load_detector(plan.checkpoint, device=device)
    if on_start is not None:
        on_start(plan)
    event("start", message=plan.describe())
    tuners = TunerCache()
    reports: list[SeriesReport] = []
    failures: list[SeriesFailure] = []
    not_attempted: list[str] = []
    for i, (uid, path) in enumerate(plan.todo):
        check_stop(should_stop, "Inference")
        assert detector is not None  # loaded whenever there is work
        try:
            report = _run_series(
                uid, path, plan, scope, detector, inference, tuners, progress, should_stop
            )
        except _RUN_ERRORS:
            raise
        except Exception as exc:  # one bad series must not stop the others
            reason = record_failure(plan, uid, exc)
            failures.append(SeriesFailure(uid, reason))
            meter.series_failed()
            event("failed", uid, message=reason)
            if is_disk_full(exc):
                not_attempted = [u for u, _ in plan.todo[i + 1 :]]
                log.error(
                    "the disk is full: %d series of this part left untried", len(not_attempted)
                )
                break
            continue
        reports.append(report)
        meter.series_done()
        if on_series is not None:
            on_series(report)
        event("series", uid, report.seconds, report.n_candidates, report.describe())

    found, incomplete = _assemble_if_complete(plan, scope, index)
    froc = _score_run(scope.truth, scope.uids, found) if found is not None and scope.truth else None
    summary = InferRunSummary(
        plan=plan,
        series=reports,
        failures=failures,
        not_attempted=not_attempted,
        incomplete=incomplete,
        n_candidates=len(found) if found is not None else 0,
        froc=froc,
        seconds=time.perf_counter() - started,
    )
    event("end", seconds=summary.seconds, n=summary.n_candidates, message=_end_line(summary))
    return summary


def _end_line(summary: InferRunSummary) -> str:
    plan = summary.plan
    if summary.complete:
        tables = f"{plan.candidates_csv.name} and {plan.series_list.name}"
        return f"all {len(plan.series)} series complete; wrote {tables}"
    failed = read_failures(plan.out_dir, summary.incomplete)
    return (
        f"{len(summary.incomplete)} of {len(plan.series)} series not complete "
        f"({len(failed)} failed, the others left to other parts or a later run)"
    )
