"""The Trainer: a small class whose steps read top to bottom, and its configuration.

``Trainer(config).fit()`` prepares the cache, splits series (every ``val_stride``-th one
validates), trains on nodule crops with batch augmentation on the device, validates on whole
slices on epoch 1 and every ``val_every``-th epoch, and keeps a run folder::

    RUN_DIR/config.json             the TrainConfig, model config, device, world size
    RUN_DIR/train.log               the log of the run
    RUN_DIR/metrics.jsonl           one JSON object per epoch (train and validation metrics)
    RUN_DIR/checkpoint_latest.pt    after every epoch and on a stop request
    RUN_DIR/checkpoint_best.pt      best validation recall (ties: best F1)
    RUN_DIR/checkpoint_final.pt     when the last epoch is done
    RUN_DIR/tensorboard/            scalars and CT images with TP green / FN orange / FP red

Progress leaves through callbacks receiving :class:`ProgressEvent` objects (one per batch,
validation, epoch, checkpoint, end); a stop request (:meth:`Trainer.request_stop`, a
``should_stop`` callable, SIGTERM/SIGINT via :func:`install_stop_signals`) is honoured between
training or validation batches: the latest checkpoint is written and :meth:`Trainer.fit`
returns with ``stopped`` (a stop during validation keeps the trained epoch, unvalidated).

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel: NCCL on
GPUs, gloo on CPUs; each process sees its share of every epoch; only rank 0 writes files and
calls callbacks. Run ``python -m src_train.train DATA_DIR --run-dir DIR`` (same options as
``lunaseg train``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from src_train.atomic import write_text_atomic
from src_train.augment import AugmentConfig, BatchAugment
from src_train.colors import ERROR_COLORS_RGB, ERROR_FN, ERROR_FP, ERROR_TP, LUNG_WINDOW_HU
from src_train.context import DEFAULT_CONTEXT_SLICES
from src_train.data import (
    SampleConfig,
    SeriesCache,
    TrainingDataset,
    ValidationDataset,
    check_training_folder,
)
from src_train.errors import (
    AnnotationError,
    CancelledError,
    CheckpointError,
    ConfigError,
    OutputExistsError,
)
from src_train.losses import LossConfig, SegmentationLoss, SegmentationMetrics
from src_train.luna import LunaFolder, split_series
from src_train.masks import DEFAULT_THRESHOLD_HU, REFERENCE_METHOD
from src_train.model import (
    Checkpoint,
    ModelConfig,
    build_model,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.jsonl"
LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
FINAL = "checkpoint_final.pt"
TENSORBOARD_DIR = "tensorboard"

#: Files that mark a run folder as used (a new run there needs --overwrite).
_RUN_OUTPUTS = (LATEST, BEST, FINAL, METRICS_FILE)

AMP_MODES = ("auto", "bf16", "fp16", "off")
ON_OFF_AUTO = ("auto", "on", "off")

_SEED_MASK = (1 << 63) - 1

#: Shortest time a rate is divided by, seconds (avoids a division by zero).
_MIN_SECONDS = 1e-9

#: Smallest ``val_stride``: 1 would hold out every series and leave none to train on.
MIN_VAL_STRIDE = 2

#: How long processes of a distributed run wait for each other (e.g. while caching series).
DIST_TIMEOUT = datetime.timedelta(hours=2)

#: Opacity of the TP/FN/FP colours over the grey CT in TensorBoard images.
OVERLAY_ALPHA = 0.6


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` and in every checkpoint.

    Data: ``data_dir`` (LUNA16 layout), ``cache_dir`` (default ``data_dir/cache``),
    ``threshold_hu``/``mask_method`` (ground truth, see :mod:`src_train.masks`),
    ``crop_size``/``window_size`` (training crop inside a window centered on a nodule, pixels),
    ``context_slices`` (neighbours each side), ``val_stride`` (every n-th series validates).
    Schedule: ``epochs``, ``epoch_samples`` (training crops per epoch, all processes together),
    ``batch_size`` (per process), ``val_batch_size``, ``val_every`` (validate on epoch 1, every
    n-th epoch and the last), ``num_workers`` (data-loader processes), ``progress_every``
    (batch events every n batches). Model: ``model`` (unet|segnet), ``depth``, ``filters``.
    Optimisation: ``loss`` (dice-fn|dice|bce|focal), ``fn_weight``, ``focal_gamma``, ``lr``
    (Adam), ``augment`` (comma list or none), ``seed``. Device: ``device`` (auto|cpu|cuda[:n]),
    ``threads`` (CPU threads for torch; 0 = torch's default), ``amp`` (auto|bf16|fp16|off),
    ``channels_last`` (auto|on|off). Output: ``run_dir``,
    ``resume`` (continue from ``checkpoint_latest.pt``), ``overwrite`` (start over in a used
    run folder), ``tensorboard``, ``tb_images`` (validation slices drawn per validation).
    """

    data_dir: str = "lunaseg-data"
    run_dir: str = "runs/unet"
    cache_dir: str | None = None
    threshold_hu: float = DEFAULT_THRESHOLD_HU
    mask_method: str = REFERENCE_METHOD
    crop_size: int = SampleConfig.crop_size
    window_size: int = SampleConfig.window_size
    context_slices: int = DEFAULT_CONTEXT_SLICES
    val_stride: int = 10
    epochs: int = 10
    epoch_samples: int = 1024
    batch_size: int = 16
    val_batch_size: int = 4
    val_every: int = 5
    num_workers: int = 2
    progress_every: int = 1
    model: str = "unet"
    depth: int = ModelConfig.depth
    filters: int = ModelConfig.filters
    loss: str = "dice-fn"
    fn_weight: float = LossConfig.fn_weight
    focal_gamma: float = LossConfig.focal_gamma
    lr: float = 1e-3
    augment: str = "flip,offset,scale,rotate,noise"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    amp: str = "auto"
    channels_last: str = "auto"
    resume: bool = False
    overwrite: bool = False
    tensorboard: bool = True
    tb_images: int = 4

    def __post_init__(self) -> None:
        positive = (
            "epochs",
            "epoch_samples",
            "batch_size",
            "val_batch_size",
            "val_every",
            "progress_every",
            "crop_size",
            "window_size",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if min(self.num_workers, self.context_slices, self.tb_images, self.threads, self.seed) < 0:
            raise ConfigError(
                "num_workers, context_slices, tb_images, threads and seed must not be negative."
            )
        if self.val_stride < MIN_VAL_STRIDE:
            raise ConfigError(
                f"val_stride must be at least {MIN_VAL_STRIDE} (every n-th series validates, the "
                f"others train); got {self.val_stride}."
            )
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}; got {self.amp!r}.")
        if self.channels_last not in ON_OFF_AUTO:
            raise ConfigError(
                f"channels_last must be one of {', '.join(ON_OFF_AUTO)}; "
                f"got {self.channels_last!r}."
            )
        if self.resume and self.overwrite:
            raise ConfigError(
                "resume (continue the run) and overwrite (start it over) contradict each other; "
                "choose one."
            )
        if self.lr <= 0:
            raise ConfigError(f"The learning rate must be positive; got {self.lr}.")
        # Validate the parts other modules own now, not after the cache is built.
        self.model_config()
        self.loss_config()
        self.augment_config()
        self.sample_config()

    def model_config(self) -> ModelConfig:
        """The model these options describe."""
        return ModelConfig(
            arch=self.model,
            in_channels=2 * self.context_slices + 1,
            depth=self.depth,
            filters=self.filters,
        )

    def loss_config(self) -> LossConfig:
        """The loss these options describe."""
        return LossConfig(name=self.loss, fn_weight=self.fn_weight, focal_gamma=self.focal_gamma)

    def augment_config(self) -> AugmentConfig:
        """The augmentation these options describe."""
        return AugmentConfig.from_names(self.augment)

    def sample_config(self) -> SampleConfig:
        """Crop shapes."""
        return SampleConfig(self.crop_size, self.window_size, self.context_slices)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {unknown}.")
        return cls(**data)


@dataclass
class ProgressEvent:
    """What a callback receives.

    Attributes:
        kind: ``"cache"`` (preparing series), ``"batch"``, ``"validation"`` (a validation
            batch), ``"epoch"`` (an epoch ended: ``metrics`` has ``train/...`` and maybe
            ``val/...``), ``"checkpoint"`` (``path``, ``sha1``), ``"stopped"``, ``"end"``.
        epoch, epochs: current epoch (1-based) and the last one.
        batch, batches: position within the epoch (or validation, or cache build).
        samples_seen: training samples seen so far (all processes).
        samples_per_s: training throughput over the current epoch so far.
        metrics: numbers for this event (batch: ``loss``; epoch: prefixed metrics).
        message: a human-readable line.
        path, sha1: the checkpoint written (``"checkpoint"`` events).
        time: wall-clock time, seconds since the epoch.
    """

    kind: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    samples_seen: int = 0
    samples_per_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    path: str | None = None
    sha1: str | None = None
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        """One line of JSON (NaN/inf become null)."""
        data = asdict(self)
        data["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return json.dumps(data, separators=(",", ":"))


Callback = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        run_dir: the run folder.
        epoch: last completed epoch.
        samples_seen: training samples seen (all processes).
        stopped: True when a stop request ended the run early.
        best_epoch, best_metrics: the validation epoch kept as ``checkpoint_best.pt``.
        last_metrics: metrics of the last completed epoch (``train/...``, ``val/...``).
        history: every epoch's metrics, in order.
    """

    run_dir: Path
    epoch: int
    samples_seen: int
    stopped: bool
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dist:
    """This process's place in a distributed run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _init_distributed(device_name: str) -> _Dist:
    """Join the process group ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=DIST_TIMEOUT)
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def _choose_device(name: str, d: _Dist) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and d.active and device.index is None:
        return torch.device("cuda", d.local_rank)
    return device


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``mode`` on ``device`` (None = full precision).

    ``auto``: bf16 on GPUs that support it, else fp16 on GPUs; on CPUs bf16 where the CPU has
    native bf16 instructions (training a 64x64 batch of 16 measured ~1.5x faster than fp32,
    ``benchmarks/train_throughput.py``), else full precision.
    """
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else None


def step_settings(
    amp: str, channels_last: str, device: torch.device
) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (None = full precision) and memory format a run uses on ``device``.

    ``amp`` is one of :data:`AMP_MODES`, ``channels_last`` one of :data:`ON_OFF_AUTO`.
    ``channels_last="auto"`` turns it on on GPUs, and on CPUs under bf16 autocast (measured
    faster there only, ``benchmarks/train_throughput.py``).
    """
    amp_dtype = _amp_dtype(amp, device)
    layout = channels_last == "on" or (
        channels_last == "auto" and (device.type == "cuda" or amp_dtype == torch.bfloat16)
    )
    return amp_dtype, layout


def _cpu_has_native_bf16() -> bool:
    """True when oneDNN reports native bf16 support (AVX512-BF16 / AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def error_overlay_rgb(
    hu: np.ndarray, pred: np.ndarray, label: np.ndarray, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """A CT slice ``(row, col)`` in HU as uint8 RGB ``(row, col, 3)`` in the lung window, with
    true positives green, false negatives orange and false positives red (``colors``)."""
    low, high = LUNG_WINDOW_HU
    grey = np.clip((hu.astype(np.float32) - low) / (high - low), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    pred_b, label_b = pred.astype(bool), label.astype(bool)
    for code, where in (
        (ERROR_TP, pred_b & label_b),
        (ERROR_FN, ~pred_b & label_b),
        (ERROR_FP, pred_b & ~label_b),
    ):
        colour = np.asarray(ERROR_COLORS_RGB[code], dtype=np.float32)
        rgb[where] = (1 - alpha) * rgb[where] + alpha * colour
    return np.rint(rgb).astype(np.uint8)


def _per_second(count: int, started: float) -> float:
    """``count`` per second since ``started`` (a ``time.perf_counter()`` value)."""
    return count / max(time.perf_counter() - started, _MIN_SECONDS)


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def install_stop_signals(trainer: Trainer) -> Callable[[], None]:
    """Make SIGTERM and the first SIGINT a stop request (a second SIGINT interrupts at once).

    Returns a function that restores the previous handlers. Main thread only.
    """
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and trainer.stop_requested:
            raise KeyboardInterrupt
        log.warning("%s received: stopping after the current batch", signal.Signals(signum).name)
        trainer.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
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
        self.run_dir = Path(config.run_dir)
        self._stop = threading.Event()
        self.dist = _Dist()
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
        self.dist = _init_distributed(cfg.device)
        if not self.dist.is_main:  # rank 0 reports; the others only warn
            logging.getLogger("src_train").setLevel(logging.WARNING)
        self.device = _choose_device(cfg.device, self.dist)
        self._reduce_device = (
            self.device if self.dist.active and self.device.type == "cuda" else torch.device("cpu")
        )
        self.amp_dtype, self.channels_last = step_settings(cfg.amp, cfg.channels_last, self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.dist.rank)
        self._prepare_run_dir()
        # read the checkpoint to resume before caching, so that a bad one fails in a second
        resume_from = self._load_latest() if cfg.resume else None
        self._prepare_data()
        self._prepare_model()
        if resume_from is not None:
            self._resume(resume_from)
        if self.dist.is_main:
            self._write_config()
            if cfg.resume:
                self._rewrite_metrics()
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR))
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
        latest = self.run_dir / LATEST
        # Every process checks (same files), so none waits for a failed rank 0.
        if cfg.resume and not latest.is_file():
            raise ConfigError(
                f"Cannot resume: {latest} does not exist. Start without --resume or point "
                "--run-dir at an earlier run."
            )
        held = [name for name in _RUN_OUTPUTS if (self.run_dir / name).exists()]
        if not cfg.resume and held and not cfg.overwrite:
            raise OutputExistsError(
                f"{self.run_dir} already holds a run ({', '.join(held)}). Use --resume to "
                "continue it, --overwrite to start over, or another --run-dir."
            )
        if self.dist.is_main:
            if cfg.overwrite and not cfg.resume:
                for name in (LATEST, BEST, FINAL, METRICS_FILE, LOG_FILE):
                    (self.run_dir / name).unlink(missing_ok=True)
                shutil.rmtree(self.run_dir / TENSORBOARD_DIR, ignore_errors=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._log_handler = logging.FileHandler(self.run_dir / LOG_FILE)
            self._log_handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logging.getLogger("src_train").addHandler(self._log_handler)
            if logging.getLogger("src_train").getEffectiveLevel() > logging.INFO:
                logging.getLogger("src_train").setLevel(logging.INFO)
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
            worker_init_fn=_ignore_stop_signals,
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
            worker_init_fn=_ignore_stop_signals,
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

    def _load_latest(self) -> Checkpoint:
        """``checkpoint_latest.pt``, checked against the model the options describe.

        A missing, corrupt or foreign file raises :class:`CheckpointError` naming the run's
        other checkpoints that can stand in for it; another model raises :class:`ConfigError`.
        """
        path = self.run_dir / LATEST
        try:
            ckpt = load_checkpoint(path, map_location="cpu", advice="")
        except CheckpointError as exc:
            raise CheckpointError(
                f"Cannot resume: {str(exc).rstrip()} {self._resume_alternatives()}"
            ) from exc
        wanted = self.config.model_config()
        if ckpt.model_config != wanted:
            raise ConfigError(
                f"{path} holds a model {ckpt.model_config}, but the options ask for "
                f"{wanted}. Resume with the run's model options."
            )
        return ckpt

    def _resume_alternatives(self) -> str:
        """What to do when ``checkpoint_latest.pt`` is unusable: the readable best/final
        checkpoints of the run folder (with their epochs), else starting over."""
        usable = []
        for name in (FINAL, BEST):
            path = self.run_dir / name
            if not path.is_file():
                continue
            try:
                epoch = load_checkpoint(path, map_location="cpu").epoch
            except CheckpointError:
                log.warning("%s is unreadable too", path)
                continue
            usable.append(f"{name} (epoch {epoch})")
        if not usable:
            return (
                f"{self.run_dir} holds no readable {FINAL} or {BEST} to resume from: use "
                "--overwrite to start this run over, or another --run-dir."
            )
        return (
            f"To resume from an earlier state of this run, copy {' or '.join(usable)} in "
            f"{self.run_dir} to {LATEST}; or use --overwrite to start the run over."
        )

    def _resume(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt`` (see :meth:`_load_latest`): weights, Adam state, epoch
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
        data = {
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
        write_text_atomic(self.run_dir / CONFIG_FILE, json.dumps(data, indent=1), overwrite=True)

    def _rewrite_metrics(self) -> None:
        """``metrics.jsonl`` = the resumed history (drops rows of epochs the checkpoint lacks,
        e.g. written just before a crash)."""
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        write_text_atomic(self.run_dir / METRICS_FILE, text, overwrite=True)

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
        with open(self.run_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(row) + "\n")
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
                image[j, center].float().cpu().numpy(),
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
            self.dist = _Dist()


if __name__ == "__main__":
    from src_train.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
