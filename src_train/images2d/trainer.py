"""A small training loop for 2-D image sets, with the CT Trainer's shape and shared pieces.

``ImageTrainer(config, data, split).fit()`` trains on the split's training images (the whole
set sits on the device as uint8; batches are augmented there), validates on its validation
images every ``val_every`` epochs, and keeps a run folder with the CT run's file names and
guards (:class:`~src_train.train.run_folder.RunFolder`)::

    RUN_DIR/config.json            options, model config, split, device, data folder, size
    RUN_DIR/train.log              the log of the run
    RUN_DIR/metrics.jsonl          one JSON object per epoch (train/..., val/..., seconds)
    RUN_DIR/checkpoint_latest.pt   after every epoch and on a stop request
    RUN_DIR/checkpoint_best.pt     best validation IoU (mean over images; ties: lower loss)
    RUN_DIR/checkpoint_final.pt    when the last epoch is done

The steps read top to bottom: :meth:`~ImageTrainer.setup`, then per epoch
:meth:`~ImageTrainer.train_epoch` (calling :meth:`~ImageTrainer.train_step`),
:meth:`~ImageTrainer.validate`, :meth:`~ImageTrainer.on_epoch_end`; finally
:meth:`~ImageTrainer.on_train_end`. Progress leaves through callbacks receiving the CT
Trainer's :class:`~src_train.train.events.ProgressEvent`; a stop request is honoured between
batches; ``checkpoint_latest.pt`` then holds the last complete epoch, and ``resume=True``
continues from it with the same split, drawing the same batches and augmentations as an
uninterrupted run.

Shared with the CT :class:`~src_train.train.Trainer`: models and checkpoints
(:mod:`src_train.model`), losses, device augmentation, the run folder, the progress event, the
mixed-precision and memory-format choice (:func:`~src_train.train.runtime.step_settings`) and
the device rule (:mod:`src_train.devices`). What still differs, and why:

- Data: the whole image set lives on the device as uint8 and batches are index slices of it
  (an epoch is every training image once); the CT Trainer streams nodule crops of
  ``epoch_samples`` from a memory-mapped cache through a ``DataLoader`` with workers.
- Validation and the best checkpoint: mean per-image IoU over the validation images, every
  epoch by default (``val_every`` 1: a pass over 50 images is cheap), best = highest IoU
  (ties: lower loss), as dermoscopy studies rank; the CT Trainer validates on epoch 1 and every
  5th (whole slices of held-out series are costly) and keeps the best by recall, then F1 (the
  SPEC's detection-first rule).
- Stop: an interrupted epoch is dropped (``checkpoint_latest.pt`` keeps the last complete one)
  so that a resumed run equals an uninterrupted one bit for bit; the CT Trainer saves the
  interrupted epoch's weights, trading exact replay for not losing an epoch of a long run.
- Random streams: batch order and augmentation draw from per-epoch seeds made by
  ``numpy.random.SeedSequence``; the CT Trainer's data set draws crops from (seed, epoch,
  index) and its augmentation from a hash of (seed, epoch, rank). Both replay after a resume.
- Metrics: per-image means (IoU, IoU score, Dice, precision, recall; ``src_train.images2d.
  metrics``), as the 2-D literature reports them; the CT Trainer pools voxels
  (``SegmentationMetrics``). The numbers of the two are not interchangeable.
- Not here: DistributedDataParallel, TensorBoard, the loss's false-negative weight and focal
  gamma options (the losses run with their defaults).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src_train.augment import AugmentConfig, BatchAugment
from src_train.devices import resolve_device
from src_train.errors import ConfigError
from src_train.images2d.dataset import ImageSet, Split
from src_train.images2d.metrics import count_errors, scores_from_counts
from src_train.images2d.predict import images_to_tensor, to_model_input
from src_train.losses import LossConfig, SegmentationLoss
from src_train.model import Checkpoint, ModelConfig, build_model, count_parameters, save_checkpoint
from src_train.train.config import AMP_MODES, ON_OFF_AUTO
from src_train.train.events import Callback, ProgressEvent
from src_train.train.run_folder import BEST, FINAL, LATEST, METRICS_FILE, RunFolder
from src_train.train.runtime import step_settings

log = logging.getLogger(__name__)

__all__ = ["BEST", "FINAL", "LATEST", "METRICS_FILE", "ImageTrainConfig", "ImageTrainer"]

#: Input channels of RGB images.
RGB_CHANNELS = 3

#: Shortest time a rate is divided by, seconds (avoids a division by zero).
_MIN_SECONDS = 1e-9

#: Streams of random numbers drawn per epoch (see :func:`epoch_seed`).
_BATCH_ORDER, _AUGMENTATION = 0, 1


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for one stream of one epoch of a run: the same in every process (unlike
    ``hash`` of strings), so a resumed run draws what the uninterrupted one would have."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class ImageTrainConfig:
    """Options of one 2-D training run (saved as ``config.json`` and in every checkpoint).

    Model: ``model`` (unet|segnet), ``up`` (U-Net upsampling: transpose|bilinear), ``depth``
    (resolution levels), ``filters`` (at the top level, doubling per level). Optimisation:
    ``loss`` (bce|dice|focal|dice-fn), ``lr`` (Adam), ``epochs``, ``batch_size``, ``augment``
    (comma list of flip,offset,scale,rotate,noise,jitter; all; none), ``seed`` (weights,
    batch order, augmentation). ``val_every``: validate every n-th epoch (and the last).
    Device: ``device`` (auto|cpu|cuda[:n]), ``threads`` (CPU threads; 0 = torch's default),
    ``amp`` and ``channels_last`` (as the CT run's; see
    :func:`~src_train.train.runtime.step_settings`).
    Output: ``run_dir``, ``resume`` (continue from ``checkpoint_latest.pt``), ``overwrite``
    (start over in a used run folder), ``progress_every`` (batch events every n batches).
    """

    run_dir: str = "runs/images2d"
    model: str = "unet"
    up: str = "transpose"
    depth: int = 5
    filters: int = 16
    loss: str = "dice"
    lr: float = 1e-3
    epochs: int = 120
    batch_size: int = 8
    augment: str = "flip,rotate,scale,jitter"
    seed: int = 0
    val_every: int = 1
    device: str = "auto"
    threads: int = 0
    amp: str = "auto"
    channels_last: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress_every: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "val_every", "progress_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.lr <= 0:
            raise ConfigError(f"The learning rate must be positive; got {self.lr}.")
        if min(self.seed, self.threads) < 0:
            raise ConfigError("seed and threads must not be negative.")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite contradict each other; choose one.")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}; got {self.amp!r}.")
        if self.channels_last not in ON_OFF_AUTO:
            raise ConfigError(
                f"channels_last must be one of {', '.join(ON_OFF_AUTO)}; "
                f"got {self.channels_last!r}."
            )
        self.model_config()
        self.loss_config()
        self.augment_config()

    def model_config(self) -> ModelConfig:
        """The model these options describe (3 input channels)."""
        up = self.up if self.model == "unet" else "transpose"
        return ModelConfig(
            arch=self.model, in_channels=RGB_CHANNELS, depth=self.depth, filters=self.filters, up=up
        )

    def loss_config(self) -> LossConfig:
        """The loss these options describe."""
        return LossConfig(name=self.loss)

    def augment_config(self) -> AugmentConfig:
        """The augmentation these options describe (RGB modality)."""
        return AugmentConfig.from_names(self.augment, modality="rgb")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageTrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {unknown}.")
        return cls(**data)


@dataclass
class ImageTrainResult:
    """What :meth:`ImageTrainer.fit` returns.

    Attributes:
        run_dir: the run folder.
        epoch: last completed epoch.
        stopped: True when a stop request ended the run early.
        best_epoch, best_metrics: the validation epoch kept as ``checkpoint_best.pt``.
        history: every epoch's row of ``metrics.jsonl``, in order.
        parameters: trainable parameters of the model.
    """

    run_dir: Path
    epoch: int
    stopped: bool
    best_epoch: int | None
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    parameters: int

    @property
    def seconds_per_epoch(self) -> float:
        """Median wall time of an epoch (training + validation), seconds (NaN: none)."""
        times = [row["seconds"] for row in self.history if "seconds" in row]
        return float(np.median(times)) if times else float("nan")


class ImageTrainer:
    """Train a segmentation model on a 2-D image set; see the module docstring.

    Args:
        config: the options.
        data: the images and masks (all in memory, one size).
        split: which keys train and validate (the test keys are not touched here).
        callbacks: called with every :class:`~src_train.train.events.ProgressEvent`.
        should_stop: polled between batches; True = stop request (like :meth:`request_stop`).
        command_line: stored in checkpoints (default ``sys.argv``).
    """

    def __init__(
        self,
        config: ImageTrainConfig,
        data: ImageSet,
        split: Split,
        callbacks: Sequence[Callback] = (),
        should_stop: Callable[[], bool] | None = None,
        command_line: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.split = split
        self.callbacks = list(callbacks)
        self.should_stop = should_stop
        self.command_line = list(command_line if command_line is not None else sys.argv)
        self.run = RunFolder(config.run_dir)
        self.run_dir = self.run.path
        self.model_config = config.model_config()
        self._log_handler: logging.Handler | None = None
        self._stop = threading.Event()
        self.start_epoch = 1
        self.samples_seen = 0
        self.best_key: tuple[float, float] | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    # -- stop requests and events --------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the run to stop after the current batch (thread-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested."""
        return self._stop.is_set() or bool(self.should_stop and self.should_stop())

    def emit(self, kind: str, **fields: Any) -> None:
        """Send a :class:`~src_train.train.events.ProgressEvent` to every callback."""
        event = ProgressEvent(
            kind=kind, epochs=self.config.epochs, samples_seen=self.samples_seen, **fields
        )
        for callback in self.callbacks:
            callback(event)

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Device, run folder, data on the device, model, optimiser, resume state."""
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.amp_dtype, self.channels_last = step_settings(cfg.amp, cfg.channels_last, self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.run.check(resume=cfg.resume, overwrite=cfg.overwrite)
        if not cfg.resume:
            self.run.clear()
        self._log_handler = self.run.open_log()
        # read the checkpoint to resume before the data moves to the device: a bad one fails fast
        resume_from = self.run.load_latest(self.model_config) if cfg.resume else None
        torch.manual_seed(cfg.seed)
        model = build_model(self.model_config).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model
        self.parameters = count_parameters(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.loss_fn = SegmentationLoss(cfg.loss_config())
        self.augment = BatchAugment(cfg.augment_config()).to(self.device)
        self.generator = torch.Generator(device=self.device)
        self.train_images, self.train_masks = self._on_device(self.split.train)
        self.val_images, self.val_masks = self._on_device(self.split.val)
        if resume_from is not None:
            self._resume(resume_from)
        self.run.write_config(self._config_record())
        if cfg.resume:  # metrics.jsonl = the resumed history (drops rows the checkpoint lacks)
            self.run.write_metrics(self.history)
        log.info(
            "training %s (%s loss, %d parameters) on %s (amp %s, channels_last %s): %d train / "
            "%d validation images of %s",
            self.model_config.arch,
            cfg.loss,
            self.parameters,
            self.device,
            self.amp_dtype,
            self.channels_last,
            len(self.split.train),
            len(self.split.val),
            "x".join(str(s) for s in self.data.images.shape[1:3]),
        )

    def _on_device(self, keys: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(N, 3, row, col)`` and bool masks ``(N, 1, row, col)`` of ``keys``."""
        index = self.data.indices(keys)
        images = images_to_tensor(self.data.images[index]).to(self.device)
        masks = torch.from_numpy(self.data.masks[index])[:, None].to(self.device)
        return images, masks

    @property
    def image_size(self) -> int:
        """Side of the square images the model trains on, pixels."""
        return int(self.data.images.shape[1])

    def _config_record(self) -> dict[str, Any]:
        return {
            "train_config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "split": self.split.to_dict(),
            "data": str(self.data.source.root),
            "size": self.image_size,
            "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "channels_last": self.channels_last,
            "parameters": self.parameters,
            "torch": torch.__version__,
            "command_line": self.command_line,
        }

    def _resume(self, ckpt: Checkpoint) -> None:
        """Weights, Adam state, epoch numbering, best-so-far and history of ``ckpt`` (the
        latest checkpoint, read by :meth:`RunFolder.load_latest`); its split must be this
        run's."""
        saved_split = ckpt.extra.get("split")
        if saved_split is not None and Split.from_dict(saved_split) != self.split:
            raise ConfigError(
                f"{self.run.latest} was trained on another train/val/test split; resume "
                "with the same data, size and split seed, or start over."
            )
        self.model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.start_epoch = ckpt.epoch + 1
        self.samples_seen = ckpt.samples_seen
        extra = ckpt.extra
        if extra.get("best_key") is not None:
            self.best_key = (float(extra["best_key"][0]), float(extra["best_key"][1]))
            self.best_epoch = extra.get("best_epoch")
            self.best_metrics = dict(extra.get("best_metrics") or {})
        self.history = list(extra.get("history") or [])
        log.info("resumed %s at epoch %d", ckpt.path, self.start_epoch)

    # -- steps ---------------------------------------------------------------------------------
    def train_step(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimisation step on a device batch (uint8 images, augmented here).

        Returns ``(loss, logits, augmented masks)``, detached.
        """
        with torch.no_grad():
            inputs, labels = self.augment(to_model_input(images), masks, self.generator)
        with self._autocast():
            logits = self.model(self._layout(inputs))
        loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach(), labels

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _layout(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        """Shuffled index batches of the training images for ``epoch`` (depends on the seed and
        epoch only, so a resumed run repeats them); a last batch of one image joins the one
        before (batch norm needs two)."""
        n, size = self.train_images.shape[0], self.config.batch_size
        gen = torch.Generator().manual_seed(epoch_seed(self.config.seed, epoch, _BATCH_ORDER))
        order = torch.randperm(n, generator=gen)
        batches = list(order.split(size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2] = torch.cat(batches[-2:])
            batches.pop()
        return batches

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Train one epoch; its ``loss``, ``iou`` and ``recall`` (means over the augmented
        training images) and ``samples_per_s``, or None when a stop request ended it."""
        cfg = self.config
        self.model.train()
        self.generator.manual_seed(epoch_seed(cfg.seed, epoch, _AUGMENTATION))
        batches = self._batches(epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        counts: list[tuple[np.ndarray, ...]] = []
        started = time.perf_counter()
        seen = 0
        for i, index in enumerate(batches, start=1):
            if self.stop_requested:
                return None
            index = index.to(self.device)
            loss, logits, labels = self.train_step(
                self.train_images[index], self.train_masks[index]
            )
            loss_sum += loss.double() * len(index)
            counts.append(count_errors(logits > 0, labels))
            seen += len(index)
            self.samples_seen += len(index)
            if i % cfg.progress_every == 0 or i == len(batches):
                rate = seen / max(time.perf_counter() - started, _MIN_SECONDS)
                self.emit(
                    "batch",
                    epoch=epoch,
                    batch=i,
                    batches=len(batches),
                    samples_per_s=rate,
                    metrics={"loss": float(loss)},
                )
        tp, fp, fn = (np.concatenate(parts) for parts in zip(*counts, strict=True))
        scores = scores_from_counts(tp, fp, fn)
        return {
            "loss": float(loss_sum) / seen,
            "iou": float(scores.iou.mean()),
            "recall": float(scores.recall.mean()),
            "samples_per_s": seen / max(time.perf_counter() - started, _MIN_SECONDS),
        }

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float] | None:
        """Loss and mean per-image scores on the validation images (eval mode, no
        augmentation), or None when a stop request ended it."""
        self.model.eval()
        n, size = self.val_images.shape[0], self.config.batch_size
        loss_sum = 0.0
        counts: list[tuple[np.ndarray, ...]] = []
        for start in range(0, n, size):
            if self.stop_requested:
                return None
            labels = self.val_masks[start : start + size]
            inputs = self._layout(to_model_input(self.val_images[start : start + size]))
            with self._autocast():
                logits = self.model(inputs)
            loss_sum += float(self.loss_fn(logits, labels)) * labels.shape[0]
            counts.append(count_errors(logits > 0, labels))
        tp, fp, fn = (np.concatenate(parts) for parts in zip(*counts, strict=True))
        return {"loss": loss_sum / n, **scores_from_counts(tp, fp, fn).mean()}

    def _should_validate(self, epoch: int) -> bool:
        return epoch % self.config.val_every == 0 or epoch == self.config.epochs or epoch == 1

    def on_epoch_end(
        self, epoch: int, train: dict[str, float], val: dict[str, float] | None, seconds: float
    ) -> None:
        """Log, append to ``metrics.jsonl``, save latest/best checkpoints, emit ``epoch``."""
        row = {"epoch": float(epoch), "seconds": seconds}
        row.update({f"train/{k}": v for k, v in train.items()})
        if val is not None:
            row.update({f"val/{k}": v for k, v in val.items()})
        self.history.append(row)
        log.info(
            "epoch %d/%d: train loss %.4f IoU %.3f%s (%.1f s)",
            epoch,
            self.config.epochs,
            train["loss"],
            train["iou"],
            "" if val is None else f"; val loss {val['loss']:.4f} IoU {val['iou']:.3f}",
            seconds,
        )
        self.run.append_metrics(row)
        improved = False
        if val is not None and math.isfinite(val["iou"]):
            key = (val["iou"], -val["loss"])
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
            self.model,
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
                "split": self.split.to_dict(),
                "image_size": self.image_size,
            },
        )
        self.emit("checkpoint", epoch=epoch, path=str(path), sha1=sha1, message=f"{name} {sha1}")

    def on_train_end(self, epoch: int, stopped: bool) -> None:
        """The final checkpoint. A stopped run keeps the latest checkpoint of its last complete
        epoch (the interrupted epoch's partial updates are dropped), so that a resumed run
        trains exactly as an uninterrupted one would."""
        if stopped:
            self.emit("stopped", epoch=epoch, message="stopped on request")
        elif epoch >= self.config.epochs:
            self._save(FINAL, epoch, self.history[-1] if self.history else {})

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> ImageTrainResult:
        """:meth:`setup` and every remaining epoch; see the module docstring."""
        try:
            self.setup()
            epoch, stopped = self.start_epoch - 1, False
            for epoch in range(self.start_epoch, self.config.epochs + 1):
                started = time.perf_counter()
                train = self.train_epoch(epoch)
                due = self._should_validate(epoch)
                val = self.validate(epoch) if train is not None and due else None
                if train is None or (val is None and due):
                    stopped, epoch = True, epoch - 1
                    break
                self.on_epoch_end(epoch, train, val, time.perf_counter() - started)
                if epoch < self.config.epochs and self.stop_requested:
                    stopped = True
                    break
            self.on_train_end(epoch, stopped)
            self.emit("end", epoch=epoch, message="stopped" if stopped else "done")
        finally:
            self.close()
        return ImageTrainResult(
            run_dir=self.run_dir,
            epoch=epoch,
            stopped=stopped,
            best_epoch=self.best_epoch,
            best_metrics=self.best_metrics,
            history=list(self.history),
            parameters=self.parameters,
        )

    def close(self) -> None:
        """Stop writing ``train.log``."""
        if self._log_handler is not None:
            logging.getLogger("src_train").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
