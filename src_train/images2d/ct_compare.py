"""``lunaseg compare`` on a CT folder in LUNA16 layout: every model x loss through the CT pipeline.

Each run is ``lunaseg train`` used as a library (:class:`~src_train.train.TrainConfig`,
:class:`~src_train.train.Trainer`): nodule crops from the training cache, whole validation
slices of the held-out series (every ``val_stride``-th), the CT run folder. The comparison's
options map onto it: model (``unet`` or ``segnet``; CT training has transposed-convolution
upsampling only), filters, depth, loss, epochs, ``epoch_samples`` crops per epoch, batch size,
learning rate, seeds, augmentation (the colour ``jitter`` is dropped: it is for RGB), device,
threads, AMP, memory format, ``cache_dir``. ``size`` and ``split`` are image-set options and do
not apply (crops are ``TrainConfig.crop_size``; series split by ``val_stride``).

**What is ranked**: the validation Dice of each run's *last validated epoch*: voxels pooled
over all whole validation slices that hold mask voxels (the CT Trainer's
``SegmentationMetrics``: Dice = 2 TP / (2 TP + FP + FN) of the pooled counts; IoU likewise),
so no run's number is picked on the slices it is scored on. The validation metrics of each
run's ``checkpoint_best.pt`` (the CT Trainer keeps the best by recall, then F1) are recorded
beside it. Detection metrics (nodule recall, FROC, CPM) are not computed here: they come from
``lunaseg infer`` and ``lunaseg eval`` on a run's checkpoint (the report prints the commands).

Files: ``OUT/compare.json``, ``OUT/runs/<name>/`` (CT run folders, each with ``result.json``
once finished), ``OUT/results.csv``, ``OUT/runs.csv``, ``OUT/report.md`` and
``OUT/figures/`` (:mod:`.ct_report`). ``resume`` keeps finished runs and resumes the others from
their latest checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src_train.augment import COLOR_AUGMENTATIONS
from src_train.errors import ConfigError, LunaSegError
from src_train.images2d.options import RUNS_DIR, CompareOptions, RunPlan
from src_train.images2d.results import RESULT_FILE, load_record, save_record
from src_train.model import build_model, count_parameters
from src_train.records import metric_keys as keys
from src_train.train import LATEST, ProgressEvent, RunFolder, TrainConfig, Trainer

log = logging.getLogger(__name__)

#: The metrics a CT comparison reports, from the validation rows (``val/<name>``).
CT_METRICS = ("dice", "iou", "precision", "recall", "cpm")

#: What the ranking is called in the report and the CLI.
CT_RANK_NAME = "validation Dice (last validated epoch, voxels of whole validation slices)"


@dataclass
class CtRunRecord:
    """One finished CT run (saved as ``result.json`` in its run folder).

    Attributes:
        name, model, arch, filters, depth, loss, seed: what ran (as :class:`RunPlan` names it).
        params: trainable parameters.
        epochs: epochs trained.
        last_epoch: the last validated epoch, whose ``val`` metrics are ranked.
        val: ``dice``, ``iou``, ``precision``, ``recall``, ``loss`` of ``last_epoch``.
        best_epoch, best_val: the epoch of ``checkpoint_best.pt`` and its validation metrics.
        seconds_per_epoch: median wall time of the epochs trained in the last process, s
            (the first includes preparing the cache).
        train_series, val_series, test_series: how many series trained, validated (the
            ranking's) and were kept for testing (not used by the comparison; 0 in records
            from before the test split).
        history: the run's ``metrics.jsonl`` rows.
        device: where it trained.
    """

    name: str
    model: str
    arch: str
    filters: int
    depth: int
    loss: str
    seed: int
    params: int
    epochs: int
    last_epoch: int
    val: dict[str, float]
    best_epoch: int
    best_val: dict[str, float]
    seconds_per_epoch: float
    train_series: int
    val_series: int
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = ""
    test_series: int = 0

    @property
    def label(self) -> str:
        """``model + loss``."""
        return f"{self.model} + {self.loss}"

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``result.json`` into ``run_dir`` (atomically)."""
        return save_record(self, run_dir)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> CtRunRecord:
        """Read ``result.json`` of ``run_dir``."""
        return load_record(cls, run_dir)


def ct_augment(names: str) -> str:
    """The comparison's augmentation list without the RGB-only transforms."""
    kept = [n for n in names.replace(" ", "").split(",") if n and n not in COLOR_AUGMENTATIONS]
    return ",".join(kept) if kept else "none"


def ct_train_config(plan: RunPlan, options: CompareOptions, out: Path, **extra: Any) -> TrainConfig:
    """The :class:`TrainConfig` of one CT run of the comparison."""
    if plan.spec.arch == "unet" and plan.spec.up != "transpose":
        raise ConfigError(
            f"Model {plan.spec.label!r}: CT training has transposed-convolution upsampling only; "
            "compare unet or segnet (with :FILTERS) on a CT folder."
        )
    return TrainConfig(
        data_dir=options.data,
        run_dir=str(out / RUNS_DIR / plan.name),
        cache_dir=options.cache_dir,
        model=plan.spec.arch,
        depth=options.depth,
        filters=plan.spec.filters,
        loss=plan.loss,
        lr=options.lr,
        epochs=options.epochs,
        epoch_samples=options.epoch_samples,
        batch_size=options.batch_size,
        augment=ct_augment(options.augment),
        seed=plan.seed,
        device=options.device,
        threads=options.threads,
        amp=options.amp,
        channels_last=options.channels_last,
        tensorboard=False,
        ranker="none",  # segmenters are compared (validation Dice); no second stage to fit
        **extra,
    )


def _val_metrics(row: dict[str, float]) -> dict[str, float]:
    """``dice``, ``iou``... of a ``metrics.jsonl`` row: the CT Trainer's voxel metrics over
    whole validation series (its F1 is the Dice) and its detection CPM."""
    names = {"dice": keys.VOXEL_F1, "iou": keys.VOXEL_IOU, "precision": keys.VOXEL_PRECISION}
    names.update({"recall": keys.VOXEL_RECALL, "cpm": keys.CPM})
    return {name: float(row.get(keys.val_key(key), math.nan)) for name, key in names.items()}


def ct_record(
    plan: RunPlan, config: TrainConfig, trainer: Trainer, epoch_seconds: list[float]
) -> CtRunRecord:
    """The record of a finished CT run (its metrics from ``trainer.history``)."""
    validated = [row for row in trainer.history if keys.val_key(keys.VOXEL_F1) in row]
    if not validated:
        raise LunaSegError(f"{plan.name} finished without a validated epoch; nothing to rank.")
    last = validated[-1]
    saved = RunFolder(config.run_dir).read_config() or {}
    best = {keys.val_key(k): v for k, v in trainer.best_metrics.items()}
    return CtRunRecord(
        name=plan.name,
        model=plan.spec.label,
        arch=plan.spec.arch,
        filters=plan.spec.filters,
        depth=config.depth,
        loss=plan.loss,
        seed=plan.seed,
        params=count_parameters(build_model(config.model_config())),
        epochs=config.epochs,
        last_epoch=int(last["epoch"]),
        val=_val_metrics(last),
        best_epoch=int(trainer.best_epoch or 0),
        best_val=_val_metrics(best),
        seconds_per_epoch=float(np.median(epoch_seconds)) if epoch_seconds else math.nan,
        train_series=len(saved.get("train_series") or []),
        val_series=len(saved.get("val_series") or []),
        test_series=len(saved.get("test_series") or []),
        history=list(trainer.history),
        device=str(trainer.device),
    )


def run_ct_comparison(
    options: CompareOptions,
    emit: Callable[..., None],
    should_stop: Callable[[], bool] | None,
    command_line: Sequence[str],
) -> tuple[list[CtRunRecord], bool]:
    """Train (or resume, or keep) every run of ``options.plan()`` on the CT folder.

    ``emit(kind, **values)`` sends a comparison event (see
    :class:`~src_train.images2d.compare.CompareEvent`). Returns the finished records and
    whether a stop request ended the comparison early.
    """
    out = Path(options.out)
    plans = options.plan()
    configs = [ct_train_config(plan, options, out) for plan in plans]  # every name checked now
    records: list[CtRunRecord] = []
    stop = should_stop or (lambda: False)
    for i, (plan, config) in enumerate(zip(plans, configs, strict=True), start=1):
        run_dir = Path(config.run_dir)
        where = {"run": plan.name, "run_index": i, "runs": len(plans)}
        if (run_dir / RESULT_FILE).is_file():
            records.append(CtRunRecord.load(run_dir))
            emit("skip", message=f"{plan.name}: already done", **where)
            continue
        if stop():
            emit("stopped", message=f"stopped before {plan.name}", **where)
            return records, True
        resume = (run_dir / LATEST).is_file()
        config = ct_train_config(plan, options, out, resume=resume, overwrite=not resume)
        emit("run", message=f"{plan.name}: {'resuming' if resume else 'training'}", **where)
        epoch_ends: list[float] = [time.time()]

        def forward(
            event: ProgressEvent, where: dict[str, Any] = where, ends: list[float] = epoch_ends
        ) -> None:
            if event.kind == "epoch":
                ends.append(event.time)
            emit("train", train=event, **where)

        trainer = Trainer(
            config, callbacks=[forward], should_stop=should_stop, command_line=command_line
        )
        result = trainer.fit()
        if result.stopped:
            emit("stopped", message=f"{plan.name} stopped at epoch {result.epoch}", **where)
            return records, True
        record = ct_record(plan, config, trainer, np.diff(epoch_ends).tolist())
        record.save(run_dir)
        records.append(record)
        emit(
            "scored",
            metrics=record.val,
            message=f"{plan.name}: validation Dice {record.val['dice']:.3f} "
            f"(epoch {record.last_epoch})",
            **where,
        )
    return records, False
