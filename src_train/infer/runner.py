"""Whole-series inference: the model over every slice of a CT, as a generator of progress.

:func:`iter_inference` runs a segmentation model over every slice of a series (each slice with
its context slices, see :mod:`src_train.context`), yielding :class:`InferenceProgress` after
each batch and returning an :class:`InferenceResult` (probability volume, thresholded mask and
candidate nodules, all in the CT's geometry: arrays ``(index, row, col)``, world ``(x, y, z)``
mm). Every series meets the model in the canonical frame
(:meth:`~src_train.ct.CtVolume.canonical`: array col/row/index along world +x/+y/+z), so the
way a file orders its slices and axes does not change the result; probabilities and masks are
written back in the file's array order, through views, without copies. The viewer runs the
generator in a worker thread (Cancel = stop iterating); the CLI and Python callers use
:func:`run_inference`, which drives it with ``progress``/``should_stop``.

Speed, on the CPU: batch norms are folded into the convolutions; bfloat16 autocast is used only on
CPUs with native bf16 and AMX (:func:`~src_train.devices.cpu_bf16_pays`); CPU threads (all or one),
memory format (channels-last or not) and batch size are chosen by measurement on the first batches
of the series (the fastest per slice wins, not the biggest) by a
:class:`~src_train.infer.tuner.Tuner` the caller may keep across series; on fp32 CPUs the model
exported to an installed CPU runtime is one more option it measures
(:mod:`~src_train.infer.backends`). In-plane, the model only runs on the box around the body
(:func:`~src_train.anatomy.body_box`) widened by more than the network's receptive field, so voxels
inside the box get the values a whole-slice pass would give; voxels outside it (air far from
anything) get probability 0. On CUDA: float16 (or bfloat16) autocast, channels-last, larger
batches, and an out-of-memory error halves the batch and retries.

Memory: besides the CT itself, the probability volume (float16, 2 bytes/voxel), the mask
(1 byte/voxel) and, while grouping candidates, a uint16 label array over the mask's bounding
box; model inputs are made one batch at a time.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from src_train.anatomy import body_box
from src_train.context import DEFAULT_CONTEXT_SLICES, context_stack, step_slices_of
from src_train.ct import CtVolume
from src_train.devices import cpu_bf16_pays, resolve_device
from src_train.errors import ConfigError
from src_train.infer.backends import (
    ENGINE_CHOICES,
    Engines,
    candidate_engines,
    execution_options,
)
from src_train.infer.candidates import CandidateConfig, candidates_in_frame, group_candidates
from src_train.infer.tuner import CPU_BATCH_SIZES, CUDA_BATCH_SIZES, Tuner, TunerCache
from src_train.model import unwrap_model
from src_train.options import option
from src_train.progress import Progress, ShouldStop, run_steps
from src_train.records.candidate import CandidateNodule
from src_train.records.threshold import DEFAULT_THRESHOLD, PRE_OPTION_THRESHOLD

log = logging.getLogger(__name__)

#: Pixels kept around the body box; must exceed the network's receptive-field radius
#: (about 26 px for the depth-3 U-Net), so cropping does not change any value inside the box.
BODY_MARGIN_PX = 32

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model over a series (every field is a ``lunaseg infer`` option).

    Attributes:
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:N"``.
        batch_size: slices per forward pass; None = the fastest measured.
        threshold: probability at or above which a voxel is in the mask; None = the
            checkpoint's detection threshold where a detector runs
            (:func:`~src_train.infer.detector.iter_detection`), else :data:`DEFAULT_THRESHOLD`.
        precision: ``"auto"`` (bf16 on a CPU with native bf16 and AMX, fp16/bf16 on CUDA),
            ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only).
        channels_last: memory format; None = the fastest measured.
        num_threads: CPU threads for the model; None = the fastest of the current setting and
            one (measured). The process's setting is restored afterwards.
        crop_to_body: run the model only on the in-plane box around the body.
        mirror: also run the model on every slice mirrored left-right and average the two
            probabilities (test-time mirroring, as nnU-Net does by default): twice the model
            time; measured in docs/generalisation.md (seventh round).
        candidates: post-processing of the mask into candidates.
    """

    device: str = option("auto", help="auto (CUDA when present), cpu or cuda[:N]")
    batch_size: int | None = option(None, help="slices per pass (default: fastest measured)")
    threshold: float | None = option(
        None,
        help=f"probability threshold of the mask (default: the checkpoint's detection "
        f"threshold, {PRE_OPTION_THRESHOLD:g} for a checkpoint without one)",
    )
    precision: str = option(
        "auto",
        help="autocast dtype: auto = bf16 on CPUs with native bf16 and AMX (else fp32), "
        "fp16/bf16 on CUDA",
        choices=PRECISIONS,
    )
    channels_last: bool | None = option(None, help="memory format", cli=False)
    num_threads: int | None = option(None, help="CPU threads for the model", cli=False)
    crop_to_body: bool = option(
        True,
        help="run on whole slices instead of the box around the body",
        flag="--no-crop",
    )
    engine: str = option(  # fast CPU path, see backends.py
        "auto",
        help="fp32 CPU forward passes: auto = PyTorch or the installed runtime, the faster by "
        "measurement; torch; openvino",
        choices=ENGINE_CHOICES,
    )
    mirror: bool = option(
        False,
        help="also segment each slice mirrored left-right and average the probabilities "
        "(twice the model time)",
    )
    candidates: CandidateConfig = field(default_factory=CandidateConfig)

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"The probability threshold must lie in (0, 1); got {self.threshold}."
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"Unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}."
            )


@dataclass(frozen=True)
class InferenceProgress:
    """One step of :func:`iter_inference`: ``done`` of ``total`` slices, and a line to show."""

    done: int
    total: int
    message: str


@dataclass(frozen=True)
class InferenceSettings:
    """How a run executed (chosen by measurement unless fixed by the caller).

    Attributes:
        device: ``"cpu"``, ``"cuda:0"``, ...
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast dtype).
        threads: CPU threads the model ran with.
        channels_last: the memory format of inputs and weights.
        batch_size: slices per forward pass.
        crop_irc: in-plane box the model ran on, ``(row0, row1, col0, col1)`` (exclusive ends),
            in the canonical frame (:meth:`CtVolume.canonical`).
        tuned: whether this run measured configurations (threads, format, batch size).
        engine: ``"torch"`` or the CPU runtime that ran the exported model (backends.py).
    """

    device: str
    precision: str
    threads: int
    channels_last: bool
    batch_size: int
    crop_irc: tuple[int, int, int, int]
    tuned: bool = False
    engine: str = "torch"

    def describe(self) -> str:
        """One line for logs and the CLI."""
        fmt = "channels-last" if self.channels_last else "NCHW"
        fmt = fmt if self.engine == "torch" else self.engine
        r0, r1, c0, c1 = self.crop_irc
        return (
            f"{self.device} {self.precision} {self.threads} thread(s) {fmt} "
            f"batch {self.batch_size}, "
            f"in-plane box rows {r0}:{r1} cols {c0}:{c1}"
        )


@dataclass
class InferenceResult:
    """Output of :func:`run_inference`, in the CT's geometry.

    Attributes:
        prob: nodule probability, float16 ``(index, row, col)``.
        mask: ``prob >= threshold``, bool ``(index, row, col)``.
        candidates: connected components of ``mask``, most probable first.
        seconds: wall time of the whole run (model passes and grouping).
        threshold: the probability threshold of ``mask``.
        settings: how the model was run.
        model_seconds: wall time of the model passes alone.
        left_out: candidates beyond the detector's ``max_candidates`` (least probable), not in
            ``candidates``; their voxels stay in ``mask``.
    """

    prob: np.ndarray
    mask: np.ndarray
    candidates: list[CandidateNodule]
    seconds: float
    threshold: float = DEFAULT_THRESHOLD
    settings: InferenceSettings | None = None
    model_seconds: float = 0.0
    left_out: int = 0

    @property
    def slices_per_second(self) -> float:
        """Slices processed per second of model time."""
        return self.prob.shape[0] / self.model_seconds if self.model_seconds > 0 else math.nan


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every ``Conv2d`` directly followed by ``BatchNorm2d`` (in a Sequential) in place.

    The model must be in eval mode. Returns the number of folded pairs.
    """
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
                folded += 1
    return folded


def _model_facts(model: nn.Module) -> tuple[int, int, float | None]:
    """``(context slices, in-plane size multiple, context spacing in mm or None for every
    slice)`` of a LunaSeg model (defaults else)."""
    config = getattr(unwrap_model(model), "config", None)
    context = int(getattr(config, "context_slices", DEFAULT_CONTEXT_SLICES))
    depth = int(getattr(config, "depth", 3))
    multiple = int(getattr(config, "size_multiple", 2 ** max(depth - 1, 0)))
    context_mm = getattr(config, "context_mm", None)
    return context, max(multiple, 1), None if context_mm is None else float(context_mm)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise ConfigError("fp16 autocast is for CUDA; use bf16 or fp32 on the CPU.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_bf16_pays() else "fp32"


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _inplane_box(hu: np.ndarray, crop_to_body: bool, multiple: int) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` the model runs on: the body's box (sides a multiple of
    ``multiple``) or the whole slice."""
    if crop_to_body:
        return body_box(hu, multiple, BODY_MARGIN_PX)
    return 0, hu.shape[1], 0, hu.shape[2]


def _tuning_space(
    opts: InferenceOptions, dev: torch.device
) -> tuple[list[int], list[bool | str], list[int]]:
    """Threads, memory formats and batch sizes the tuner may choose among (the one asked for
    where the options fix it)."""
    original_threads = torch.get_num_threads()
    if opts.num_threads is not None:
        threads = [opts.num_threads]
    elif dev.type == "cpu" and original_threads > 1:
        threads = [original_threads, 1]
    else:
        threads = [original_threads]
    formats: list[bool | str] = (
        [opts.channels_last] if opts.channels_last is not None else [True, False]
    )
    if opts.batch_size is not None:
        sizes = [opts.batch_size]
    else:
        sizes = list(CUDA_BATCH_SIZES if dev.type == "cuda" else CPU_BATCH_SIZES)
    return threads, formats, sizes


def _prepare_tuner(
    opts: InferenceOptions,
    dev: torch.device,
    prec: str,
    runner: nn.Module,
    box: tuple[int, int, int, int],
    tuners: TunerCache | None,
) -> tuple[Tuner, Engines, tuple[Any, ...]]:
    """The tuner of this kind of series (shared through ``tuners``), the CPU runtimes it may
    choose (backends.py) and its key (for the log)."""
    context, multiple, _context_mm = _model_facts(runner)
    threads, formats, sizes = _tuning_space(opts, dev)
    r0, r1, c0, c1 = box
    # Slices of similar area (within a factor of 2) share a choice: series differ by a few rows.
    area_class = round(math.log2((r1 - r0) * (c1 - c0)))
    key = (str(dev), prec, area_class, context, type(runner).__name__, *threads, *formats, *sizes)
    cache = tuners if tuners is not None else TunerCache()
    # Fast CPU path (backends.py): exported graphs the tuner measures against eager PyTorch.
    offered = candidate_engines(opts.engine, dev, prec, runner, opts.channels_last is not None)
    engines = cache.engines.prepare(offered, runner, multiple)
    formats = execution_options(formats, engines.names, opts.engine)
    key = (*key, opts.engine, *engines.names)
    return cache.get(key, threads, formats, sizes), engines, key


def _settings_chosen(
    tuner: Tuner,
    dev: torch.device,
    prec: str,
    box: tuple[int, int, int, int],
    measured: bool,
    key: tuple[Any, ...],
) -> InferenceSettings:
    """How the run executed (the tuner's choice; logged when this run finished measuring)."""
    final_threads, final_format, final_size = tuner.propose()
    if measured and tuner.done:
        log.info(
            "tuned %s: %s (seconds/slice %s)",
            key[:5],
            tuner.best,
            {k: round(v, 4) for k, v in tuner.timings().items()},
        )
    return InferenceSettings(
        device=str(dev),
        precision=prec,
        threads=final_threads,
        channels_last=final_format is True,
        engine=final_format if isinstance(final_format, str) else "torch",
        batch_size=int(final_size),
        crop_irc=box,
        tuned=measured,
    )


def iter_inference(
    ct: CtVolume,
    model: nn.Module,
    options: InferenceOptions | None = None,
    *,
    tuners: TunerCache | None = None,
) -> Generator[InferenceProgress, None, InferenceResult]:
    """Segment every slice of ``ct`` with ``model``; yield progress, return the result.

    Args:
        ct: the series (HU, ``(index, row, col)``); not modified.
        model: a LunaSeg segmentation model returning logits ``(N, 1, H, W)``; it is not
            modified (a private copy with batch norms folded runs).
        options: how to run (device, precision, batch size, threshold, candidates...).
        tuners: the caller's tuner cache; series of similar slice area then share the measured
            choice of threads, memory format and batch size. None: measure on this series.

    Yields an :class:`InferenceProgress` before the first batch and after each one; stopping
    the iteration (``close()``) ends the work at that point and restores the thread setting.
    Returns an :class:`InferenceResult` (probability float16, mask bool, candidates).
    """
    opts = options or InferenceOptions()
    start = time.perf_counter()
    dev = resolve_device(opts.device)
    prec = _resolve_precision(opts.precision, dev)
    context, multiple, context_mm = _model_facts(model)
    # The model sees the canonical frame (views, no copy); results land in the file's order.
    canonical, turn = ct.canonical()
    hu = canonical.hu
    n_z = hu.shape[0]
    step = step_slices_of(context_mm, canonical.geometry.spacing_irc_mm[0])
    box = _inplane_box(hu, opts.crop_to_body, multiple)
    rows, cols = slice(box[0], box[1]), slice(box[2], box[3])

    runner = copy.deepcopy(unwrap_model(model)).to(dev).eval()
    fold_batch_norms(runner)
    original_threads = torch.get_num_threads()
    tuner, engines, key = _prepare_tuner(opts, dev, prec, runner, box, tuners)
    measuring = not tuner.done
    autocast_dtype = _AUTOCAST_DTYPES.get(prec)

    prob_file = np.zeros(ct.shape_irc, dtype=np.float16)
    mask_file = np.zeros(ct.shape_irc, dtype=bool)
    prob, mask = turn.to_canonical(prob_file), turn.to_canonical(mask_file)  # views into them
    threshold = DEFAULT_THRESHOLD if opts.threshold is None else opts.threshold
    thr16 = np.float16(threshold)
    model_seconds = 0.0
    current_format: bool | None = None
    done = 0
    try:
        yield InferenceProgress(0, n_z, f"{ct.series_uid}: {n_z} slices")
        while done < n_z:
            n_threads, fmt, size = tuner.propose()
            if n_threads != torch.get_num_threads():
                torch.set_num_threads(n_threads)
            if fmt != current_format and not isinstance(fmt, str):
                runner, current_format = _in_format(runner, fmt), fmt
            n = min(size, n_z - done)
            batch = torch.from_numpy(
                context_stack(hu, np.arange(done, done + n), context, rows, cols, step)
            )
            t0 = time.perf_counter()
            try:
                probs = _segment(
                    batch, fmt, engines, runner, dev, n_threads, autocast_dtype, opts.mirror
                )
            except torch.cuda.OutOfMemoryError as exc:
                _halve_on_oom(exc, tuner, size, dev, ct.series_uid)
                continue
            seconds = time.perf_counter() - t0
            model_seconds += seconds
            tuner.report((n_threads, fmt, size), n, seconds)
            prob[done : done + n, rows, cols] = probs
            mask[done : done + n, rows, cols] = probs >= thr16
            done += n
            yield InferenceProgress(done, n_z, f"{ct.series_uid}: slice {done}/{n_z}")
    finally:
        torch.set_num_threads(original_threads)

    settings = _settings_chosen(tuner, dev, prec, box, measuring, key)
    found = group_candidates(prob, mask, canonical.geometry, ct.series_uid, opts.candidates, hu=hu)
    found = candidates_in_frame(found, ct.geometry)
    total = time.perf_counter() - start
    rate = n_z / model_seconds if model_seconds else math.nan
    log.info(
        "%s: %d slices in %.1f s (model %.1f s, %.1f slices/s; %s), %d candidates",
        *(ct.series_uid, n_z, total, model_seconds, rate, settings.describe(), len(found)),
    )
    return InferenceResult(
        prob=prob_file,
        mask=mask_file,
        candidates=found,
        seconds=total,
        threshold=float(threshold),
        settings=settings,
        model_seconds=model_seconds,
    )


def _in_format(runner: nn.Module, channels_last: bool) -> nn.Module:
    """``runner`` with its weights in the channels-last or the contiguous memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return runner.to(memory_format=fmt)  # type: ignore[call-overload,no-any-return]


def _halve_on_oom(
    exc: torch.cuda.OutOfMemoryError, tuner: Tuner, size: int, dev: torch.device, uid: str
) -> None:
    """After running out of memory at ``size`` slices per batch: cap the tuner at half, or
    :class:`ConfigError` when one slice did not fit."""
    if size == 1:
        raise ConfigError(
            f"Out of memory on {dev} even with one slice per batch ({uid}); "
            "run on the CPU (--device cpu)."
        ) from exc
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    log.warning("out of memory at batch %d on %s; retrying with %d", size, dev, size // 2)
    tuner.cap(size // 2)


def run_inference(
    ct: CtVolume,
    model: nn.Module,
    options: InferenceOptions | None = None,
    *,
    tuners: TunerCache | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    **overrides: Any,
) -> InferenceResult:
    """:func:`iter_inference` driven to its end.

    ``progress(slices_done, n_slices, message)`` is called after each batch; ``should_stop()``
    is polled between batches and, when True, raises :class:`CancelledError`. ``overrides`` set
    single :class:`InferenceOptions` fields (``device="cpu"``, ``batch_size=4``...).
    """
    opts = dataclasses.replace(options or InferenceOptions(), **overrides)
    return run_steps(
        iter_inference(ct, model, opts, tuners=tuners),
        progress,
        should_stop,
        f"Inference on {ct.series_uid}",
        "slices",
    )


def _segment(
    batch: torch.Tensor,
    fmt: bool | str,
    engines: Engines,
    runner: nn.Module,
    device: torch.device,
    threads: int,
    autocast_dtype: torch.dtype | None,
    mirror: bool,
) -> np.ndarray:
    """Probabilities float16 ``(N, H, W)`` of one batch ``(N, C, H, W)``: from the CPU runtime
    ``fmt`` names (backends.py), else from ``runner`` in the memory format ``fmt`` says; with
    ``mirror``, the mean of that and the pass over the batch mirrored left-right (mirrored back)."""

    def once(x: torch.Tensor) -> np.ndarray:
        if isinstance(fmt, str):
            return engines.run(fmt, x, threads)
        return _forward(runner, x, device, fmt, autocast_dtype)

    if not mirror:
        return once(batch)
    plain = once(batch).astype(np.float32)
    back = once(batch.flip(-1))[..., ::-1].astype(np.float32)
    return ((plain + back) * 0.5).astype(np.float16)


def _forward(
    runner: nn.Module,
    batch: torch.Tensor,
    device: torch.device,
    channels_last: bool,
    autocast_dtype: torch.dtype | None,
) -> np.ndarray:
    """Probabilities float16 ``(N, H, W)`` for one batch of context stacks ``(N, C, H, W)``."""
    x = batch.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(
            device_type=device.type,
            dtype=autocast_dtype or torch.float32,
            enabled=autocast_dtype is not None,
        ),
    ):
        logits = runner(x)
    return torch.sigmoid(logits[:, 0].float()).to(torch.float16).cpu().numpy()
