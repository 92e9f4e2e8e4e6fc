"""The Trainer: a small class whose steps read top to bottom (nnU-Net's manner).

``Trainer(config).fit()`` fixes the run's data contract (training / validation / test series,
ground truth, sampling; :mod:`.run_data`), prepares the cache (the training and validation
series in the canonical frame, reviews applied), trains on nodule
crops mixed with negative crops (random body crops and hard negatives where the model fired
without a nodule; :mod:`src_train.datasets`, :mod:`.sampling`) with batch augmentation on the
device, validates on epoch 1, every ``val_every``-th epoch and the last by **detection on whole
validation series** (:mod:`.validation`: nodule recall, FP per scan, CPM as ``lunaseg eval``
computes them, plus voxel metrics), and keeps a run folder (:mod:`.run_folder`). "best" is the
validated epoch with the highest CPM among those whose voxel precision reaches
``best_min_precision`` (the last epoch when none does, said so). Validation and the second
stage score against the run's one ground truth: the reviewed nodules of the annotation file
the cache reads (:func:`.run_data.run_truth`). The test series are never looked at here.

Progress leaves through callbacks receiving :class:`ProgressEvent` objects (one per batch,
validation step, epoch, checkpoint, end); a stop request (:meth:`Trainer.request_stop`, a
``should_stop`` callable, SIGTERM/SIGINT via :func:`install_stop_signals`) is honoured between
training batches and validation steps: ``checkpoint_latest.pt`` then holds the last completed
epoch's number and the exact position inside the next one (batches done, the partial epoch's
metrics, the hard-negative pool), so ``--resume`` continues at the next sample and the run ends
bit for bit as an uninterrupted one would on a CPU. A stop during validation keeps the trained
epoch and validates it first thing on resume.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel; each
process sees its share of every epoch and of the validation series; only rank 0 writes files and
calls callbacks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from src_train.cache import SeriesCache
from src_train.datasets import TrainingDataset
from src_train.errors import AnnotationError, CancelledError
from src_train.infer.tuner import TunerCache
from src_train.losses import SegmentationMetrics
from src_train.luna import LunaFolder
from src_train.model import Checkpoint
from src_train.records.contract import (
    CONTRACT_KEY,
    DataContract,
)
from src_train.train import run_data
from src_train.train.config import TrainConfig
from src_train.train.events import Callback, TrainResult
from src_train.train.loop import TrainingLoop, per_second
from src_train.train.passes import SeriesPasses
from src_train.train.pictures import batch_pictures, log_pictures
from src_train.train.run_data import config_record, pass_options, prepare_contract, run_truth
from src_train.train.run_folder import LATEST
from src_train.train.runtime import (
    DistInfo,
    choose_device,
    init_distributed,
    step_settings,
)
from src_train.train.sampling import HardNegativePool, epoch_loader
from src_train.train.second_stage import (
    SecondStage,
    SecondStageRecord,
    fit_second_stage,
    second_stage_line,
    store_second_stage,
)
from src_train.train.validation import (
    SeriesValidation,
    best_key,
    iter_validate_series,
    score_validation,
)

log = logging.getLogger(__name__)

_SEED_MASK = (1 << 63) - 1

#: Key of a checkpoint's ``extra`` for the position inside an unfinished epoch.
PARTIAL_KEY = "partial_epoch"


def _batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """Seed of one batch's augmentation: a resumed run draws what the uninterrupted one did."""
    return hash((seed, epoch, rank, batch)) & _SEED_MASK


class Trainer(TrainingLoop):
    """Train a segmentation model; see the module docstring for the run folder.

    Args:
        config: the options.
        callbacks: called on rank 0 with every :class:`ProgressEvent`.
        should_stop: polled between batches; True = stop request (like :meth:`request_stop`).
        command_line: stored in checkpoints (default ``sys.argv``).

    The loop is :meth:`TrainingLoop.fit`: :meth:`setup`, then per epoch :meth:`train_epoch`
    (calling :meth:`train_step` per batch), :meth:`validate` when due, :meth:`on_epoch_end`;
    the second stage (:meth:`after_last_epoch`); finally :meth:`on_train_end`.
    """

    config: TrainConfig
    resumes_mid_epoch = True

    def __init__(
        self,
        config: TrainConfig,
        callbacks: Sequence[Callback] = (),
        should_stop: Callable[[], bool] | None = None,
        command_line: Sequence[str] | None = None,
    ) -> None:
        super().__init__(config, callbacks, should_stop, command_line)
        self.dist = DistInfo()
        self.start_batch = 0
        self.contract: DataContract | None = None
        self.hard_pool = HardNegativePool()
        #: Inference tuning shared by this run's validations.
        self.tuners = TunerCache()
        #: The second stage fitted after the last epoch (``--ranker``): for which segmenter,
        #: and how it did; None until it ran.
        self.second: SecondStageRecord | None = None
        self._last_val: list[SeriesValidation] = []
        self._best_val: list[SeriesValidation] | None = None
        self._partial: dict[str, Any] | None = None
        self._resume_metrics: list[float] | None = None
        self._writer: Any = None

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and calls callbacks."""
        return self.dist.is_main

    # -- stop requests -------------------------------------------------------------------------
    def _agreed_stop(self) -> bool:
        """Stop request of any process (all processes agree; one all-reduce when distributed)."""
        if self.dist.any(self.stop_requested, self._reduce_device):
            self._stop.set()
            return True
        return False

    def stop_between_epochs(self) -> bool:
        """Every process's stop request (one all-reduce when distributed)."""
        return self._agreed_stop()

    def barrier(self) -> None:
        """Wait for every process."""
        self.dist.barrier()

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Device, run folder, contract, cache, data, model, optimiser, resume state, writers."""
        cfg = self.config
        self.dist = init_distributed(cfg.device)
        if not self.dist.is_main:  # rank 0 reports; the others only warn
            logging.getLogger("src_train").setLevel(logging.WARNING)
        self.device = choose_device(cfg.device, self.dist)
        self._reduce_device = (
            self.device if self.dist.active and self.device.type == "cuda" else torch.device("cpu")
        )
        self.amp_dtype, self.channels_last = step_settings(cfg.amp, cfg.channels_last, self.device)
        # whole-series passes (validation, the second stage) run while the data-loader
        # workers are idle: there the runner may use every core (one process on a CPU)
        cpu_alone = self.device.type == "cpu" and not self.dist.active
        self._pass_threads = torch.get_num_threads() if cpu_alone else None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.dist.rank)
        # Every process checks (same files), so none waits for a failed rank 0.
        self.run.check(resume=cfg.resume, overwrite=cfg.overwrite)
        # read the checkpoint to resume before caching, so that a bad one fails in a second
        resume_from = self.run.load_latest(cfg.model_config()) if cfg.resume else None
        self._prepare_contract(resume_from)
        self._prepare_data()
        cfg = self.config  # the stored contract's options on resume
        self.build_training_parts(cfg.model_config(), cfg.loss_config(), cfg.augment_config())
        if resume_from is not None:
            self.restore(resume_from)
        if self.dist.is_main:
            self._write_config()
            if cfg.resume:
                # drops rows of epochs the checkpoint lacks (e.g. written just before a crash)
                self.run.write_metrics(self.history)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run.tensorboard))
        log.info(
            "training %s on %s (amp %s, channels_last %s, %d process(es)): %d train / %d "
            "validation (selection) / %d test series, %d nodules; %.0f %% negative crops",
            cfg.model,
            self.device,
            self.amp_dtype,
            self.channels_last,
            self.dist.world_size,
            len(self.train_uids),
            len(self.val_uids),
            len(self.test_uids),
            len(self.train_set.nodules),
            100 * cfg.negative_fraction,
        )
        if self.contract is not None and self.contract.point_series:
            log.info(
                "second stage: its classifier also learns the points of %d series of %s "
                "(--ranker-points; the segmenter never sees them)",
                len(self.contract.point_series),
                cfg.ranker_points,
            )
        self._ready = True

    def _open_run_dir(self) -> None:
        """Once every check has passed: clear an earlier run (--overwrite), open train.log.

        A run that fails its checks leaves no run folder and an earlier run untouched.
        """
        if self.dist.is_main:
            if self.config.overwrite and not self.config.resume:
                self.run.clear()
            self._log_handler = self.run.open_log()
        self.barrier()

    def _prepare_contract(self, resume_from: Checkpoint | None) -> None:
        """Fix the split and data options: today's for a new run, the stored ones on resume."""
        self.folder, contract, self.config = prepare_contract(
            self.config, resume_from, self.run_dir
        )
        self.contract = contract
        self.train_uids, self.val_uids = list(contract.train_series), list(contract.val_series)
        self.test_uids = list(contract.test_series)  # never looked at here

    def _prepare_data(self) -> None:
        cfg = self.config
        folder = self.folder
        self.cache = SeriesCache(
            folder, cfg.cache_dir, threshold_hu=cfg.threshold_hu, mask_method=cfg.mask_method
        )
        if not any(n.is_nodule for uid in self.train_uids for n in folder.nodules(uid)):
            raise AnnotationError(
                f"{folder.annotations_path} has no nodule in any of the {len(self.train_uids)} "
                f"training series of {folder.root} (series UIDs must match the .mhd file "
                "names). Check the annotation file or the data folder."
            )
        self._open_run_dir()
        # Each process builds its share of missing cache entries; then all read every meta.
        uids = sorted(self.train_uids + self.val_uids)
        share = self.dist.share(uids)
        cancelled = False
        try:
            self.cache.build_all(
                share,
                progress=lambda done, total, uid: self.emit(
                    "cache", batch=done, batches=total, message=f"cached {uid}"
                ),
                should_stop=self.stop_requested_fn,
            )
        except CancelledError:
            cancelled = True
        if self.dist.any(cancelled, self._reduce_device):
            raise CancelledError("Training stopped while the cache was being prepared.")
        self.train_set = TrainingDataset(
            self.cache, self.train_uids, cfg.epoch_samples, cfg.sample_config(), cfg.seed
        )
        assert self.contract is not None
        self.contract = run_data.with_training_spacing(self.contract, self.cache)
        self.truth = run_truth(folder, self.contract)
        self.val_options = pass_options(cfg, self.device, self.channels_last)
        self.passes = SeriesPasses(
            self.cache,
            self.val_options,
            self.tuners,
            self.dist,
            self.emit,
            self.stop_requested_fn,
            self._pass_threads,
        )

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``model`` when the run has several processes."""
        if not self.dist.active:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt`` (see :meth:`RunFolder.load_latest`): the loop's state, plus
        the learning rate asked for now, the GradScaler, the position inside an unfinished
        epoch, the hard-negative pool and the second stage."""
        super().restore(ckpt)
        # Adam's moments continue; the learning rate is the one asked for now (set per epoch
        # by train_epoch from --lr and --lr-schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        extra = ckpt.extra
        if extra.get("grad_scaler"):
            self.scaler.load_state_dict(extra["grad_scaler"])
        self.hard_pool = HardNegativePool.from_state(extra.get("hard_pool"))
        self.second = SecondStageRecord.from_extra(extra, ckpt.epoch, str(ckpt.path))
        partial = extra.get(PARTIAL_KEY)
        if partial and int(partial["epoch"]) == self.start_epoch:
            self.start_batch = int(partial["batches_done"])
            # rank 0 carries the partial epoch's (already reduced) counters; others start at 0
            self._resume_metrics = list(partial["metrics"]) if self.dist.is_main else None
        log.info(
            "resumed %s at epoch %d%s (%d samples seen, sha1 %s)",
            ckpt.path,
            self.start_epoch,
            f", batch {self.start_batch + 1}" if self.start_batch else "",
            self.samples_seen,
            ckpt.sha1,
        )

    def _write_config(self) -> None:
        assert self.contract is not None
        record = config_record(self.config, self.contract, self.model_config, self.dist)
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off"
        record.update(device=str(self.device), amp=amp, channels_last=self.channels_last)
        self.run.write_config({**record, "command_line": self.command_line})

    def checkpoint_extra(self, name: str, epoch: int) -> dict[str, Any]:
        """The loop's extra plus the hard-negative pool, GradScaler, data contract, second stage
        and (latest) the position inside an unfinished epoch."""
        extra = super().checkpoint_extra(name, epoch)
        extra.update(
            hard_pool=self.hard_pool.state(),
            grad_scaler=self.scaler.state_dict(),
            **{CONTRACT_KEY: self.contract.to_dict() if self.contract else None},
        )
        if self.second is not None:
            fields, note = self.second.checkpoint_fields(name, epoch)
            extra.update(fields)
            if note:
                log.info("%s", note)
        if name == LATEST and self._partial is not None:
            extra[PARTIAL_KEY] = self._partial
        return extra

    # -- steps ---------------------------------------------------------------------------------
    def _to_device(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = image.to(self.device, non_blocking=True)
        label = label.to(self.device, non_blocking=True)
        return image, label

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Train one epoch (from :attr:`start_batch` when resuming inside it); returns its
        metrics, or None when a stop request ended it (:attr:`_partial` then says where)."""
        cfg = self.config
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(epoch)
        self.train_set.set_epoch(epoch)
        self.train_set.set_hard_negatives(self.hard_pool.locations)
        first = self.start_batch if epoch == self.start_epoch else 0
        loader, sampler = epoch_loader(
            self.train_set,
            cfg.batch_size,
            cfg.num_workers,
            self.dist,
            first,
            pin_memory=self.device.type == "cuda",
        )
        metrics = SegmentationMetrics(self.device)
        if first and self._resume_metrics is not None:
            metrics.totals += torch.tensor(self._resume_metrics, dtype=torch.float64).to(
                self.device
            )
        batches = sampler.batches
        started = time.perf_counter()
        epoch_samples = 0
        for i, (image, label) in enumerate(loader, start=first + 1):
            if self._agreed_stop():
                self._partial = self._partial_state(epoch, i - 1, metrics)
                return None
            self.aug_generator.manual_seed(_batch_seed(cfg.seed, epoch, self.dist.rank, i))
            image, label = self._to_device(image, label)
            loss, logits, aug_image, aug_label = self.train_step(image, label)
            metrics.update(logits, aug_label, loss)
            if cfg.negative_fraction > 0:
                self.hard_pool.note_batch(
                    self.train_set, sampler.batch_indices(i - 1), logits, aug_label
                )
            seen = image.shape[0] * self.dist.world_size
            self.samples_seen += seen
            epoch_samples += seen
            if self.dist.is_main and (i % cfg.progress_every == 0 or i == batches):
                rate = per_second(epoch_samples, started)
                self.emit(
                    "batch",
                    epoch=epoch,
                    batch=i,
                    batches=batches,
                    samples_per_s=rate,
                    metrics={"loss": float(loss)},
                )
            if i == 1 and self._writer is not None and cfg.tb_images:
                self._log_images("train", epoch, aug_image, logits, aug_label)
        metrics.reduce()
        result = metrics.compute()
        result["samples_per_s"] = per_second(epoch_samples, started)
        result["lr"] = cfg.lr_at(epoch)
        result["hard_pool"] = float(len(self.hard_pool.spots))
        found = self.dist.gather(self.hard_pool.found)
        self.hard_pool.found = []
        self.hard_pool.end_epoch([spot for part in found for spot in part])
        return result

    def _partial_state(
        self, epoch: int, batches_done: int, metrics: SegmentationMetrics
    ) -> dict[str, Any]:
        """Where a stop left an epoch: its number, the batches done, the counters so far (summed
        over processes) and the hard negatives found so far (all processes)."""
        metrics.reduce()
        found = self.dist.gather(self.hard_pool.found)
        self.hard_pool.found = [spot for part in found for spot in part]
        return {
            "epoch": epoch,
            "batches_done": batches_done,
            "metrics": [float(v) for v in metrics.totals.cpu()],
        }

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float] | None:
        """Detection and voxel metrics on the whole validation series (see :mod:`.validation`).

        Returns None when a stop request ended it (checked between slices' batches; between
        series when distributed).
        """
        share = self.dist.share(self.val_uids)
        rounds = math.ceil(len(self.val_uids) / self.dist.world_size)
        total = sum(self.cache.meta(uid).shape_irc[0] for uid in share)
        outcomes: list[SeriesValidation] = []
        done = 0
        for k in range(rounds):
            if self._agreed_stop():
                return None
            if k >= len(share):
                continue
            uid = share[k]
            pictures = self.config.tb_images if (k == 0 and self._writer is not None) else 0
            steps = iter_validate_series(
                self.cache, uid, self.model_plain, self.val_options, self.tuners, pictures
            )
            try:
                outcome: SeriesValidation = self.passes.drive(
                    steps, "validation", epoch=epoch, offset=done, total=total
                )
            except CancelledError:
                return None
            done += self.cache.meta(uid).shape_irc[0]
            outcomes.append(outcome)
            if outcome.pictures and self._writer is not None:
                log_pictures(self._writer, "val", epoch, outcome.pictures)
        gathered = self.dist.gather([dataclasses.replace(o, pictures=[]) for o in outcomes])
        self._last_val = [o for part in gathered for o in part]
        return score_validation(self._last_val, self.truth, self.val_uids)

    def epoch_row(self, epoch: int, seconds: float) -> dict[str, float]:
        """An epoch's row starts with its number and the samples seen so far."""
        return {"epoch": float(epoch), "samples_seen": float(self.samples_seen)}

    def write_epoch(self, row: dict[str, float]) -> None:
        """``metrics.jsonl`` = the history (a validation finished on resume rewrites its row);
        the row's scalars to TensorBoard."""
        self.run.write_metrics(self.history)
        if self._writer is not None:
            for name, value in row.items():
                if "/" in name:
                    self._writer.add_scalar(name, value, self.samples_seen)
            self._writer.flush()

    def best_key_of(self, val: dict[str, float]) -> tuple[float, ...] | None:
        """CPM, then nodule recall, then voxel F1, among epochs reaching the precision floor
        (:func:`~src_train.train.validation.best_key`)."""
        return best_key(val, self.config.best_min_precision)

    def on_new_best(self) -> None:
        """Keep the best epoch's validation candidates for the second stage."""
        self._best_val = list(self._last_val)

    def log_epoch(self, epoch: int, row: dict[str, float], val: dict[str, float] | None) -> None:
        """Training loss, recall, F1 and throughput; validation detection and voxel metrics."""
        train = {k[len("train/") :]: v for k, v in row.items() if k.startswith("train/")}
        log.info(
            "epoch %d/%d: train loss %.4f recall %.3f F1 %.3f (%.1f samples/s)%s",
            epoch,
            self.config.epochs,
            train.get("loss", math.nan),
            train.get("recall", math.nan),
            train.get("f1", math.nan),
            train.get("samples_per_s", math.nan),
            ""
            if val is None
            else f"; val nodule recall {val['nodule_recall']:.3f}, "
            f"{val['fp_per_scan']:.1f} FP/scan, CPM {val['cpm']:.3f}, voxel precision "
            f"{val['voxel_precision']:.3f} recall {val['voxel_recall']:.3f}",
        )

    def no_best_reason(self) -> str:
        """Only epochs reaching the voxel precision floor rank."""
        return (
            f"none reached voxel precision {self.config.best_min_precision} (--best-min-precision)"
        )

    def after_last_epoch(self) -> bool:
        """Fit ``--ranker`` (:func:`~src_train.train.second_stage.fit_second_stage`) for the
        segmenter of ``checkpoint_best.pt`` and store it there; the latest and final
        checkpoints carry it only when they hold that segmenter, else a note saying why not
        (:class:`~src_train.train.second_stage.SecondStageRecord`). False when a stop request
        interrupted it (a resumed run fits it again)."""
        cfg = self.config
        if cfg.ranker == "none" or self.second is not None:
            return True
        # checkpoint_best.pt's epoch (the last one when none qualified: write_fallback_best)
        fitted_for = self.best_epoch or int(self.history[-1]["epoch"]) if self.history else 0
        # the contract's --ranker-points series (read from the folder named now)
        points = LunaFolder(cfg.ranker_points) if cfg.ranker_points else None
        point_uids = self.contract.point_series if points is not None and self.contract else ()
        try:
            fitted = fit_second_stage(
                self.passes,
                self.folder,
                self.truth,
                cfg.ranker,
                self.best_model(),
                self.train_uids,
                self.val_uids,
                ranker_series=cfg.ranker_series,
                seed=cfg.seed,
                outcomes=self._best_val,
                points_folder=points,
                point_uids=point_uids,
            )
        except CancelledError as exc:
            log.warning("second stage not fitted: %s", exc)
            return False
        if fitted is None:
            self.second = SecondStageRecord(
                cfg.ranker, None, reason="no ranker could be fitted (see train.log)"
            )
        else:
            self.second = SecondStageRecord(cfg.ranker, fitted_for, fitted.ranker, fitted.metrics)
        if self.dist.is_main:
            self._record_second_stage(fitted)
        return True

    def _record_second_stage(self, fitted: SecondStage | None) -> None:
        """Log the second stage, add its metrics to the best epoch's row, store it (or the note
        saying why not) in the run's best and latest checkpoints."""
        assert self.second is not None
        if fitted is not None:
            log.info("%s", second_stage_line(self.config.ranker, fitted))
            if self.history:
                row = next(
                    (r for r in self.history if r["epoch"] == self.best_epoch), self.history[-1]
                )
                row.update({f"ranked/{k}": v for k, v in fitted.metrics.items()})
                self.run.write_metrics(self.history)
        store_second_stage(self.run, self.second)
        if fitted is not None:
            self.emit("ranker", message="second stage fitted", metrics=fitted.metrics)

    def _log_images(
        self,
        tag: str,
        epoch: int,
        image: torch.Tensor,
        logits: torch.Tensor,
        label: torch.Tensor,
        first: int = 0,
    ) -> None:
        """A batch's center slices to TensorBoard as ``tag/<n>`` (:mod:`.pictures`)."""
        pictures = batch_pictures(image, logits, label, self.config.tb_images)
        log_pictures(self._writer, tag, epoch, pictures, first)

    def stop_position(self) -> str:
        """`` in epoch N after batch M`` when a stop interrupted an epoch."""
        if not self._partial:
            return ""
        return f" in epoch {self._partial['epoch']} after batch {self._partial['batches_done']}"

    def result(self, epoch: int, stopped: bool) -> TrainResult:
        """The run's :class:`TrainResult`."""
        return TrainResult(
            run_dir=self.run_dir,
            epoch=epoch,
            samples_seen=self.samples_seen,
            stopped=stopped,
            best_epoch=self.best_epoch,
            best_metrics=self.best_metrics,
            last_metrics=self.history[-1] if self.history else {},
            history=list(self.history),
            ranked_metrics=dict(self.second.metrics) if self.second else {},
        )

    def close(self) -> None:
        """Close TensorBoard and the log file; leave the process group if this run joined it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        super().close()
        if self.dist.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.dist = DistInfo()
