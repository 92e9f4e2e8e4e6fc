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

The loop itself is the CT :class:`~src_train.train.Trainer`'s
(:class:`~src_train.train.loop.TrainingLoop`: stop requests, events, the optimisation step,
checkpoints, "best", resume); so are models and checkpoints (:mod:`src_train.model`), losses,
device augmentation, the run folder, the mixed-precision and memory-format choice
(:func:`~src_train.train.runtime.step_settings`) and the device rule (:mod:`src_train.devices`).
What this subclass sets differently, and why:

- Data: the whole image set lives on the device as uint8 and batches are index slices of it
  (an epoch is every training image once); the CT Trainer streams nodule crops of
  ``epoch_samples`` from a memory-mapped cache through a ``DataLoader`` with workers.
- Validation and the best checkpoint: mean per-image IoU over the validation images, every
  epoch by default (``val_every`` 1: a pass over 50 images is cheap), best = highest IoU
  (ties: lower loss), as dermoscopy studies rank; the CT Trainer validates on epoch 1 and every
  5th (whole slices of held-out series are costly) and keeps the best by recall, then F1 (the
  SPEC's detection-first rule).
- Stop (``resumes_mid_epoch`` False): an interrupted epoch is dropped (``checkpoint_latest.pt``
  keeps the last complete one) so that a resumed run equals an uninterrupted one bit for bit;
  the CT Trainer saves the interrupted epoch's position, not to lose an epoch of a long run.
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

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src_train.augment import AugmentConfig
from src_train.devices import resolve_device
from src_train.errors import ConfigError
from src_train.images2d.dataset import ImageSet, Split
from src_train.images2d.metrics import count_errors, scores_from_counts
from src_train.images2d.predict import images_to_tensor, to_model_input
from src_train.losses import LossConfig
from src_train.model import Checkpoint, ModelConfig, count_parameters
from src_train.train.config import AMP_MODES, ON_OFF_AUTO, OptionsRecord
from src_train.train.events import Callback
from src_train.train.loop import TrainingLoop, per_second
from src_train.train.run_folder import BEST, FINAL, LATEST, METRICS_FILE
from src_train.train.runtime import step_settings

log = logging.getLogger(__name__)

__all__ = ["BEST", "FINAL", "LATEST", "METRICS_FILE", "ImageTrainConfig", "ImageTrainer"]

#: Input channels of RGB images.
RGB_CHANNELS = 3

#: Streams of random numbers drawn per epoch (see :func:`epoch_seed`).
_BATCH_ORDER, _AUGMENTATION = 0, 1


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for one stream of one epoch of a run: the same in every process (unlike
    ``hash`` of strings), so a resumed run draws what the uninterrupted one would have."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class ImageTrainConfig(OptionsRecord):
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


class ImageTrainer(TrainingLoop):
    """Train a segmentation model on a 2-D image set; see the module docstring.

    Args:
        config: the options.
        data: the images and masks (all in memory, one size).
        split: which keys train and validate (the test keys are not touched here).
        callbacks: called with every :class:`~src_train.train.events.ProgressEvent`.
        should_stop: polled between batches; True = stop request (like :meth:`request_stop`).
        command_line: stored in checkpoints (default ``sys.argv``).
    """

    config: ImageTrainConfig

    def __init__(
        self,
        config: ImageTrainConfig,
        data: ImageSet,
        split: Split,
        callbacks: Sequence[Callback] = (),
        should_stop: Callable[[], bool] | None = None,
        command_line: Sequence[str] | None = None,
    ) -> None:
        super().__init__(config, callbacks, should_stop, command_line)
        self.data = data
        self.split = split
        self.model_config = config.model_config()

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
        self.build_training_parts(self.model_config, cfg.loss_config(), cfg.augment_config())
        self.parameters = count_parameters(self.model)
        self.train_images, self.train_masks = self._on_device(self.split.train)
        self.val_images, self.val_masks = self._on_device(self.split.val)
        if resume_from is not None:
            self.restore(resume_from)
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

    def restore(self, ckpt: Checkpoint) -> None:
        """The loop's resume state from ``ckpt`` (see :meth:`TrainingLoop.restore`); its split
        must be this run's."""
        saved_split = ckpt.extra.get("split")
        if saved_split is not None and Split.from_dict(saved_split) != self.split:
            raise ConfigError(
                f"{self.run.latest} was trained on another train/val/test split; resume "
                "with the same data, size and split seed, or start over."
            )
        super().restore(ckpt)
        log.info("resumed %s at epoch %d", ckpt.path, self.start_epoch)

    def checkpoint_extra(self, name: str, epoch: int) -> dict[str, Any]:
        """The loop's extra plus the split and the image size."""
        extra = super().checkpoint_extra(name, epoch)
        extra.update(split=self.split.to_dict(), image_size=self.image_size)
        return extra

    # -- steps ---------------------------------------------------------------------------------
    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``(N, 3, row, col)`` as the model's float input."""
        return to_model_input(images)

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
        self.aug_generator.manual_seed(epoch_seed(cfg.seed, epoch, _AUGMENTATION))
        batches = self._batches(epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        counts: list[tuple[np.ndarray, ...]] = []
        started = time.perf_counter()
        seen = 0
        for i, index in enumerate(batches, start=1):
            if self.stop_requested:
                return None
            index = index.to(self.device)
            loss, logits, _, labels = self.train_step(
                self.train_images[index], self.train_masks[index]
            )
            loss_sum += loss.double() * len(index)
            counts.append(count_errors(logits > 0, labels))
            seen += len(index)
            self.samples_seen += len(index)
            if i % cfg.progress_every == 0 or i == len(batches):
                self.emit(
                    "batch",
                    epoch=epoch,
                    batch=i,
                    batches=len(batches),
                    samples_per_s=per_second(seen, started),
                    metrics={"loss": float(loss)},
                )
        tp, fp, fn = (np.concatenate(parts) for parts in zip(*counts, strict=True))
        scores = scores_from_counts(tp, fp, fn)
        return {
            "loss": float(loss_sum) / seen,
            "iou": float(scores.iou.mean()),
            "recall": float(scores.recall.mean()),
            "samples_per_s": per_second(seen, started),
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

    def best_key_of(self, val: dict[str, float]) -> tuple[float, ...] | None:
        """Highest mean validation IoU, ties: lower loss (None when the IoU is not finite)."""
        return (val["iou"], -val["loss"]) if math.isfinite(val["iou"]) else None

    def no_best_reason(self) -> str:
        """Only a finite validation IoU ranks."""
        return "no validation IoU was finite"

    def log_epoch(self, epoch: int, row: dict[str, float], val: dict[str, float] | None) -> None:
        """Training loss and IoU, validation loss and IoU, seconds."""
        log.info(
            "epoch %d/%d: train loss %.4f IoU %.3f%s (%.1f s)",
            epoch,
            self.config.epochs,
            row["train/loss"],
            row["train/iou"],
            "" if val is None else f"; val loss {val['loss']:.4f} IoU {val['iou']:.3f}",
            row["seconds"],
        )

    def result(self, epoch: int, stopped: bool) -> ImageTrainResult:
        """The run's :class:`ImageTrainResult`."""
        return ImageTrainResult(
            run_dir=self.run_dir,
            epoch=epoch,
            stopped=stopped,
            best_epoch=self.best_epoch,
            best_metrics=self.best_metrics,
            history=list(self.history),
            parameters=self.parameters,
        )
