"""One training loop with hooks, shared by the CT :class:`~src_train.train.Trainer` and the 2-D
:class:`~src_train.images2d.trainer.ImageTrainer` (nnU-Net's ``run_training`` manner).

:meth:`TrainingLoop.fit` is the whole run, read top to bottom::

    setup()                                   (once; a stop while preparing ends the run)
    finish an epoch whose validation a stop interrupted (resumed runs)
    for each remaining epoch:
        train_epoch(epoch)                    (train_step per batch; None = stopped)
        validate(epoch)                       (when due: epoch 1, every val_every-th, the last)
        on_epoch_end(...)                     (history row, log, best, checkpoints, event)
        stop between epochs?
    after_last_epoch()                        (e.g. the CT run's second stage)
    on_train_end(epoch, stopped)              (final checkpoint, or the stop's)

The shared steps live here: stop requests, progress events, mixed precision, one optimisation
step (:meth:`train_step`), checkpoints with the best-so-far and the history
(:meth:`save`, :meth:`restore`), the choice of "best" by a key subclasses define, and closing.
A subclass supplies the data, the model input and what it adds to checkpoints; both trainers
write the run folder of :mod:`.run_folder`.

Where a stop leaves a run is one switch, :attr:`TrainingLoop.resumes_mid_epoch`: True (CT: long
epochs) saves the position inside an epoch and keeps a trained epoch whose validation a stop
interrupted (it is validated first thing on resume); False (2-D: short epochs) drops the
unfinished epoch, so ``checkpoint_latest.pt`` holds the last complete one.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from src_train.augment import AugmentConfig, BatchAugment
from src_train.errors import CancelledError
from src_train.losses import LossConfig, SegmentationLoss
from src_train.model import (
    Checkpoint,
    ModelConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from src_train.train.events import Callback, ProgressEvent
from src_train.train.run_folder import BEST, FINAL, LATEST, RunFolder

log = logging.getLogger(__name__)

#: Shortest time a rate is divided by, seconds (avoids a division by zero).
MIN_SECONDS = 1e-9

#: Key of a checkpoint's ``extra`` for an epoch whose validation a stop interrupted.
PENDING_VALIDATION_KEY = "pending_validation"

#: Key of ``checkpoint_best.pt``'s ``extra`` saying why it holds the last epoch (no validated
#: epoch qualified as best); absent when an epoch did.
BEST_FALLBACK_KEY = "best_fallback"


def per_second(count: int, started: float) -> float:
    """``count`` per second since ``started`` (a ``time.perf_counter()`` value)."""
    return count / max(time.perf_counter() - started, MIN_SECONDS)


class TrainingLoop:
    """The loop and the steps every trainer shares; see the module docstring.

    Args:
        config: the run's options: a dataclass with ``run_dir``, ``epochs``, ``val_every``,
            ``lr`` and ``to_dict()``.
        callbacks: called (on the main process) with every :class:`ProgressEvent`.
        should_stop: polled between batches; True = stop request (like :meth:`request_stop`).
        command_line: stored in checkpoints (default ``sys.argv``).

    A subclass's :meth:`setup` sets ``device``, ``amp_dtype``, ``channels_last`` and calls
    :meth:`build_training_parts`; it implements :meth:`train_epoch`, :meth:`validate`,
    :meth:`best_key_of`, :meth:`log_epoch` and :meth:`result`, and may extend
    :meth:`checkpoint_extra`, :meth:`restore`, :meth:`epoch_row`, :meth:`write_epoch`,
    :meth:`after_last_epoch` and :meth:`close`.
    """

    #: See the module docstring.
    resumes_mid_epoch = False
    #: Set by :meth:`setup`: where the run trains, its autocast dtype, its memory format.
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    def __init__(
        self,
        config: Any,
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
        self.start_epoch = 1
        self.samples_seen = 0
        self.best_key: tuple[float, ...] | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self._pending_validation: int | None = None
        self._best_fallback: str | None = None
        self._log_handler: logging.Handler | None = None
        self._ready = False

    # -- hooks a subclass implements -----------------------------------------------------------
    def setup(self) -> None:
        """Device, run folder, data, model, optimiser, resume state."""
        raise NotImplementedError

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Train one epoch; its metrics, or None when a stop request ended it."""
        raise NotImplementedError

    def validate(self, epoch: int) -> dict[str, float] | None:
        """Validation metrics, or None when a stop request ended it."""
        raise NotImplementedError

    def best_key_of(self, val: dict[str, float]) -> tuple[float, ...] | None:
        """How good a validated epoch is (greater is better); None: it cannot be "best"."""
        raise NotImplementedError

    def log_epoch(self, epoch: int, row: dict[str, float], val: dict[str, float] | None) -> None:
        """Log one epoch's line."""
        raise NotImplementedError

    def result(self, epoch: int, stopped: bool) -> Any:
        """What :meth:`fit` returns."""
        raise NotImplementedError

    def no_best_reason(self) -> str:
        """Why no validated epoch could be "best" (see :meth:`best_key_of`), one phrase."""
        raise NotImplementedError

    # -- hooks with a default ------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        """True on the process that writes files and calls callbacks."""
        return True

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """A device batch as the model takes it (before augmentation)."""
        return images

    def epoch_row(self, epoch: int, seconds: float) -> dict[str, float]:
        """The first keys of an epoch's ``metrics.jsonl`` row."""
        return {"epoch": float(epoch), "seconds": seconds}

    def write_epoch(self, row: dict[str, float]) -> None:
        """Add an epoch's row to ``metrics.jsonl``."""
        self.run.append_metrics(row)

    def on_new_best(self) -> None:
        """Called when the epoch just validated became "best" (before it is saved)."""

    def checkpoint_extra(self, name: str, epoch: int) -> dict[str, Any]:
        """What checkpoint ``name`` of ``epoch`` holds beside the weights: best-so-far and the
        history, plus for ``checkpoint_latest.pt`` an epoch whose validation a stop
        interrupted."""
        extra: dict[str, Any] = {
            "best_key": list(self.best_key) if self.best_key else None,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "history": self.history,
        }
        if name == LATEST and self._pending_validation is not None:
            extra[PENDING_VALIDATION_KEY] = self._pending_validation
        if name == BEST and self._best_fallback is not None:
            extra[BEST_FALLBACK_KEY] = self._best_fallback
        return extra

    def after_last_epoch(self) -> bool:
        """Work after the last epoch (before the final checkpoint); False = a stop ended it."""
        return True

    def stop_between_epochs(self) -> bool:
        """Whether the run stops before the next epoch (every process must agree)."""
        return self.stop_requested

    def stop_position(self) -> str:
        """Where a stop left the run, for the ``stopped`` event (empty: between epochs)."""
        return ""

    def barrier(self) -> None:
        """Wait for every process (distributed runs)."""

    # -- stop requests and events --------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the run to stop after the current batch (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested (locally)."""
        return self._stop.is_set() or bool(self.should_stop and self.should_stop())

    def stop_requested_fn(self) -> bool:
        """:attr:`stop_requested` as a callable (for long preparation steps)."""
        return self.stop_requested

    def emit(self, kind: str, **fields: Any) -> None:
        """Send a :class:`ProgressEvent` to every callback (main process only)."""
        if not self.is_main or not self.callbacks:
            return
        event = ProgressEvent(
            kind=kind, epochs=self.config.epochs, samples_seen=self.samples_seen, **fields
        )
        for callback in self.callbacks:
            callback(event)

    # -- model, optimiser and one step ---------------------------------------------------------
    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module that trains (e.g. DistributedDataParallel around ``model``)."""
        return model

    def build_training_parts(
        self,
        model_config: ModelConfig,
        loss_config: LossConfig,
        augment_config: AugmentConfig,
    ) -> None:
        """Model (``model_plain``; ``model`` is what trains), Adam at ``config.lr``, the
        gradient scaler (fp16 only), loss, device augmentation and its generator."""
        self.model_config = model_config
        model = build_model(model_config).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model_plain: nn.Module = model
        self.model: nn.Module = self.wrap_model(model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.loss_fn = SegmentationLoss(loss_config)
        self.augment = BatchAugment(augment_config).to(self.device)
        self.aug_generator = torch.Generator(device=self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _layout(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One optimisation step on a device batch (augmented here; ``(N, C, H, W)`` images,
        ``(N, 1, H, W)`` labels).

        Returns ``(loss, logits, augmented images, augmented labels)``, detached: the logits
        belong to the augmented images, so metrics and pictures must use those.
        """
        with torch.no_grad():
            inputs, labels = self.augment(
                self.model_input(images), labels, generator=self.aug_generator
            )
        inputs = self._layout(inputs)
        with self._autocast():
            logits = self.model(inputs)
        loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach(), inputs, labels

    def best_model(self) -> nn.Module:
        """A copy of the best epoch's model (the current one when no epoch was best), in eval
        mode on the run's device."""
        model = build_model(self.model_config)
        if self.run.best.is_file():
            model.load_state_dict(load_checkpoint(self.run.best).model_state)
        else:
            model.load_state_dict(self.model_plain.state_dict())
        return model.to(self.device).eval()

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, name: str, epoch: int, metrics: dict[str, float]) -> str:
        """Write the run's checkpoint ``name`` (atomically); returns its SHA-1."""
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
            extra=self.checkpoint_extra(name, epoch),
        )
        self.emit(
            "checkpoint", epoch=epoch, path=str(path), sha1=sha1, message=f"{name} sha1 {sha1}"
        )
        return sha1

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt`` (the latest checkpoint): weights, Adam state, epoch numbering,
        samples seen, best-so-far, history and an epoch whose validation is pending."""
        self.model_plain.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.start_epoch = ckpt.epoch + 1
        self.samples_seen = ckpt.samples_seen
        extra = ckpt.extra
        if extra.get("best_key") is not None:
            self.best_key = tuple(float(v) for v in extra["best_key"])
            self.best_epoch = extra.get("best_epoch")
            self.best_metrics = dict(extra.get("best_metrics") or {})
        self.history = list(extra.get("history") or [])
        pending = extra.get(PENDING_VALIDATION_KEY)
        self._pending_validation = int(pending) if pending == ckpt.epoch else None

    # -- epochs --------------------------------------------------------------------------------
    def _should_validate(self, epoch: int) -> bool:
        cfg = self.config
        return epoch == 1 or epoch % cfg.val_every == 0 or epoch == cfg.epochs

    def run_epoch(self, epoch: int) -> bool:
        """Train, validate when due, record; False when a stop ended the epoch unrecorded."""
        started = time.perf_counter()
        train = self.train_epoch(epoch)
        if train is None:
            return False
        due = self._should_validate(epoch)
        val = self.validate(epoch) if due else None
        interrupted = due and val is None
        if interrupted:
            if not self.resumes_mid_epoch:
                return False
            log.warning("validation of epoch %d interrupted: stop requested", epoch)
        seconds = time.perf_counter() - started
        self.on_epoch_end(epoch, train, val, seconds, pending_validation=interrupted)
        return True

    def on_epoch_end(
        self,
        epoch: int,
        train: dict[str, float],
        val: dict[str, float] | None,
        seconds: float = 0.0,
        pending_validation: bool = False,
    ) -> None:
        """The epoch's row joins the history; then :meth:`record_epoch`."""
        row = self.epoch_row(epoch, seconds)
        row.update({f"train/{k}": v for k, v in train.items()})
        if val is not None:
            row.update({f"val/{k}": v for k, v in val.items()})
        self.history.append(row)
        self._pending_validation = epoch if pending_validation else None
        self.record_epoch(epoch, row, val)

    def record_epoch(self, epoch: int, row: dict[str, float], val: dict[str, float] | None) -> None:
        """Log and write ``row`` (the history's row of ``epoch``), update "best", save."""
        if not self.is_main:
            return
        self.log_epoch(epoch, row, val)
        self.write_epoch(row)
        improved = False
        if val is not None:
            key = self.best_key_of(val)
            if key is not None and (self.best_key is None or key > self.best_key):
                self.best_key, self.best_epoch, self.best_metrics = key, epoch, dict(val)
                self.on_new_best()
                improved = True
        self.save(LATEST, epoch, row)
        if improved:
            self.save(BEST, epoch, row)
        self.emit(
            "epoch",
            epoch=epoch,
            metrics=row,
            samples_per_s=row.get("train/samples_per_s", 0.0),
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
        self.record_epoch(epoch, row, val)
        return True

    def write_fallback_best(self, epoch: int) -> None:
        """A finished run always leaves ``checkpoint_best.pt``, so that every command quoting
        it works: when no validated epoch qualified (:meth:`no_best_reason`), it holds the
        last epoch (validated, as the last epoch always is), with :data:`BEST_FALLBACK_KEY`
        saying why, and a warning in the log. :attr:`best_epoch` stays None."""
        if self.best_epoch is not None or not self.history:
            return
        reason = (
            f"no validated epoch qualified as best ({self.no_best_reason()}); {BEST} holds "
            f"the last epoch ({epoch}) instead"
        )
        log.warning("%s", reason)
        self._best_fallback = reason
        if self.is_main:
            self.save(BEST, epoch, self.history[-1])
        self.barrier()

    def on_train_end(self, epoch: int, stopped: bool) -> None:
        """The final checkpoint; on a stop, the stop's (when :attr:`resumes_mid_epoch`)."""
        if self.is_main:
            last = self.history[-1] if self.history else {}
            if stopped:
                if self.resumes_mid_epoch:
                    self.save(LATEST, epoch, last)
                self.emit(
                    "stopped", epoch=epoch, message="stopped on request" + self.stop_position()
                )
            elif epoch >= self.config.epochs:
                self.save(FINAL, epoch, last)
        self.barrier()

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> Any:
        """Run :meth:`setup` and every remaining epoch; see the module docstring."""
        try:
            if not self._ready:
                try:
                    self.setup()
                except CancelledError as exc:
                    log.warning("%s", exc)
                    return self._stopped_before_training()
                self._ready = True
            epoch = self.start_epoch - 1
            stopped = not self._finish_pending_validation()
            while not stopped and epoch < self.config.epochs:
                if not self.run_epoch(epoch + 1):
                    stopped = True
                    break
                epoch += 1
                # after the last epoch the run is done, whatever was requested meanwhile
                stopped = epoch < self.config.epochs and self.stop_between_epochs()
            if not stopped and epoch >= self.config.epochs:
                self.write_fallback_best(epoch)
                stopped = not self.after_last_epoch()
            self.on_train_end(epoch, stopped)
            result = self.result(epoch, stopped)
            last = self.history[-1] if self.history else {}
            self.emit("end", epoch=epoch, metrics=last, message="stopped" if stopped else "done")
            return result
        finally:
            self.close()

    def _stopped_before_training(self) -> Any:
        self.emit("stopped", epoch=self.start_epoch - 1, message="stopped while preparing")
        self.emit("end", epoch=self.start_epoch - 1, message="stopped")
        return self.result(self.start_epoch - 1, True)

    def close(self) -> None:
        """Stop writing ``train.log``."""
        if self._log_handler is not None:
            logging.getLogger("src_train").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
