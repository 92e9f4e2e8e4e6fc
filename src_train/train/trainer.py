"""The Trainer: a small class whose steps read top to bottom (nnU-Net's manner).

``Trainer(config).fit()`` prepares the cache, splits series (every ``val_stride``-th one
validates), trains on nodule crops with batch augmentation on the device, validates on whole
slices on epoch 1 and every ``val_every``-th epoch, and keeps a run folder (see
:mod:`src_train.train.run_folder`).

Progress leaves through callbacks receiving :class:`ProgressEvent` objects (one per batch,
validation, epoch, checkpoint, end); a stop request (:meth:`Trainer.request_stop`, a
``should_stop`` callable, SIGTERM/SIGINT via :func:`install_stop_signals`) is honoured between
training or validation batches: the latest checkpoint is written and :meth:`Trainer.fit`
returns with ``stopped`` (a stop during validation keeps the trained epoch, unvalidated).

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel; each
process sees its share of every epoch; only rank 0 writes files and calls callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from src_train.augment import BatchAugment
from src_train.cache import SeriesCache, check_training_folder
from src_train.datasets import TrainingDataset, ValidationDataset
from src_train.errors import AnnotationError, CancelledError, ConfigError
from src_train.losses import SegmentationLoss, SegmentationMetrics
from src_train.luna import LunaFolder, split_series
from src_train.metrics import error_overlay_rgb, window_to_grey
from src_train.model import Checkpoint, build_model, save_checkpoint
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

log = logging.getLogger(__name__)

_SEED_MASK = (1 << 63) - 1

#: Shortest time a rate is divided by, seconds (avoids a division by zero).
_MIN_SECONDS = 1e-9


def _per_second(count: int, started: float) -> float:
    """``count`` per second since ``started`` (a ``time.perf_counter()`` value)."""
    return count / max(time.perf_counter() - started, _MIN_SECONDS)


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
        self.samples_seen = 0
        self.best_key: tuple[float, float] | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
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
        """Device, run folder, cache, data, model, optimiser, resume state, writers."""
        cfg = self.config
        self.dist = init_distributed(cfg.device)
        if not self.dist.is_main:  # rank 0 reports; the others only warn
            logging.getLogger("src_train").setLevel(logging.WARNING)
        self.device = choose_device(cfg.device, self.dist)
        self._reduce_device = (
            self.device if self.dist.active and self.device.type == "cuda" else torch.device("cpu")
        )
        self.amp_dtype, self.channels_last = step_settings(cfg.amp, cfg.channels_last, self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.dist.rank)
        self._prepare_run_dir()
        # read the checkpoint to resume before caching, so that a bad one fails in a second
        resume_from = self.run.load_latest(cfg.model_config()) if cfg.resume else None
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
            "validation series, %d nodules, %d validation slices",
            cfg.model,
            self.device,
            self.amp_dtype,
            self.channels_last,
            self.dist.world_size,
            len(self.train_uids),
            len(self.val_uids),
            len(self.train_set.nodules),
            len(self.val_set),
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

    def _prepare_data(self) -> None:
        cfg = self.config
        folder = LunaFolder(cfg.data_dir)
        check_training_folder(folder)
        self.cache = SeriesCache(
            folder, cfg.cache_dir, threshold_hu=cfg.threshold_hu, mask_method=cfg.mask_method
        )
        uids = self.cache.series_uids
        if len(uids) < 2:
            raise ConfigError(
                f"{folder.root} holds {len(uids)} series; training needs at least 2 (one is "
                "held out for validation)."
            )
        self.train_uids, self.val_uids = split_series(uids, cfg.val_stride)
        if not any(n.is_nodule for uid in self.train_uids for n in folder.nodules(uid)):
            raise AnnotationError(
                f"{folder.annotations_path} has no nodule in any of the {len(self.train_uids)} "
                f"training series of {folder.root} (series UIDs must match the .mhd file "
                "names). Check the annotation file or the data folder."
            )
        self._open_run_dir()
        # Each process builds its share of missing cache entries; then all read every meta.
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
        self.val_set = ValidationDataset(self.cache, self.val_uids, cfg.context_slices)
        if not len(self.val_set):
            log.warning(
                "the %d validation series hold no mask voxels: validation recall stays 0 and "
                "checkpoint_best is the first validated epoch; use more series or another "
                "--val-stride",
                len(self.val_uids),
            )
        # The dataset already shuffles nodules per epoch and draws crops from (seed, epoch,
        # index): loading in index order keeps runs (and resumed runs) reproducible.
        sampler: DistributedSampler | None = (
            DistributedSampler(
                self.train_set,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=False,
            )
            if self.dist.active
            else None
        )
        self.train_sampler = sampler
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=cfg.num_workers,
            pin_memory=pin,
            drop_last=False,
            worker_init_fn=ignore_stop_signals,
        )
        self.val_steps = math.ceil(
            len(self.val_set.batches(cfg.val_batch_size)) / self.dist.world_size
        )
        self.val_loader = DataLoader(
            self.val_set,
            batch_sampler=self.val_set.batches(
                cfg.val_batch_size, self.dist.rank, self.dist.world_size
            ),
            num_workers=cfg.num_workers,
            pin_memory=pin,
            worker_init_fn=ignore_stop_signals,
        )

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
        """Continue from ``ckpt`` (see :meth:`RunFolder.load_latest`): weights, Adam state, epoch
        numbering, samples seen, best-so-far and history."""
        path = ckpt.path
        self.model_plain.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
            # Adam's moments continue; the learning rate is the one asked for now
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr
        self.start_epoch = ckpt.epoch + 1
        self.samples_seen = ckpt.samples_seen
        extra = ckpt.extra
        if extra.get("best_key") is not None:
            self.best_key = tuple(extra["best_key"])  # type: ignore[assignment]
            self.best_epoch = extra.get("best_epoch")
            self.best_metrics = dict(extra.get("best_metrics") or {})
        self.history = list(extra.get("history") or [])
        log.info(
            "resumed %s at epoch %d (%d samples seen, sha1 %s)",
            path,
            self.start_epoch,
            self.samples_seen,
            ckpt.sha1,
        )

    def _write_config(self) -> None:
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

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Train one epoch; returns its metrics, or None when a stop request ended it."""
        cfg = self.config
        self.model.train()
        self.train_set.set_epoch(epoch)
        # Augmentation draws depend on (seed, epoch, rank) only, so a resumed run repeats them.
        self.aug_generator.manual_seed(hash((cfg.seed, epoch, self.dist.rank)) & _SEED_MASK)
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        metrics = SegmentationMetrics(self.device)
        batches = len(self.train_loader)
        started = time.perf_counter()
        epoch_samples = 0
        for i, (image, label) in enumerate(self.train_loader, start=1):
            if self._agreed_stop():
                return None
            image, label = self._to_device(image, label)
            loss, logits, aug_image, aug_label = self.train_step(image, label)
            metrics.update(logits, aug_label, loss)
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
        return result

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float] | None:
        """Metrics on whole validation slices (no augmentation, eval mode).

        Returns None when a stop request ended it (checked between batches).
        """
        model = self.model_plain
        model.eval()
        metrics = SegmentationMetrics(self.device)
        drawn = 0
        batches = len(self.val_loader)
        loader = iter(self.val_loader)
        # every process takes the same number of steps, so that all agree on a stop request
        for i in range(1, self.val_steps + 1):
            if self._agreed_stop():
                return None
            item = next(loader, None)
            if item is None:  # this process's share is done before the others'
                continue
            image, label = self._to_device(*item)
            with self._autocast():
                logits = model(image)
            metrics.update(logits, label, self.loss_fn(logits, label))
            if self._writer is not None and drawn < self.config.tb_images:
                take = min(self.config.tb_images - drawn, image.shape[0])
                self._log_images("val", epoch, image[:take], logits[:take], label[:take], drawn)
                drawn += take
            self.emit("validation", epoch=epoch, batch=i, batches=batches)
        metrics.reduce()
        return metrics.compute()

    def _should_validate(self, epoch: int) -> bool:
        cfg = self.config
        return epoch == 1 or epoch % cfg.val_every == 0 or epoch == cfg.epochs

    def on_epoch_end(
        self, epoch: int, train: dict[str, float], val: dict[str, float] | None
    ) -> None:
        """Log, write scalars and ``metrics.jsonl``, save latest/best checkpoints."""
        row = {"epoch": float(epoch), "samples_seen": float(self.samples_seen)}
        row.update({f"train/{k}": v for k, v in train.items()})
        if val is not None:
            row.update({f"val/{k}": v for k, v in val.items()})
        self.history.append(row)
        if not self.dist.is_main:
            return
        log.info(
            "epoch %d/%d: train loss %.4f recall %.3f F1 %.3f (%.1f samples/s)%s",
            epoch,
            self.config.epochs,
            train["loss"],
            train["recall"],
            train["f1"],
            train["samples_per_s"],
            ""
            if val is None
            else f"; val loss {val['loss']:.4f} recall {val['recall']:.3f} "
            f"precision {val['precision']:.3f} F1 {val['f1']:.3f}",
        )
        self.run.append_metrics(row)
        if self._writer is not None:
            for name, value in row.items():
                if "/" in name:
                    self._writer.add_scalar(name, value, self.samples_seen)
            self._writer.flush()
        improved = False
        if val is not None:
            key = (val["recall"], val["f1"])
            if self.best_key is None or key > self.best_key:
                self.best_key, self.best_epoch, self.best_metrics = key, epoch, dict(val)
                improved = True
        self._save(LATEST, epoch, row)
        if improved:
            self._save(BEST, epoch, row)
        self.emit(
            "epoch",
            epoch=epoch,
            metrics=row,
            samples_per_s=train["samples_per_s"],
            message=f"epoch {epoch} done" + (" (new best)" if improved else ""),
        )

    def _save(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        path = self.run_dir / name
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
            extra={
                "best_key": list(self.best_key) if self.best_key else None,
                "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics,
                "history": self.history,
            },
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
        for j in range(min(image.shape[0], self.config.tb_images)):
            rgb = error_overlay_rgb(
                window_to_grey(image[j, center].float().cpu().numpy()),
                (logits[j, 0] > 0).cpu().numpy(),
                label[j, 0].cpu().numpy(),
            )
            self._writer.add_image(f"{tag}/{first + j}", rgb, epoch, dataformats="HWC")

    def on_train_end(self, epoch: int, stopped: bool) -> None:
        """Final or interrupted checkpoint, closing writers."""
        if self.dist.is_main:
            last = self.history[-1] if self.history else {}
            if stopped:
                self._save(LATEST, epoch, last)
                self.emit("stopped", epoch=epoch, message="stopped on request")
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
            stopped = False
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                train = self.train_epoch(epoch)
                if train is None:
                    stopped, epoch = True, epoch - 1
                    break
                val = self.validate(epoch) if self._should_validate(epoch) else None
                if val is None and self._should_validate(epoch):
                    log.warning("validation of epoch %d skipped: stop requested", epoch)
                self.on_epoch_end(epoch, train, val)
                # after the last epoch the run is done, whatever was requested meanwhile
                if epoch < cfg.epochs and self._agreed_stop():
                    stopped = True
                    break
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
