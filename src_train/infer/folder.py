"""A whole inference run: series of a data folder in, volumes and ``candidates.csv`` out.

:func:`infer_to_folder` is what ``lunaseg infer`` does, usable from any front end. For each
series ``OUT`` gets, in the CT's geometry: ``<uid>_prob.mhd`` (uint8 ``round(p * 255)``),
``<uid>_pred.mhd`` (the mask, uint8 0/1) and, where annotations exist, ``<uid>_error.mhd``
(1 TP, 2 FN, 3 FP against masks built from the annotations); then ``candidates.csv`` (LUNA16
submission + extra columns) and ``seriesuids.csv`` (the series processed, for ``lunaseg eval``).
With annotations it also scores the run: voxel metrics per series, nodule recall / FROC / CPM.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src_train.anatomy import SCAN_CHUNK_SLICES
from src_train.atomic import write_text_atomic
from src_train.ct import (
    SERIES_SUFFIXES,
    CtVolume,
    is_series_path,
    load_ct,
    save_volume,
    series_uid_from_path,
)
from src_train.errors import OutputExistsError, SeriesNotFoundError, SeriesReadError
from src_train.evaluate import SERIES_LIST_NAME, FrocResult, evaluate_froc
from src_train.evaluate import Candidate as FrocCandidate
from src_train.infer.candidates import CandidateNodule, write_candidates_csv
from src_train.infer.detector import Detector, load_detector, run_detection
from src_train.infer.runner import InferenceOptions, InferenceSettings
from src_train.infer.truth import (
    SPLITS,
    TruthDefinition,
    ground_truth_mask,
    scoring_truth,
    select_split,
)
from src_train.infer.tuner import TunerCache
from src_train.luna import ANNOTATIONS_FILE, LunaFolder, find_luna_root
from src_train.metrics import error_volume, voxel_metrics
from src_train.model import ModelConfig
from src_train.options import option
from src_train.progress import Progress, ShouldStop

log = logging.getLogger(__name__)

#: The demo checkpoint shipped in the package (default of ``lunaseg infer`` and the viewer).
DEMO_CHECKPOINT: Path = Path(__file__).resolve().parent.parent / "assets" / "demo_unet.pt"

#: File names of a run's tables in its output folder.
CANDIDATES_CSV = "candidates.csv"


@dataclass(frozen=True)
class InferRunOptions:
    """What ``lunaseg infer`` runs (every field is one of its options).

    Attributes:
        checkpoint: model checkpoint; None = :data:`DEMO_CHECKPOINT`.
        series: only these series UIDs (None: every series).
        limit: only the first N series.
        with_truth: compare with the annotations when the data has them.
        overwrite: replace existing outputs.
        inference: how each series is run (device, precision, threshold, candidates...).
    """

    checkpoint: str | None = option(
        None, help="model checkpoint (default: the shipped demo U-Net)", metavar="PT"
    )
    series: tuple[str, ...] | None = option(None, help="only these series", metavar="UID")
    limit: int | None = option(None, help="only the first N series", metavar="N")
    with_truth: bool = option(True, help="skip the ground-truth comparison", flag="--no-truth")
    split: str = option(
        "all",
        help="series of the checkpoint's run to process: val (held out), train, or all (warns "
        "when training series are included)",
        choices=SPLITS,
    )
    overwrite: bool = option(False, help="replace existing outputs")
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
    if data.is_dir() and (any(data.glob("subset*")) or (data / ANNOTATIONS_FILE).is_file()):
        folder: LunaFolder | None = LunaFolder(data)
        assert folder is not None
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
        uid = series_uid_from_path(data) if data.is_file() else data.name
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


#: Probability volumes are written as uint8: ``round(prob * PROB_FILE_SCALE)``.
PROB_FILE_SCALE = 255


def prob_to_uint8(prob: np.ndarray) -> np.ndarray:
    """Probabilities to uint8 ``round(p * 255)`` for files (SimpleITK cannot write float16)."""
    out = np.empty(prob.shape, dtype=np.uint8)
    for z0 in range(0, prob.shape[0], SCAN_CHUNK_SLICES):
        part = prob[z0 : z0 + SCAN_CHUNK_SLICES].astype(np.float32) * PROB_FILE_SCALE
        np.rint(part, out=part)
        out[z0 : z0 + SCAN_CHUNK_SLICES] = part
    return out


def write_series_list(
    path: str | os.PathLike[str], series_uids: Sequence[str], *, overwrite: bool = False
) -> Path:
    """Write one series UID per line (what ``lunaseg eval --series-list`` reads), atomically."""
    return write_text_atomic(path, "".join(f"{uid}\n" for uid in series_uids), overwrite=overwrite)


@dataclass
class SeriesOutputs:
    """Files ``lunaseg infer`` writes for one series in ``out_dir``."""

    prob: Path
    pred: Path
    error: Path
    extra: list[Path] = field(default_factory=list)

    @classmethod
    def for_series(cls, out_dir: Path, series_uid: str) -> SeriesOutputs:
        """``<uid>_prob.mhd``, ``<uid>_pred.mhd``, ``<uid>_error.mhd`` in ``out_dir``."""
        return cls(
            prob=out_dir / f"{series_uid}_prob.mhd",
            pred=out_dir / f"{series_uid}_pred.mhd",
            error=out_dir / f"{series_uid}_error.mhd",
        )

    def existing(self) -> list[Path]:
        """The ones already on disk (headers or their data files)."""
        paths = [self.prob, self.pred, self.error, *self.extra]
        found = []
        for p in paths:
            for candidate in (p, p.with_suffix(".raw"), p.with_suffix(".zraw")):
                if candidate.exists():
                    found.append(candidate)
        return found


# ---------------------------------------------------------------------------------------------
# A whole run: series in, files out
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferPlan:
    """What :func:`infer_to_folder` is about to do, known before the first series runs.

    Attributes:
        series: ``(uid, path)`` of each series to process, in order.
        outputs: the files of each series, aligned with ``series``.
        candidates_csv: the candidates of every series (LUNA16 submission + extra columns).
        series_list: the series processed, one UID per line (read by ``lunaseg eval``).
        checkpoint: the model checkpoint loaded.
        model_config: the loaded model's configuration.
        annotations_path: the annotations the results are compared with; None without truth.
    """

    series: list[tuple[str, Path]]
    outputs: list[SeriesOutputs]
    candidates_csv: Path
    series_list: Path
    checkpoint: Path
    model_config: ModelConfig
    annotations_path: Path | None


@dataclass(frozen=True)
class SeriesReport:
    """One processed series of :func:`infer_to_folder`.

    Attributes:
        series_uid: the series.
        n_slices: its slices (the CT's first array axis).
        seconds: wall time of :func:`run_inference` on it.
        slices_per_second: slices per second of model time.
        settings: how the model ran.
        n_candidates: candidates found in it.
        outputs: the files written for it (``outputs.error`` only when ``voxel_metrics`` is set).
        voxel_metrics: :func:`voxel_metrics` of the mask against the masks generated from the
            annotations; None without truth.
    """

    series_uid: str
    n_slices: int
    seconds: float
    slices_per_second: float
    settings: InferenceSettings | None
    n_candidates: int
    outputs: SeriesOutputs
    voxel_metrics: dict[str, float] | None = None

    def describe(self) -> str:
        """One line for logs and the CLI."""
        how = self.settings.describe() if self.settings else ""
        line = (
            f"{self.series_uid}: {self.n_slices} slices in {self.seconds:.1f} s "
            f"({self.slices_per_second:.1f} slices/s, {how}), "
            f"{self.n_candidates} candidates"
        )
        if self.voxel_metrics is not None:
            m = self.voxel_metrics
            line += (
                f"; voxels vs generated masks: precision {m['precision']:.3f}, "
                f"recall {m['recall']:.3f}, Dice {m['dice']:.3f}"
            )
        return line


@dataclass(frozen=True)
class InferRunSummary:
    """Outcome of :func:`infer_to_folder`.

    Attributes:
        plan: what was run (series, files, model, annotations).
        series: one report per series, in processing order.
        n_candidates: candidates written to ``plan.candidates_csv``, all series together.
        froc: nodule recall, FROC and CPM of those candidates against the annotated nodules
            (with a diameter) of the processed series, LUNA16's way (``annotations.csv``, and
            ``annotations_excluded.csv`` when present); None without truth.
        seconds: wall time of the whole call.
        notes: lines for the user: the series split, what the results are scored against.
    """

    plan: InferPlan
    series: list[SeriesReport]
    n_candidates: int
    froc: FrocResult | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def candidates_csv(self) -> Path:
        """The candidates file written."""
        return self.plan.candidates_csv


def _check_outputs(plan: InferPlan, overwrite: bool) -> None:
    """:class:`OutputExistsError` naming outputs that exist (unless ``overwrite``)."""
    out = plan.candidates_csv.parent
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder.")
    if overwrite:
        return
    clashes = [p for o in plan.outputs for p in o.existing()]
    clashes += [p for p in (plan.candidates_csv, plan.series_list) if p.exists()]
    if clashes:
        names = ", ".join(str(p) for p in clashes[:3])
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise OutputExistsError(
            f"{names}{more} already exist; pick another --out or pass --overwrite."
        )


def _write_series(
    ct: CtVolume,
    prob: np.ndarray,
    mask: np.ndarray,
    files: SeriesOutputs,
    truth: LunaFolder | None,
    overwrite: bool,
    definition: TruthDefinition | None = None,
) -> dict[str, float] | None:
    """Write one series' volumes; with ``truth``, its error volume and voxel metrics against
    masks made the checkpoint's way (``definition``)."""
    save_volume(prob_to_uint8(prob), ct.geometry, files.prob, compress=True, overwrite=overwrite)
    save_volume(mask.view(np.uint8), ct.geometry, files.pred, compress=True, overwrite=overwrite)
    if truth is None:
        return None
    truth_mask = ground_truth_mask(
        ct, truth.nodules(ct.series_uid), definition or TruthDefinition()
    )
    errors = error_volume(mask, truth_mask)
    save_volume(errors, ct.geometry, files.error, compress=True, overwrite=overwrite)
    return voxel_metrics(mask, truth_mask)


def _score_run(
    truth: LunaFolder, uids: Sequence[str], found: Sequence[CandidateNodule]
) -> FrocResult:
    """Nodule recall, FROC and CPM of a run's candidates, as ``lunaseg eval`` scores them."""
    scoring = scoring_truth(truth)
    marks = [FrocCandidate(c.series_uid, c.center_xyz_mm, c.probability) for c in found]
    wanted = set(uids)
    excluded = [f for f in scoring.excluded if f.series_uid in wanted]
    return evaluate_froc(scoring.nodules_of(uids), marks, excluded=excluded, series_uids=uids)


def plan_run(
    data: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: InferRunOptions
) -> tuple[InferPlan, LunaFolder | None]:
    """What a run will do (series, files, annotations) and the truth folder it scores against.

    Checks everything that can be checked without the model: the series exist, no output is
    in the way (unless ``options.overwrite``). The plan's ``model_config`` is filled in by
    :func:`infer_to_folder` once the checkpoint is loaded.
    """
    folder, pairs = find_series(Path(data), options.series, options.limit)
    out = Path(out_dir)
    has_truth = folder is not None and folder.annotations_path is not None
    truth = folder if options.with_truth and has_truth else None
    plan = InferPlan(
        series=pairs,
        outputs=[SeriesOutputs.for_series(out, uid) for uid, _ in pairs],
        candidates_csv=out / CANDIDATES_CSV,
        series_list=out / SERIES_LIST_NAME,
        checkpoint=options.checkpoint_path,
        model_config=ModelConfig(),
        annotations_path=truth.annotations_path if truth is not None else None,
    )
    _check_outputs(plan, options.overwrite)
    return plan, truth


def scoring_plan(
    plan: InferPlan, truth: LunaFolder | None, detector: Detector, split: str
) -> tuple[InferPlan, list[str]]:
    """The series of ``split`` (from the checkpoint's run) and what results are scored against.

    Returns the plan narrowed to those series (with the model's configuration) and the lines
    to tell the user (a warning when training series are included, the ground truth used).
    """
    uids = [uid for uid, _ in plan.series]
    chosen = select_split(uids, detector.contract, split, plan.checkpoint)
    keep = set(chosen.series)
    pairs = [(pair, out) for pair, out in zip(plan.series, plan.outputs, strict=True)]
    kept = [(pair, out) for pair, out in pairs if pair[0] in keep]
    plan = dataclasses.replace(
        plan,
        series=[pair for pair, _ in kept],
        outputs=[out for _, out in kept],
        model_config=detector.model_config,
    )
    notes = [chosen.warning] if chosen.warning else []
    if split != "all":
        notes.append(f"--split {split}: {len(kept)} of {len(uids)} series")
    if truth is not None:
        scoring = scoring_truth(truth)
        excluded = scoring.excluded_path.name if scoring.excluded_path else "none"
        path = scoring.annotations_path
        notes.append(
            f"scored against {path.name if path else 'no annotations'} (excluded findings: "
            f"{excluded}); voxel truth: {detector.truth.describe()} (the checkpoint's)"
        )
    return plan, notes


def infer_to_folder(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: InferRunOptions | None = None,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    on_start: Callable[[InferPlan], None] | None = None,
    on_series: Callable[[SeriesReport], None] | None = None,
) -> InferRunSummary:
    """Run a model over series and write its outputs to a folder (see the module docstring).

    Every output is checked before anything is written or the model is loaded: one that exists
    raises :class:`OutputExistsError` unless ``options.overwrite``.

    Args:
        data: a LUNA16-layout folder or one series (file or DICOM folder).
        out_dir: the output folder (created; a file there raises :class:`OutputExistsError`).
        options: what to run (checkpoint, series, inference options, truth, overwrite).
        progress: ``progress(slices_done, n_slices, message)`` within each series.
        should_stop: polled between batches; a stop raises :class:`CancelledError` and leaves
            the files of the series finished so far (``candidates.csv`` with their candidates;
            no ``seriesuids.csv``).
        on_start: called with the :class:`InferPlan` once the model is loaded.
        on_series: called after each series is written, with its :class:`SeriesReport`.
    """
    opts = options or InferRunOptions()
    started = time.perf_counter()
    plan, truth = plan_run(data, out_dir, opts)
    detector = load_detector(plan.checkpoint, device=opts.inference.device)
    plan, notes = scoring_plan(plan, truth, detector, opts.split)
    if on_start is not None:
        on_start(plan)
    plan.candidates_csv.parent.mkdir(parents=True, exist_ok=True)
    tuners = TunerCache()
    found: list[CandidateNodule] = []
    reports: list[SeriesReport] = []
    for (uid, path), files in zip(plan.series, plan.outputs, strict=True):
        ct = load_ct(path)
        if ct.series_uid != uid:  # a DICOM folder or renamed file: keep the name asked for
            ct.series_uid = uid
        result = run_detection(
            ct, detector, opts.inference, tuners=tuners, progress=progress, should_stop=should_stop
        )
        metrics = _write_series(
            ct, result.prob, result.mask, files, truth, opts.overwrite, detector.truth
        )
        report = SeriesReport(
            series_uid=uid,
            n_slices=ct.shape_irc[0],
            seconds=result.seconds,
            slices_per_second=result.slices_per_second,
            settings=result.settings,
            n_candidates=len(result.candidates),
            outputs=files,
            voxel_metrics=metrics,
        )
        reports.append(report)
        if on_series is not None:
            on_series(report)
        found.extend(result.candidates)
        write_candidates_csv(plan.candidates_csv, found, overwrite=True)
        del ct, result
    uids = [uid for uid, _ in plan.series]
    write_series_list(plan.series_list, uids, overwrite=True)
    return InferRunSummary(
        plan=plan,
        series=reports,
        n_candidates=len(found),
        froc=_score_run(truth, uids, found) if truth is not None else None,
        seconds=time.perf_counter() - started,
        notes=notes,
    )
