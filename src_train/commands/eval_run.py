"""``lunaseg eval`` as a function: which files are read, and the scored result.

:func:`evaluate_run` finds the files LUNA16 scoring needs where the user did not name them
(``annotations_excluded.csv`` beside the annotations, ``seriesuids.csv`` beside the
candidates), scores, and says in :attr:`EvalRun.notes` what it chose and what that means for
the numbers, so the CLI only prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from src_train.errors import AnnotationError, CheckpointError, ConfigError, OutputExistsError
from src_train.evaluate.files import Candidate, find_series_list, read_series_list, read_submission
from src_train.evaluate.froc import BOOTSTRAP_CONFIDENCE
from src_train.evaluate.scoring import MAX_MARKS_PER_SCAN, FrocResult, evaluate_froc
from src_train.infer.records import RunManifest
from src_train.luna import Nodule, find_excluded, read_annotations, read_excluded
from src_train.model import Checkpoint, load_checkpoint
from src_train.options import option
from src_train.progress import Progress, ShouldStop
from src_train.records.contract import contract_of_checkpoint
from src_train.records.infer_files import RUN_FILE
from src_train.records.truth import SPLITS, select_split
from src_train.reviews import ReviewBook, reviewed_nodules, reviews_dir

#: File names ``lunaseg eval`` writes.
FROC_CSV = "froc.csv"
FROC_PNG = "froc.png"


@dataclass(frozen=True)
class EvalOptions:
    """What ``lunaseg eval`` scores (every field is one of its options)."""

    annotations: str = option(
        help="annotations.csv (world mm, diameters): the nodules to find", metavar="CSV"
    )
    candidates: str = option(
        help="submission CSV (e.g. candidates.csv from lunaseg infer)", metavar="CSV"
    )
    excluded: str | None = option(
        None,
        help="annotations_excluded.csv: findings whose hits are ignored (default: the file "
        "beside the annotations, when present)",
        metavar="CSV",
    )
    use_excluded: bool = option(
        True, help="score without excluded findings even if the file exists", flag="--no-excluded"
    )
    series_list: str | None = option(
        None,
        help="series to score, one UID per line (default: seriesuids.csv beside the "
        "candidates, else the series named in the annotations or candidates)",
    )
    checkpoint: str | None = option(
        None, help="the checkpoint that made the candidates (for --split)", metavar="PT"
    )
    split: str = option(
        "all",
        help="score the checkpoint run's val (held-out) or train series only, or all (warns "
        "when training series are included)",
        choices=SPLITS,
    )
    out: str | None = option(
        None, help="folder for froc.csv and froc.png (default: the candidates')"
    )
    max_marks: int = option(MAX_MARKS_PER_SCAN, help="marks counted per scan (LUNA16: 100)")
    cap: bool = option(True, help="count every mark (no per-scan cap)", flag="--no-cap")
    bootstrap: int = option(0, help="bootstrap samples for 95%% intervals (LUNA16 used 1000)")
    seed: int = option(0, help="seed of the bootstrap")
    confidence: float = option(BOOTSTRAP_CONFIDENCE, help="confidence of the intervals")
    reviewed: bool = option(
        False,
        help="score against the reviewed nodules (reviews/ beside the annotations: rejected "
        "ones dropped, added ones included)",
    )
    overwrite: bool = option(False, help="replace froc.csv / froc.png")

    def __post_init__(self) -> None:
        if self.bootstrap < 0 or self.max_marks < 1 or not 0 < self.confidence < 1:
            raise ConfigError(
                "--bootstrap must be >= 0, --max-marks >= 1 and --confidence in (0, 1); got "
                f"{self.bootstrap}, {self.max_marks}, {self.confidence}."
            )

    @property
    def out_dir(self) -> Path:
        """Where froc.csv and froc.png go."""
        return Path(self.out) if self.out else Path(self.candidates).parent


@dataclass
class EvalRun:
    """The result of :func:`evaluate_run` and the files it read.

    Attributes:
        result: the LUNA16 score.
        excluded_path, series_list_path: the files used (None: none).
        notes: lines for the user: defaults chosen and their consequences.
    """

    result: FrocResult
    excluded_path: Path | None
    series_list_path: Path | None
    notes: list[str] = field(default_factory=list)


def evaluate_run(
    options: EvalOptions,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> EvalRun:
    """Score ``options.candidates`` against ``options.annotations`` (see the module docstring).

    Refuses (before reading anything) to replace ``froc.csv``/``froc.png`` unless
    ``options.overwrite``.
    """
    if not options.overwrite:
        for name in (FROC_CSV, FROC_PNG):
            path = options.out_dir / name
            if path.exists():
                raise OutputExistsError(f"{path} already exists; pass --overwrite or --out.")
    notes: list[str] = []
    excluded_path = None
    if options.use_excluded:
        excluded_path = Path(options.excluded) if options.excluded else None
        excluded_path = excluded_path or find_excluded(options.annotations)
        if excluded_path is None:
            notes.append(
                "no annotations_excluded.csv beside the annotations: marks on irrelevant "
                "findings count as false positives, so the CPM can be lower than LUNA16's"
            )
    series_path = Path(options.series_list) if options.series_list else None
    series_path = series_path or find_series_list(options.candidates)
    if series_path is None:
        notes.append(
            "no series list: scans named in neither file (no nodule, no mark) are not counted "
            "in the false positives per scan"
        )
    else:
        notes.append(f"series list: {series_path}")
    nodules = read_annotations(options.annotations, require_diameter=True)
    if options.reviewed:
        nodules, line = _reviewed(nodules, Path(options.annotations))
        notes.append(line)
    candidates = read_submission(options.candidates)
    _check_common_series(options, nodules, candidates)
    uids = read_series_list(series_path) if series_path else None
    if options.checkpoint is not None or options.split != "all":
        uids, note = _split_series(options, uids, nodules, candidates)
        if note:
            notes.append(note)
    result = evaluate_froc(
        nodules,
        candidates,
        excluded=read_excluded(excluded_path) if excluded_path else (),
        series_uids=uids,
        max_marks_per_scan=options.max_marks if options.cap else None,
        bootstrap=options.bootstrap,
        seed=options.seed,
        confidence=options.confidence,
        progress=progress,
        should_stop=should_stop,
    )
    return EvalRun(result, excluded_path, series_path, notes)


def _reviewed(nodules: list[Nodule], annotations: Path) -> tuple[list[Nodule], str]:
    """The reviewed nodules (``reviews/`` beside the annotation file) and a note saying so."""
    book = ReviewBook(reviews_dir(annotations.parent))
    by_series: dict[str, list[Nodule]] = {}
    for nodule in nodules:
        by_series.setdefault(nodule.series_uid, []).append(nodule)
    for uid in book.series_uids:
        by_series.setdefault(uid, [])
    out = [
        n for uid, group in by_series.items() for n in reviewed_nodules(group, book.histories(uid))
    ]
    note = (
        f"reviewed nodules ({book.csv_path}): {len(out)} instead of {len(nodules)} annotated"
        if book.rows
        else f"--reviewed: no reviews in {book.dir}; the annotations are scored as they are"
    )
    return out, note


def _split_series(
    options: EvalOptions,
    uids: list[str] | None,
    nodules: Sequence[Nodule],
    candidates: Sequence[Candidate],
) -> tuple[list[str], str | None]:
    """The series of ``options.split`` of the checkpoint's run, and a line about them."""
    if options.checkpoint is None:
        raise ConfigError(
            f"--split {options.split} needs --checkpoint: the checkpoint that made the "
            "candidates knows its run's training and validation series."
        )
    ckpt = load_checkpoint(options.checkpoint)
    _check_made_by(options, ckpt)
    if uids is None:
        uids = sorted({n.series_uid for n in nodules} | {c.series_uid for c in candidates})
    chosen = select_split(uids, contract_of_checkpoint(ckpt), options.split, options.checkpoint)
    return chosen.series, chosen.warning


def _check_common_series(
    options: EvalOptions, nodules: Sequence[Nodule], candidates: Sequence[Candidate]
) -> None:
    """Refuse annotations and candidates about different scans (the CPM would be NaN or 0)."""
    annotated = {n.series_uid for n in nodules}
    marked = {c.series_uid for c in candidates}
    if annotated and marked and not annotated & marked:
        raise AnnotationError(
            f"{options.candidates} ({len(marked)} series) and {options.annotations} "
            f"({len(annotated)} series) have no series in common: these candidates were made "
            "on another data set. Pass the annotations of the folder the candidates were "
            "made from."
        )


def _check_made_by(options: EvalOptions, ckpt: Checkpoint) -> None:
    """Refuse candidates whose ``run.json`` says another checkpoint made them."""
    run_json = Path(options.candidates).parent / RUN_FILE
    if not run_json.is_file():
        return
    made_by = RunManifest.read(run_json).settings.get("checkpoint_sha1")
    if made_by and made_by != ckpt.sha1:
        raise CheckpointError(
            f"{options.candidates} was made by the checkpoint with SHA-1 {made_by} ({run_json}), "
            f"not by {options.checkpoint} (SHA-1 {ckpt.sha1}): its split would be the wrong "
            "run's. Pass the checkpoint that made the candidates, or run lunaseg infer with "
            f"--checkpoint {options.checkpoint} first."
        )
