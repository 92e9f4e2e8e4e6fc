"""What one comparison run produced, and the model x loss table of them.

A :class:`RunRecord` is one training run (model, loss, seed) scored with its best-validation
checkpoint on the validation images (what the comparison chooses by) and on the test images
(reported only); it is saved as ``result.json`` in the run's folder. Runs of the same model and
loss with different seeds fold into one :class:`ResultRow` of ``results.csv`` (means over
seeds, and the seed-to-seed standard deviation of the test IoU), written in rank order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from src_train.atomic import write_text_atomic
from src_train.errors import LunaSegError

#: Metrics of a row, in column order (``val_*``: means over the validation images at the best
#: validation epoch, what the ranking uses; ``test_*``: means over the test images with that
#: epoch's checkpoint, reported only).
ROW_METRICS = (
    "val_iou",
    "val_iou_score",
    "val_dice",
    "test_iou",
    "test_iou_score",
    "test_dice",
    "test_precision",
    "test_recall",
)

#: Columns of ``results.csv`` (``rank``: 1 = chosen on validation; ``tied_with_first``: within
#: the run-to-run noise of rank 1, see :mod:`src_train.images2d.conclusion`).
RESULT_COLUMNS = (
    "rank",
    "model",
    "loss",
    "tied_with_first",
    *ROW_METRICS,
    "params",
    "seconds_per_epoch",
    "best_epoch",
    "epochs",
    "seeds",
    "test_iou_sd",
    "arch",
    "up",
    "filters",
    "depth",
)

#: Columns of ``runs.csv`` (one row per run, seeds apart).
RUN_COLUMNS = (
    "name",
    "model",
    "loss",
    "seed",
    *ROW_METRICS,
    "params",
    "seconds_per_epoch",
    "best_epoch",
    "epochs",
)

#: The record of one finished run, in its run folder (2-D and CT runs alike).
RESULT_FILE = "result.json"

Record = TypeVar("Record")


def save_record(record: Any, run_dir: str | os.PathLike[str]) -> Path:
    """Write a run's record (a dataclass) as ``result.json`` into ``run_dir`` (atomically)."""
    path = Path(run_dir) / RESULT_FILE
    write_text_atomic(path, json.dumps(asdict(record), indent=1), overwrite=True)
    return path


def load_record(cls: type[Record], run_dir: str | os.PathLike[str]) -> Record:
    """Read ``result.json`` of ``run_dir`` as a ``cls`` (:class:`LunaSegError` when damaged)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        return cls(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise LunaSegError(
            f"{path} is unreadable or damaged ({exc}); delete it to run that combination again."
        ) from exc


@dataclass
class RunRecord:
    """One finished run.

    Attributes:
        name: run folder name (``unet_bce_s0``).
        model: the model as asked for (``unet``, ``unet-bilinear:8``...).
        arch, up, filters, depth: the model's shape.
        loss: the loss name.
        seed: the training seed.
        params: trainable parameters.
        epochs: epochs trained.
        best_epoch: the validation epoch whose checkpoint was tested.
        seconds_per_epoch: median wall time of an epoch (training + validation), seconds.
        val: validation means at the best epoch (``iou``, ``loss``...).
        test: test means (``iou``, ``iou_score``, ``dice``, ``precision``, ``recall``).
        test_keys: the test images, in order.
        test_per_image: per-image test scores, ``{score: [value per test image]}``.
        history: the rows of ``metrics.jsonl``.
        device: where it trained.
        val_keys: the validation images, in order (empty in records of older versions).
        val_per_image: per-image validation scores of the best checkpoint, as
            ``test_per_image`` (they measure how much the validation images alone could move a
            gap between two runs).
    """

    name: str
    model: str
    arch: str
    up: str
    filters: int
    depth: int
    loss: str
    seed: int
    params: int
    epochs: int
    best_epoch: int
    seconds_per_epoch: float
    val: dict[str, float]
    test: dict[str, float]
    test_keys: list[str]
    test_per_image: dict[str, list[float]]
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = ""
    val_keys: list[str] = field(default_factory=list)
    val_per_image: dict[str, list[float]] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        """A :data:`ROW_METRICS` value of this run (``val_*`` or ``test_*``)."""
        if name.startswith("val_"):
            return float(self.val.get(name.removeprefix("val_"), math.nan))
        return float(self.test.get(name.removeprefix("test_"), math.nan))

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``result.json`` into ``run_dir`` (atomically)."""
        return save_record(self, run_dir)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> RunRecord:
        """Read ``result.json`` of ``run_dir``."""
        return load_record(cls, run_dir)


@dataclass(frozen=True)
class ResultRow:
    """One model x loss: means over its seeds (see :data:`RESULT_COLUMNS`)."""

    model: str
    loss: str
    arch: str
    up: str
    filters: int
    depth: int
    metrics: dict[str, float]
    params: int
    seconds_per_epoch: float
    best_epoch: float
    epochs: int
    seeds: tuple[int, ...]
    runs: tuple[RunRecord, ...]

    @property
    def label(self) -> str:
        """``model + loss`` as the report names it."""
        return f"{self.model} + {self.loss}"

    def by_seed(self, metric: str) -> list[float]:
        """``metric`` of each seed's run."""
        return [run.metric(metric) for run in self.runs]

    def seed_sd(self, metric: str) -> float:
        """Sample standard deviation of ``metric`` over seeds (NaN for one seed)."""
        values = self.by_seed(metric)
        return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan

    def per_image(self, score: str) -> np.ndarray:
        """Per-test-image ``score`` averaged over the seeds' runs, ``(n_test,)``."""
        return np.mean([run.test_per_image[score] for run in self.runs], axis=0)

    def val_per_image(self, score: str) -> np.ndarray | None:
        """Per-validation-image ``score`` averaged over the seeds' runs, ``(n_val,)``; None
        when a run's record has none (written by an older version)."""
        if not all(score in run.val_per_image for run in self.runs):
            return None
        return np.mean([run.val_per_image[score] for run in self.runs], axis=0)

    def csv_values(self, rank: int = 0, tied_with_first: bool = False) -> dict[str, Any]:
        """The row of ``results.csv`` at ``rank`` (1 = first)."""
        return {
            "rank": rank,
            "model": self.model,
            "loss": self.loss,
            "tied_with_first": "yes" if tied_with_first else "no",
            **{name: self.metrics[name] for name in ROW_METRICS},
            "params": self.params,
            "seconds_per_epoch": self.seconds_per_epoch,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "seeds": len(self.seeds),
            "test_iou_sd": self.seed_sd("test_iou"),
            "arch": self.arch,
            "up": self.up,
            "filters": self.filters,
            "depth": self.depth,
        }


def aggregate(records: list[RunRecord]) -> list[ResultRow]:
    """Fold runs into one row per (model, loss), in the order the runs first appear."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.model, record.loss), []).append(record)
    rows = []
    for (model, loss), runs in groups.items():
        first = runs[0]
        rows.append(
            ResultRow(
                model=model,
                loss=loss,
                arch=first.arch,
                up=first.up,
                filters=first.filters,
                depth=first.depth,
                metrics={m: float(np.mean([r.metric(m) for r in runs])) for m in ROW_METRICS},
                params=first.params,
                seconds_per_epoch=float(np.mean([r.seconds_per_epoch for r in runs])),
                best_epoch=float(np.mean([r.best_epoch for r in runs])),
                epochs=first.epochs,
                seeds=tuple(r.seed for r in runs),
                runs=tuple(runs),
            )
        )
    return rows


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """CSV text: a header of ``columns`` and one line per row (floats to 6 digits, NaN empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row[c]) for c in columns])
    return buffer.getvalue()


def write_results_csv(
    path: str | os.PathLike[str], ranking: list[ResultRow], tied: int = 1
) -> Path:
    """``results.csv``: one line per model x loss (:data:`RESULT_COLUMNS`) in the order of
    ``ranking`` (best first); the first ``tied`` rows (when more than one) are marked as tied."""
    values = [
        row.csv_values(rank, tied > 1 and rank <= tied) for rank, row in enumerate(ranking, start=1)
    ]
    return write_text_atomic(path, csv_text(RESULT_COLUMNS, values), overwrite=True)


def write_runs_csv(path: str | os.PathLike[str], records: list[RunRecord]) -> Path:
    """``runs.csv``: one line per run (:data:`RUN_COLUMNS`)."""
    rows = [
        {
            "name": r.name,
            "model": r.model,
            "loss": r.loss,
            "seed": r.seed,
            **{m: r.metric(m) for m in ROW_METRICS},
            "params": r.params,
            "seconds_per_epoch": r.seconds_per_epoch,
            "best_epoch": r.best_epoch,
            "epochs": r.epochs,
        }
        for r in records
    ]
    return write_text_atomic(path, csv_text(RUN_COLUMNS, rows), overwrite=True)
