"""Model x loss comparison on one image folder (``lunaseg compare``), resumable.

:func:`run_comparison` trains every combination of ``models`` x ``losses`` (x ``seeds``) with
the same split, epochs, batch size, learning rate and augmentation, scores each on the test
images with its best-validation checkpoint, and writes::

    OUT/compare.json            the options, the split and the data summary (resume checks them)
    OUT/runs/<name>/            one ImageTrainer run folder per combination and seed, with
                                result.json and test_predictions.npz once it is scored
    OUT/results.csv             one row per model x loss (means over seeds)
    OUT/runs.csv                one row per run
    OUT/report.md, OUT/figures/ the report (see :mod:`.report`)

``resume=True`` keeps finished runs, continues interrupted ones from their latest checkpoint
and starts the rest. Progress leaves through callbacks receiving :class:`CompareEvent`; a stop
request is honoured between batches (the interrupted run resumes later). The options and the
runs they expand to live in :mod:`.options`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src_train.atomic import atomic_write, write_text_atomic
from src_train.errors import ConfigError, LunaSegError, OutputExistsError
from src_train.images2d.conclusion import RANK_METRICS, conclude
from src_train.images2d.dataset import ImageSet, Split, SplitConfig, load_image_set, split_keys
from src_train.images2d.metrics import SCORE_NAMES, score_images
from src_train.images2d.options import RUNS_DIR, SAME_ON_RESUME, CompareOptions, RunPlan
from src_train.images2d.predict import predict_masks
from src_train.images2d.results import RESULT_FILE, RunRecord, aggregate
from src_train.images2d.trainer import BEST, LATEST, ImageTrainer
from src_train.luna import is_luna_folder
from src_train.model import load_model
from src_train.train.events import ProgressEvent

log = logging.getLogger(__name__)

COMPARE_FILE = "compare.json"
PREDICTIONS_FILE = "test_predictions.npz"


@dataclass
class CompareEvent:
    """What a comparison callback receives.

    ``kind``: ``"load"`` (``done``/``total`` images read), ``"run"`` (a run starts),
    ``"skip"`` (a finished run is kept), ``"train"`` (``train`` holds the run's
    :class:`~src_train.train.events.ProgressEvent`), ``"scored"`` (a run's test scores in
    ``metrics``), ``"report"`` (``path``), ``"stopped"``, ``"end"``.
    """

    kind: str
    run: str = ""
    run_index: int = 0
    runs: int = 0
    done: int = 0
    total: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    path: str | None = None
    train: ProgressEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form with kind ``compare/<kind>`` (training events are the run's own
        :class:`~src_train.train.events.ProgressEvent`, see its ``to_json``)."""
        return {
            "kind": f"compare/{self.kind}",
            "run": self.run,
            "run_index": self.run_index,
            "runs": self.runs,
            "done": self.done,
            "total": self.total,
            "metrics": {k: v if math.isfinite(v) else None for k, v in self.metrics.items()},
            "message": self.message,
            "path": self.path,
        }


CompareCallback = Callable[[CompareEvent], None]


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` returns.

    Attributes:
        out: the output folder.
        records: the finished runs (:class:`RunRecord` for image sets, :class:`CtRunRecord`
            for CT folders).
        stopped: True when a stop request ended it early.
        files: the report files (empty when stopped).
        metric: what ``ranking`` ranks by, as the report names it (``"validation IoU"``).
        ranking: ``(model + loss, value)`` best first (empty when stopped).
        tied: how many rows from the top of ``ranking`` are within the run-to-run noise of
            the first (1: a clear first; :mod:`.conclusion`).
    """

    out: Path
    records: list[Any]
    stopped: bool
    files: dict[str, Path] = field(default_factory=dict)
    metric: str = ""
    ranking: list[tuple[str, float]] = field(default_factory=list)
    tied: int = 1


def _prepare_out(options: CompareOptions) -> dict[str, Any] | None:
    """Check OUT; returns the saved ``compare.json`` when resuming, else None."""
    out = Path(options.out)
    saved_path = out / COMPARE_FILE
    if options.resume:
        if not saved_path.is_file():
            raise ConfigError(
                f"Cannot resume: {saved_path} does not exist. Start without --resume."
            )
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        before = saved["options"]
        now = options.to_dict()
        changed = [k for k in SAME_ON_RESUME if before.get(k) != now[k]]
        if changed:
            k = changed[0]
            raise ConfigError(
                f"Cannot resume {out}: option {k} was {before.get(k)!r}, now {now[k]!r}. Use the "
                "same value, or a new --out for a new comparison."
            )
        return dict(saved)
    if out.exists() and any(out.iterdir()):
        if not options.overwrite:
            raise OutputExistsError(
                f"{out} is not empty; use --resume to continue its comparison, --overwrite to "
                "start over, or another --out."
            )
        if not saved_path.is_file():
            raise OutputExistsError(
                f"{out} holds files that 'lunaseg compare' did not write (no {COMPARE_FILE}); "
                "it is left alone. Choose another --out."
            )
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


def _commands(saved: dict[str, Any] | None, command_line: Sequence[str] | None) -> list[list[str]]:
    """The command lines of a comparison: the saved ones of a resumed one, then this one."""
    earlier = [list(c) for c in (saved or {}).get("commands", [])]
    return [*earlier, list(command_line)] if command_line else earlier


def _data_summary(data: ImageSet) -> dict[str, Any]:
    source = data.source
    return {
        "root": str(source.root),
        "layout": source.layout,
        "pairs": len(data),
        "unmatched_images": [str(p.relative_to(source.root)) for p in source.unmatched_images],
        "unmatched_masks": [str(p.relative_to(source.root)) for p in source.unmatched_masks],
        "notes": data.notes,
        "original_sizes": sorted({f"{c}x{r}" for r, c in data.original_sizes.tolist()}),
        "lesion_fraction": float(data.masks.mean()),
    }


def score_run(
    plan: RunPlan, run_dir: Path, data: ImageSet, split: Split, trained: ImageTrainer
) -> tuple[RunRecord, np.ndarray]:
    """Score a trained run's best checkpoint on the validation images (per image: what the
    ranking's noise is measured on) and the test images (reported); write ``result.json`` and
    the test predictions; return the record and the predicted test masks ``(n_test, row, col)``."""
    model, _ = load_model(run_dir / BEST, device=trained.device)
    val_index = data.indices(split.val)
    val_scores = score_images(predict_masks(model, data.images[val_index]), data.masks[val_index])
    index = data.indices(split.test)
    pred = predict_masks(model, data.images[index])
    scores = score_images(pred, data.masks[index])
    record = RunRecord(
        name=plan.name,
        model=plan.spec.label,
        arch=plan.spec.arch,
        up=plan.spec.up if plan.spec.arch == "unet" else "max-unpooling",
        filters=plan.spec.filters,
        depth=trained.model_config.depth,
        loss=plan.loss,
        seed=plan.seed,
        params=trained.parameters,
        epochs=trained.config.epochs,
        best_epoch=int(trained.best_epoch or 0),
        seconds_per_epoch=float(np.median([row["seconds"] for row in trained.history])),
        val=dict(trained.best_metrics),
        test=scores.mean(),
        test_keys=list(split.test),
        test_per_image={
            name: getattr(scores, name).tolist()
            for name in ("iou", "iou_score", "dice", "precision", "recall")
        },
        history=list(trained.history),
        device=str(trained.device),
        val_keys=list(split.val),
        val_per_image={name: getattr(val_scores, name).tolist() for name in SCORE_NAMES},
    )
    with atomic_write(run_dir / PREDICTIONS_FILE, "wb") as fh:
        np.savez_compressed(
            fh, keys=np.asarray(split.test), masks=np.packbits(pred, axis=-1), cols=pred.shape[-1]
        )
    record.save(run_dir)
    return record, pred


def load_predictions(run_dir: str | Path) -> np.ndarray:
    """The test masks a scored run predicted, bool ``(n_test, row, col)``."""
    with np.load(Path(run_dir) / PREDICTIONS_FILE) as saved:
        return np.unpackbits(saved["masks"], axis=-1, count=int(saved["cols"])).astype(bool)


def run_comparison(
    options: CompareOptions,
    callbacks: Sequence[CompareCallback] = (),
    should_stop: Callable[[], bool] | None = None,
    command_line: Sequence[str] | None = None,
) -> ComparisonResult:
    """Run (or resume) the comparison and write its report; see the module docstring."""
    from src_train.images2d.report import write_report

    def emit(kind: str, **values: Any) -> None:
        event = CompareEvent(kind, **values)
        for callback in callbacks:
            callback(event)

    def forward(where: dict[str, Any]) -> Callable[[ProgressEvent], None]:
        """A trainer callback that passes its events on, tagged with the run."""
        return lambda event: emit("train", train=event, **where)

    data_dir = Path(options.data)
    if is_luna_folder(data_dir):
        return _run_on_ct(options, emit, should_stop, command_line)
    saved = _prepare_out(options)
    out = Path(options.out)
    data = load_image_set(
        data_dir,
        options.size,
        progress=lambda d, t: emit("load", done=d, total=t),
        resize_masks=options.resize_masks,
    )
    if saved is not None:
        split = Split.from_dict(saved["split"])
        data.indices(split.train + split.val + split.test)  # every image is still there
    else:
        split = split_keys(data.keys, SplitConfig(*options.split, seed=options.seed))
    commands = _commands(saved, command_line)
    record = {
        "options": options.to_dict(),
        "split": split.to_dict(),
        "data": _data_summary(data),
        "commands": commands,
    }
    write_text_atomic(out / COMPARE_FILE, json.dumps(record, indent=1), overwrite=True)

    plans = options.plan()
    records: list[RunRecord] = []
    predictions: dict[str, np.ndarray] = {}
    stop = should_stop or (lambda: False)
    for i, plan in enumerate(plans, start=1):
        run_dir = out / RUNS_DIR / plan.name
        where = {"run": plan.name, "run_index": i, "runs": len(plans)}
        if (run_dir / RESULT_FILE).is_file():
            records.append(RunRecord.load(run_dir))
            predictions[plan.name] = load_predictions(run_dir)
            emit("skip", message=f"{plan.name}: already done", **where)
            continue
        if stop():
            emit("stopped", message=f"stopped before {plan.name}", **where)
            return ComparisonResult(out, records, stopped=True)
        resume = (run_dir / LATEST).is_file()
        config = plan.train_config(options, out, resume=resume, overwrite=not resume)
        emit("run", message=f"{plan.name}: {'resuming' if resume else 'training'}", **where)
        trainer = ImageTrainer(
            config,
            data,
            split,
            callbacks=[forward(where)],
            should_stop=should_stop,
            command_line=list(command_line if command_line is not None else sys.argv),
        )
        result = trainer.fit()
        if result.stopped:
            emit("stopped", message=f"{plan.name} stopped at epoch {result.epoch}", **where)
            return ComparisonResult(out, records, stopped=True)
        if result.best_epoch is None:
            raise LunaSegError(f"{plan.name} finished without a validated epoch; nothing to test.")
        run_record, pred = score_run(plan, run_dir, data, split, trainer)
        records.append(run_record)
        predictions[plan.name] = pred
        emit(
            "scored",
            metrics=run_record.test,
            message=f"{plan.name}: test IoU {run_record.test['iou']:.3f}",
            **where,
        )

    files = write_report(out, options, records, predictions, data, split, commands)
    emit("report", path=str(files["report"]), message=f"report: {files['report']}")
    emit("end", message="done")
    verdict = conclude(aggregate(records), options.rank_by)
    ranking = [(row.label, row.metrics[options.rank_by]) for row in verdict.ranking]
    name = RANK_METRICS[options.rank_by]
    return ComparisonResult(out, records, False, files, name, ranking, verdict.tied)


def _run_on_ct(
    options: CompareOptions,
    emit: Callable[..., None],
    should_stop: Callable[[], bool] | None,
    command_line: Sequence[str] | None,
) -> ComparisonResult:
    """The comparison on a LUNA16 folder (see :mod:`.ct_compare`)."""
    from src_train.images2d.ct_compare import CT_RANK_NAME, ct_train_config, run_ct_comparison
    from src_train.images2d.ct_report import ct_rows, write_ct_report

    out = Path(options.out)
    for plan in options.plan():  # a model CT training lacks fails before OUT is touched
        ct_train_config(plan, options, out)
    saved = _prepare_out(options)
    commands = _commands(saved, command_line)
    record = {"options": options.to_dict(), "kind": "ct", "commands": commands}
    if saved is not None and saved.get("kind") != "ct":
        raise ConfigError(
            f"Cannot resume {out}: it holds a comparison of 2-D images, not of CT series. Use "
            "another --out."
        )
    write_text_atomic(out / COMPARE_FILE, json.dumps(record, indent=1), overwrite=True)
    line = list(command_line if command_line is not None else sys.argv)
    records, stopped = run_ct_comparison(options, emit, should_stop, line)
    if stopped:
        return ComparisonResult(out, records, stopped=True)
    files = write_ct_report(out, options, records, commands)
    emit("report", path=str(files["report"]), message=f"report: {files['report']}")
    emit("end", message="done")
    ranking = [(row.label, row.mean("dice")) for row in ct_rows(records)]
    return ComparisonResult(out, records, False, files, CT_RANK_NAME, ranking)
