"""The Trainer: a small class whose steps read top to bottom (nnU-Net's manner).

``Trainer(config).fit()`` prepares the cache (every series in the canonical frame), fixes the
run's data contract (series split, ground truth, sampling; :mod:`.contract`), trains on nodule
crops mixed with negative crops (random body crops and hard negatives where the model fired
without a nodule; :mod:`src_train.datasets`, :mod:`.sampling`) with batch augmentation on the
device, validates on epoch 1, every ``val_every``-th epoch and the last by **detection on whole
validation series** (:mod:`.validation`: nodule recall, FP per scan, CPM as ``lunaseg eval``
computes them, plus voxel metrics), and keeps a run folder (:mod:`.run_folder`). "best" is the
validated epoch with the highest CPM among those whose voxel precision reaches
``best_min_precision``.

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

import contextlib
import dataclasses
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from src_train.augment import BatchAugment
from src_train.cache import SeriesCache, check_training_folder
from src_train.classify import ClassifierConfig, Ranker, RankerExamples, fit_ranker
from src_train.classify.ranker import RANKER_KEY
from src_train.datasets import NODULE, TrainingDataset
from src_train.errors import AnnotationError, CancelledError, ConfigError
from src_train.infer.candidates import CandidateConfig
from src_train.infer.runner import InferenceOptions, InferenceProgress
from src_train.infer.tuner import TunerCache
from src_train.losses import SegmentationLoss, SegmentationMetrics
from src_train.luna import LunaFolder
from src_train.metrics import error_overlay_rgb, window_to_grey
from src_train.model import Checkpoint, build_model, load_checkpoint, save_checkpoint
from src_train.records.contract import (
    CONTRACT_KEY,
    DataContract,
    contract_of_checkpoint,
    folder_fingerprint,
    resolve_contract,
)
from src_train.records.split import split_series
from src_train.records.truth import scoring_truth
from src_train.train.config import TrainConfig
from src_train.train.events import Callback, ProgressEvent, TrainResult
from src_train.train.run_folder import BEST, FINAL, LATEST, RunFolder
from src_train.train.runtime import (
    DistInfo,
    choose_device,
    ignore_stop_signals,
    init_distributed,
    step_settings,
)
from src_train.train.sampling import EpochSampler, HardNegativePool
from src_train.train.second_stage import iter_mine, mining_series
from src_train.train.validation import (
    SeriesValidation,
    best_key,
    cached_volume,
    iter_validate_series,
    score_validation,
)

log = logging.getLogger(__name__)

_SEED_MASK = (1 << 63) - 1

#: Shortest time a rate is divided by, seconds (avoids a division by zero).
_MIN_SECONDS = 1e-9

#: Keys of a checkpoint's ``extra`` for the position inside an unfinished epoch and for an
#: epoch whose validation a stop interrupted.
PARTIAL_KEY = "partial_epoch"
PENDING_VALIDATION_KEY = "pending_validation"


def _per_second(count: int, started: float) -> float:
    """``count`` per second since ``started`` (a ``time.perf_counter()`` value)."""
    return count / max(time.perf_counter() - started, _MIN_SECONDS)


def _batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """Seed of one batch's augmentation: a resumed run draws what the uninterrupted one did."""
    return hash((seed, epoch, rank, batch)) & _SEED_MASK


class Trainer:
    """Train a segmentation model; see the module docstring for the run folder.

    Args:
        config: the options.
        callbacks: called on rank 0 with every :class:`ProgressEvent`.
        should_stop: polled between batches; True = stop request (like :meth:`request_stop`).
        command_line: stored in checkpoints (default ``sys.argv``).

    The steps, in the order :meth:`fit` calls them: :meth:`setup`, then per epoch
    :meth:`train_epoch` (calling :meth:`train_step` per batch), :meth:`validate` when due,
    :meth:`on_epoch_end`; finally :meth:`on_train_end`.
    """

    def __init__(
        self,
        config: TrainConfig,
        callbacks: Sequence[Callback] = (),
        should_stop: Callable[[], bool] | None = None,
        command_line: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.should_stop = should_stop
        self.command_line = list(command_line if command_line is not None else sys.argv)
        self.run = RunFolder(config.run_dir)
        self.run_dir = self.run.path
        self._stop = threading.Event()
        self.dist = DistInfo()
        self.start_epoch = 1
        self.start_batch = 0
        self.samples_seen = 0
        self.best_key: tuple[float, ...] | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.contract: DataContract | None = None
        self.hard_pool = HardNegativePool()
        #: Inference tuning shared by this run's validations.
        self.tuners = TunerCache()
        #: The second stage fitted after the last epoch (``--ranker``), and how it did.
        self.ranker: Ranker | None = None
        self.ranked_metrics: dict[str, float] = {}
        self._last_val: list[SeriesValidation] = []
        self._best_val: list[SeriesValidation] | None = None
        self._partial: dict[str, Any] | None = None
        self._resume_metrics: list[float] | None = None
        self._pending_validation: int | None = None
        self._log_handler: logging.Handler | None = None
        self._writer: Any = None
        self._ready = False

    # -- stop requests -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the run to stop after the current batch (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested (locally)."""
        return self._stop.is_set() or bool(self.should_stop and self.should_stop())

    def _agreed_stop(self) -> bool:
        """Stop request of any process (all processes agree; one all-reduce when distributed)."""
        if self._any_process(self.stop_requested):
            self._stop.set()
            return True
        return False

    # -- events --------------------------------------------------------------------------------
    def emit(self, kind: str, **fields: Any) -> None:
        """Send a :class:`ProgressEvent` to every callback (rank 0 only)."""
        if not self.dist.is_main or not self.callbacks:
            return
        event = ProgressEvent(
            kind=kind, epochs=self.config.epochs, samples_seen=self.samples_seen, **fields
        )
        for callback in self.callbacks:
            callback(event)

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
        self._prepare_run_dir()
        # read the checkpoint to resume before caching, so that a bad one fails in a second
        resume_from = self.run.load_latest(cfg.model_config()) if cfg.resume else None
        self._prepare_contract(resume_from)
        self._prepare_data()
        self._prepare_model()
        if resume_from is not None:
            self._resume(resume_from)
        if self.dist.is_main:
            self._write_config()
            if cfg.resume:
                # drops rows of epochs the checkpoint lacks (e.g. written just before a crash)
                self.run.write_metrics(self.history)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run.tensorboard))
        self._ready = True
        log.info(
            "training %s on %s (amp %s, channels_last %s, %d process(es)): %d train / %d "
            "validation series, %d nodules; %.0f %% negative crops",
            cfg.model,
            self.device,
            self.amp_dtype,
            self.channels_last,
            self.dist.world_size,
            len(self.train_uids),
            len(self.val_uids),
            len(self.train_set.nodules),
            100 * cfg.negative_fraction,
        )

    def _prepare_run_dir(self) -> None:
        cfg = self.config
        # Every process checks (same files), so none waits for a failed rank 0.
        self.run.check(resume=cfg.resume, overwrite=cfg.overwrite)

    def _open_run_dir(self) -> None:
        """Once every check has passed: clear an earlier run (--overwrite), open train.log.

        A run that fails its checks leaves no run folder and an earlier run untouched.
        """
        if self.dist.is_main:
            if self.config.overwrite and not self.config.resume:
                self.run.clear()
            self._log_handler = self.run.open_log()
        self._barrier()

    def _prepare_contract(self, resume_from: Checkpoint | None) -> None:
        """Fix the split and data options: today's for a new run, the stored ones on resume."""
        cfg = self.config
        self.folder = LunaFolder(cfg.data_dir)
        check_training_folder(self.folder)
        uids = self.folder.series_uids
        if len(uids) < 2:
            raise ConfigError(
                f"{self.folder.root} holds {len(uids)} series; training needs at least 2 (one "
                "is held out for validation)."
            )
        train, val = split_series(uids, cfg.val_stride)
        current = DataContract.build(
            cfg.to_dict(), train, val, folder_fingerprint(self.folder, uids)
        )
        contract = current
        if resume_from is not None:
            stored = contract_of_checkpoint(resume_from)
            contract = resolve_contract(stored, current, cfg.contract, self.run_dir, uids)
            if contract is stored and stored is not None:
                # continue with the run's options (identical unless --contract stored)
                self.config = cfg = dataclasses.replace(cfg, **stored.options)
        self.contract = contract
        self.train_uids, self.val_uids = list(contract.train_series), list(contract.val_series)

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
        share = uids[self.dist.rank :: self.dist.world_size]
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
        if self._any_process(cancelled):
            raise CancelledError("Training stopped while the cache was being prepared.")
        self.train_set = TrainingDataset(
            self.cache, self.train_uids, cfg.epoch_samples, cfg.sample_config(), cfg.seed
        )
        self.truth = scoring_truth(folder)
        if not self.truth.nodules_of(self.val_uids):
            log.warning(
                "the %d validation series hold no annotated nodule: nodule recall and CPM stay "
                "0 and checkpoint_best is chosen by voxel F1 only; use more series or another "
                "--val-stride",
                len(self.val_uids),
            )
        # On the CPU, memory format and threads are left to the tuner, as `lunaseg infer`
        # leaves them, so validation and the second stage's pass over training series (most
        # of a CPU run's time) may run on an installed runtime such as OpenVINO.
        on_cpu = self.device.type == "cpu"
        self.val_options = InferenceOptions(
            device=str(self.device),
            batch_size=cfg.val_batch_size,
            threshold=cfg.detection_threshold,
            channels_last=None if on_cpu else self.channels_last,
            num_threads=None if on_cpu else torch.get_num_threads(),
            candidates=CandidateConfig(),
        )

    def _loader(self, start_batch: int) -> tuple[DataLoader, EpochSampler]:
        """This epoch's loader from batch ``start_batch`` on (the dataset is set up first)."""
        cfg = self.config
        sampler = EpochSampler(
            len(self.train_set), cfg.batch_size, self.dist.rank, self.dist.world_size, start_batch
        )
        loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            worker_init_fn=ignore_stop_signals,
        )
        return loader, sampler

    def stop_requested_fn(self) -> bool:
        """:attr:`stop_requested` as a callable (for long preparation steps)."""
        return self.stop_requested

    def _prepare_model(self) -> None:
        cfg = self.config
        self.model_config = cfg.model_config()
        model = build_model(self.model_config).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model_plain: nn.Module = model
        self.model: nn.Module = model
        if self.dist.active:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.loss_fn = SegmentationLoss(cfg.loss_config())
        self.augment = BatchAugment(cfg.augment_config()).to(self.device)
        self.aug_generator = torch.Generator(device=self.device)

    def _resume(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt`` (see :meth:`RunFolder.load_latest`): weights, Adam and
        GradScaler state, epoch numbering, the position inside an unfinished epoch, samples
        seen, best-so-far, hard-negative pool and history."""
        self.model_plain.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
            # Adam's moments continue; the learning rate is the one asked for now (set per
            # epoch by train_epoch from --lr and --lr-schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr
        extra = ckpt.extra
        if extra.get("grad_scaler"):
            self.scaler.load_state_dict(extra["grad_scaler"])
        self.start_epoch = ckpt.epoch + 1
        self.samples_seen = ckpt.samples_seen
        if extra.get("best_key") is not None:
            self.best_key = tuple(extra["best_key"])
            self.best_epoch = extra.get("best_epoch")
            self.best_metrics = dict(extra.get("best_metrics") or {})
        self.history = list(extra.get("history") or [])
        self.hard_pool = HardNegativePool.from_state(extra.get("hard_pool"))
        if isinstance(extra.get(RANKER_KEY), dict):
            self.ranker = Ranker.from_state(extra[RANKER_KEY], str(ckpt.path))
            self.ranked_metrics = dict(extra.get("ranked_metrics") or {})
        partial = extra.get(PARTIAL_KEY)
        if partial and int(partial["epoch"]) == self.start_epoch:
            self.start_batch = int(partial["batches_done"])
            # rank 0 carries the partial epoch's (already reduced) counters; others start at 0
            self._resume_metrics = list(partial["metrics"]) if self.dist.is_main else None
        pending = extra.get(PENDING_VALIDATION_KEY)
        self._pending_validation = int(pending) if pending == ckpt.epoch else None
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
        self.run.write_config(
            {
                "train_config": self.config.to_dict(),
                "model_config": self.model_config.to_dict(),
                "device": str(self.device),
                "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                "channels_last": self.channels_last,
                "world_size": self.dist.world_size,
                "train_series": self.train_uids,
                "val_series": self.val_uids,
                CONTRACT_KEY: self.contract.to_dict(),
                "torch": torch.__version__,
                "command_line": self.command_line,
            }
        )

    def _any_process(self, flag: bool) -> bool:
        """True when ``flag`` is true in any process (all processes must call this)."""
        if not self.dist.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self._reduce_device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def _gather(self, item: Any) -> list[Any]:
        """``item`` of every process, in rank order (``[item]`` when not distributed)."""
        if not self.dist.active:
            return [item]
        out: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(out, item)
        return out

    def _barrier(self) -> None:
        if self.dist.active:
            dist.barrier()

    # -- steps ---------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = image.to(self.device, non_blocking=True)
        label = label.to(self.device, non_blocking=True)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image, label

    def train_step(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One optimisation step on a device batch (augmented here).

        Returns ``(loss, logits, augmented image, augmented labels)``, detached: the logits
        belong to the augmented image, so metrics and pictures must use that image and labels.
        """
        with torch.no_grad():
            image, label = self.augment(image, label, generator=self.aug_generator)
        with self._autocast():
            logits = self.model(image)
        loss = self.loss_fn(logits, label)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach(), image, label

    def _note_hard_negatives(
        self, indices: Sequence[int], logits: torch.Tensor, label: torch.Tensor
    ) -> None:
        """Add the batch's negative crops on which the model fired to the hard-negative pool."""
        if self.config.negative_fraction <= 0:
            return
        fired = ((logits > 0) & ~(label > 0.5)).sum(dim=(1, 2, 3)).cpu().tolist()
        has_nodule = (label > 0.5).any(dim=3).any(dim=2).any(dim=1).cpu().tolist()
        for index, count, nodule in zip(indices, fired, has_nodule, strict=True):
            spec = self.train_set.spec(index)
            if spec.kind != NODULE and not nodule:
                self.hard_pool.record((spec.series, spec.index, spec.row0, spec.col0), count)

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
        loader, sampler = self._loader(first)
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
            self._note_hard_negatives(sampler.batch_indices(i - 1), logits, aug_label)
            seen = image.shape[0] * self.dist.world_size
            self.samples_seen += seen
            epoch_samples += seen
            if self.dist.is_main and (i % cfg.progress_every == 0 or i == batches):
                rate = _per_second(epoch_samples, started)
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
        result["samples_per_s"] = _per_second(epoch_samples, started)
        result["lr"] = cfg.lr_at(epoch)
        result["hard_pool"] = float(len(self.hard_pool.spots))
        found = self._gather(self.hard_pool.found)
        self.hard_pool.found = []
        self.hard_pool.end_epoch([spot for part in found for spot in part])
        return result

    def _partial_state(
        self, epoch: int, batches_done: int, metrics: SegmentationMetrics
    ) -> dict[str, Any]:
        """Where a stop left an epoch: its number, the batches done, the counters so far (summed
        over processes) and the hard negatives found so far (all processes)."""
        metrics.reduce()
        found = self._gather(self.hard_pool.found)
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
        share = self.val_uids[self.dist.rank :: self.dist.world_size]
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
                outcome: SeriesValidation = self._drive(
                    steps, "validation", epoch=epoch, offset=done, total=total
                )
            except CancelledError:
                return None
            done += self.cache.meta(uid).shape_irc[0]
            outcomes.append(outcome)
            if outcome.pictures and self._writer is not None:
                self._log_pictures("val", epoch, outcome.pictures)
        gathered = self._gather([dataclasses.replace(o, pictures=[]) for o in outcomes])
        self._last_val = [o for part in gathered for o in part]
        return score_validation(self._last_val, self.truth, self.val_uids)

    def _should_validate(self, epoch: int) -> bool:
        cfg = self.config
        return epoch == 1 or epoch % cfg.val_every == 0 or epoch == cfg.epochs

    def on_epoch_end(
        self,
        epoch: int,
        train: dict[str, float],
        val: dict[str, float] | None,
        pending_validation: bool = False,
    ) -> None:
        """Log, write scalars and ``metrics.jsonl``, save latest/best checkpoints."""
        row = {"epoch": float(epoch), "samples_seen": float(self.samples_seen)}
        row.update({f"train/{k}": v for k, v in train.items()})
        if val is not None:
            row.update({f"val/{k}": v for k, v in val.items()})
        self.history.append(row)
        self._pending_validation = epoch if pending_validation else None
        self._record_validation(epoch, row, val)

    def _record_validation(
        self, epoch: int, row: dict[str, float], val: dict[str, float] | None
    ) -> None:
        """Log and write ``row`` (the history's row of ``epoch``), update "best", save."""
        if not self.dist.is_main:
            return
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
        self.run.write_metrics(self.history)
        if self._writer is not None:
            for name, value in row.items():
                if "/" in name:
                    self._writer.add_scalar(name, value, self.samples_seen)
            self._writer.flush()
        improved = False
        if val is not None:
            key = best_key(val, self.config.best_min_precision)
            if key is not None and (self.best_key is None or key > self.best_key):
                self.best_key, self.best_epoch, self.best_metrics = key, epoch, dict(val)
                self._best_val = list(self._last_val)
                improved = True
        self._save(LATEST, epoch, row)
        if improved:
            self._save(BEST, epoch, row)
        self.emit(
            "epoch",
            epoch=epoch,
            metrics=row,
            samples_per_s=train.get("samples_per_s", 0.0),
            message=f"epoch {epoch} done" + (" (new best)" if improved else ""),
        )

    def _finish_pending_validation(self) -> bool:
        """Validate the epoch a stop interrupted during validation (on resume); False when a
        new stop request interrupted it again."""
        epoch = self._pending_validation
        if epoch is None or not self.history or int(self.history[-1]["epoch"]) != epoch:
            self._pending_validation = None
            return True
        val = self.validate(epoch)
        if val is None:
            return False
        self._pending_validation = None
        row = self.history[-1]
        row.update({f"val/{k}": v for k, v in val.items()})
        self._record_validation(epoch, row, val)
        return True

    def _best_model(self) -> nn.Module:
        """The best epoch's model (the current one when no epoch was best), eval mode."""
        model = build_model(self.model_config)
        if self.run.best.is_file():
            model.load_state_dict(load_checkpoint(self.run.best).model_state)
        else:
            model.load_state_dict(self.model_plain.state_dict())
        return model.to(self.device).eval()

    def _drive(
        self,
        steps: Generator[InferenceProgress, None, Any],
        kind: str,
        *,
        epoch: int = 0,
        offset: int = 0,
        total: int | None = None,
    ) -> Any:
        """Run a generator of inference progress, emitting ``kind`` events (``offset`` +
        slices done of ``total``, default the generator's own); returns its value. A stop
        request raises :class:`CancelledError` (checked between batches when not distributed;
        distributed runs agree on stops between generators)."""
        threads = torch.get_num_threads()
        if self._pass_threads:
            torch.set_num_threads(self._pass_threads)  # the runner measures these and one
        try:
            while True:
                step = next(steps)
                if not self.dist.active and self.stop_requested:
                    steps.close()
                    raise CancelledError(f"stopped during {kind}")
                self.emit(
                    kind,
                    epoch=epoch,
                    batch=offset + step.done,
                    batches=step.total if total is None else total,
                    message=step.message,
                )
        except StopIteration as finished:
            return finished.value
        finally:
            torch.set_num_threads(threads)

    def fit_second_stage(self) -> bool:
        """Fit ``--ranker`` on training series' candidates of the best epoch's segmenter, rank
        the best epoch's validation candidates with it, store it in the checkpoints.

        Returns False when a stop request interrupted it (a resumed run fits it again).
        """
        cfg = self.config
        model = self._best_model()
        uids = mining_series(self.train_uids, cfg.ranker_series)[
            self.dist.rank :: self.dist.world_size
        ]
        try:
            mined = self._drive(
                iter_mine(
                    self.cache,
                    self.folder,
                    self.truth,
                    uids,
                    model,
                    self.val_options,
                    self.tuners,
                    with_patches=cfg.ranker != "features",
                    pointed=self.train_uids[self.dist.rank :: self.dist.world_size],
                ),
                "ranker",
            )
            examples = RankerExamples()
            for part in self._gather(mined):
                examples.extend(part)
            ranker = fit_ranker(
                cfg.ranker,
                examples,
                ClassifierConfig(seed=cfg.seed),
                progress=lambda done, total, message: self.emit(
                    "ranker", batch=done, batches=total, message=message
                ),
                should_stop=self.stop_requested_fn,
            )
            outcomes = self._best_val
            if outcomes is None:  # e.g. resumed after the last validation: validate again
                outcomes = []
                for uid in self.val_uids[self.dist.rank :: self.dist.world_size]:
                    steps = iter_validate_series(
                        self.cache, uid, model, self.val_options, self.tuners
                    )
                    outcomes.append(self._drive(steps, "validation"))
                outcomes = [o for part in self._gather(outcomes) for o in part]
        except CancelledError as exc:
            log.warning("second stage not fitted: %s", exc)
            return False
        except ConfigError as exc:  # e.g. no candidate on a nodule: keep the segmenter's order
            log.warning("second stage not fitted (candidates keep the segmenter's order): %s", exc)
            return True
        ranked = [
            dataclasses.replace(
                o, candidates=ranker.rank(o.candidates, cached_volume(self.cache, o.uid))
            )
            for o in outcomes
        ]
        self.ranker = ranker
        self.ranked_metrics = score_validation(ranked, self.truth, self.val_uids)
        if self.dist.is_main:
            m = self.ranked_metrics
            log.info(
                "second stage (%s, %s): validation nodule recall %.3f, %.1f FP/scan, CPM %.3f "
                "(segmenter alone: CPM %.3f)",
                cfg.ranker,
                examples.summary(),
                m["nodule_recall"],
                m["fp_per_scan"],
                m["cpm"],
                self.best_metrics.get("cpm", math.nan),
            )
            if self.history:
                row = next(
                    (r for r in self.history if r["epoch"] == self.best_epoch), self.history[-1]
                )
                row.update({f"ranked/{k}": v for k, v in self.ranked_metrics.items()})
                self.run.write_metrics(self.history)
            if self.run.best.is_file():
                self.run.add_to_checkpoint(BEST, RANKER_KEY, ranker.state())
                self.run.add_to_checkpoint(BEST, "ranked_metrics", self.ranked_metrics)
            self.emit("ranker", message="second stage fitted", metrics=self.ranked_metrics)
        return True

    def _save(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        path = self.run_dir / name
        extra: dict[str, Any] = {
            "best_key": list(self.best_key) if self.best_key else None,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "history": self.history,
            "hard_pool": self.hard_pool.state(),
            "grad_scaler": self.scaler.state_dict(),
            CONTRACT_KEY: self.contract.to_dict() if self.contract else None,
        }
        if self.ranker is not None:
            extra[RANKER_KEY] = self.ranker.state()
            extra["ranked_metrics"] = self.ranked_metrics
        if name == LATEST and self._partial is not None:
            extra[PARTIAL_KEY] = self._partial
        if name == LATEST and self._pending_validation is not None:
            extra[PENDING_VALIDATION_KEY] = self._pending_validation
        sha1 = save_checkpoint(
            path,
            self.model_plain,
            self.model_config,
            optimizer=self.optimizer,
            epoch=epoch,
            samples_seen=self.samples_seen,
            train_config=self.config.to_dict(),
            command_line=self.command_line,
            metrics=metrics,
            extra=extra,
        )
        self.emit(
            "checkpoint", epoch=epoch, path=str(path), sha1=sha1, message=f"{name} sha1 {sha1}"
        )

    def _log_images(
        self,
        tag: str,
        epoch: int,
        image: torch.Tensor,
        logits: torch.Tensor,
        label: torch.Tensor,
        first: int = 0,
    ) -> None:
        """CT center slices with the TP/FN/FP colour code, to TensorBoard as ``tag/<n>``.

        ``image`` ``(N, C, H, W)`` HU, ``logits`` and ``label`` ``(N, 1, H, W)``; the images
        are numbered from ``first``.
        """
        center = image.shape[1] // 2
        pictures = [
            (
                image[j, center].float().cpu().numpy(),
                (logits[j, 0] > 0).cpu().numpy(),
                label[j, 0].cpu().numpy(),
            )
            for j in range(min(image.shape[0], self.config.tb_images))
        ]
        self._log_pictures(tag, epoch, pictures, first)

    def _log_pictures(
        self,
        tag: str,
        epoch: int,
        pictures: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        first: int = 0,
    ) -> None:
        """``(HU slice, predicted, true)`` 2-D arrays with the colour code, as ``tag/<n>``."""
        for j, (hu, pred, truth) in enumerate(pictures):
            rgb = error_overlay_rgb(window_to_grey(hu), pred, truth)
            self._writer.add_image(f"{tag}/{first + j}", rgb, epoch, dataformats="HWC")

    def on_train_end(self, epoch: int, stopped: bool) -> None:
        """Final or interrupted checkpoint, closing writers."""
        if self.dist.is_main:
            last = self.history[-1] if self.history else {}
            if stopped:
                self._save(LATEST, epoch, last)
                where = (
                    f" in epoch {self._partial['epoch']} after batch "
                    f"{self._partial['batches_done']}"
                    if self._partial
                    else ""
                )
                self.emit("stopped", epoch=epoch, message=f"stopped on request{where}")
            elif epoch >= self.config.epochs:
                self._save(FINAL, epoch, last)
        self._barrier()

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Run :meth:`setup` and every remaining epoch; see the module docstring."""
        try:
            if not self._ready:
                try:
                    self.setup()
                except CancelledError as exc:
                    log.warning("%s", exc)
                    return self._stopped_before_training()
            cfg = self.config
            epoch = self.start_epoch - 1
            stopped = not self._finish_pending_validation()
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                if stopped:
                    epoch -= 1
                    break
                train = self.train_epoch(epoch)
                if train is None:
                    stopped, epoch = True, epoch - 1
                    break
                due = self._should_validate(epoch)
                val = self.validate(epoch) if due else None
                if val is None and due:
                    log.warning("validation of epoch %d interrupted: stop requested", epoch)
                self.on_epoch_end(epoch, train, val, pending_validation=due and val is None)
                # after the last epoch the run is done, whatever was requested meanwhile
                if epoch < cfg.epochs and self._agreed_stop():
                    stopped = True
                    break
            if not stopped and epoch >= cfg.epochs and cfg.ranker != "none" and not self.ranker:
                stopped = not self.fit_second_stage()
            self.on_train_end(epoch, stopped)
            result = TrainResult(
                run_dir=self.run_dir,
                epoch=epoch,
                samples_seen=self.samples_seen,
                stopped=stopped,
                best_epoch=self.best_epoch,
                best_metrics=self.best_metrics,
                last_metrics=self.history[-1] if self.history else {},
                history=list(self.history),
                ranked_metrics=dict(self.ranked_metrics),
            )
            self.emit(
                "end",
                epoch=epoch,
                metrics=result.last_metrics,
                message="stopped" if stopped else "done",
            )
            return result
        finally:
            self.close()

    def _stopped_before_training(self) -> TrainResult:
        self.emit("stopped", epoch=self.start_epoch - 1, message="stopped while preparing")
        self.emit("end", epoch=self.start_epoch - 1, message="stopped")
        return TrainResult(self.run_dir, self.start_epoch - 1, self.samples_seen, stopped=True)

    def close(self) -> None:
        """Close TensorBoard and the log file; leave the process group if this run joined it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._log_handler is not None:
            logging.getLogger("src_train").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        if self.dist.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.dist = DistInfo()
