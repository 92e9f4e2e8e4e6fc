"""Whole-series inference and candidate grouping.

:func:`run_inference` runs a segmentation model over every slice of a CT series (each slice
with its context slices, see :mod:`src_train.context`) and returns a probability volume, a
thresholded mask and candidate nodules, all in the CT's geometry: arrays are ``(index, row,
col)`` = ``(z, y, x)``, world coordinates ``(x, y, z)`` mm.

Speed, on the CPU: the network runs under bfloat16 autocast with batch norms folded into the
convolutions; CPU threads (all or one), memory format (channels-last or not) and batch size are
chosen by measurement on the first batches of the series (the fastest per slice wins, not the
biggest), and the choice is remembered for the rest of the process. In-plane, the model only
runs on the box around the body (voxels denser than :data:`BODY_THRESHOLD_HU`) widened by more
than the network's receptive field, so voxels inside the box get the values a whole-slice pass
would give; voxels outside it (air far from anything) get probability 0. On CUDA: float16 (or
bfloat16) autocast, channels-last, larger batches, and an out-of-memory error halves the batch
and retries.

Candidates (:func:`group_candidates`): 3-D connected components of the mask, each with its
probability-weighted center in world mm, equivalent diameter, voxel count and a score (by
default the mean probability; components under 2 mm are dropped, see :class:`CandidateConfig`).

Whole runs (:func:`infer_to_folder`, what ``lunaseg infer`` calls): series of a LUNA16 folder
or one series in, probability / mask / error volumes and ``candidates.csv`` out, with voxel
metrics and nodule recall / FROC / CPM when annotations exist.

Memory: besides the CT itself, the probability volume (float16, 2 bytes/voxel), the mask
(1 byte/voxel) and, while grouping candidates, a uint16 label array over the mask's
bounding box; model inputs are made one batch at a time.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from src_train.atomic import write_text_atomic
from src_train.colors import ERROR_BACKGROUND, ERROR_FN, ERROR_FP, ERROR_TP
from src_train.context import DEFAULT_CONTEXT_SLICES, context_stack
from src_train.ct import (
    SERIES_SUFFIXES,
    CtVolume,
    Geometry,
    is_series_path,
    load_ct,
    save_volume,
    series_uid_from_path,
)
from src_train.errors import (
    CancelledError,
    ConfigError,
    GeometryError,
    OutputExistsError,
    SeriesNotFoundError,
    SeriesReadError,
)
from src_train.evaluate import SERIES_LIST_NAME, FrocResult, evaluate_froc
from src_train.evaluate import Candidate as FrocCandidate
from src_train.luna import ANNOTATIONS_FILE, LunaFolder, find_luna_root
from src_train.masks import build_masks
from src_train.model import ModelConfig, load_model, resolve_device, unwrap_model

log = logging.getLogger(__name__)

#: The demo checkpoint shipped in the package (default of ``lunaseg infer`` and the viewer).
DEMO_CHECKPOINT: Path = Path(__file__).resolve().parent / "assets" / "demo_unet.pt"

#: Probability at or above which a voxel is in the mask.
DEFAULT_THRESHOLD = 0.5

#: HU above which a voxel counts as body (for the in-plane crop); lungs lie inside the body.
BODY_THRESHOLD_HU = -500.0

#: Pixels kept around the body box; must exceed the network's receptive-field radius
#: (about 26 px for the depth-3 U-Net), so cropping does not change any value inside the box.
BODY_MARGIN_PX = 32

#: Batch sizes the CPU tuner may try, ascending; it stops at the first that is not faster.
CPU_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8)

#: Batch sizes the CUDA tuner may try, ascending.
CUDA_BATCH_SIZES: tuple[int, ...] = (8, 16, 32, 64)

#: A larger batch must be at least this much faster per slice to be preferred.
_TUNE_MIN_GAIN = 0.03

#: Slices per chunk when scanning the volume for the body box (bounds temporary memory).
_SCAN_CHUNK_SLICES = 32

#: How a candidate's probability is computed from its voxels (:class:`CandidateConfig`).
CANDIDATE_SCORES = ("max", "mean")

#: Default score: the mean ranks better than the max, which many components saturate at 1
#: (measured on a held-out synthetic set, see docs/demo_checkpoint.md).
DEFAULT_SCORE = "mean"

#: Components of a smaller equivalent diameter (mm) are dropped by default: LUNA16 nodules are
#: at least 3 mm, and specks below 2 mm were a fifth of the demo model's candidates.
DEFAULT_MIN_DIAMETER_MM = 2.0

#: Connectivity of candidate components: 26 (faces, edges, corners) or 6 (faces only).
DEFAULT_CONNECTIVITY = 26

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CandidateNodule:
    """One connected component of the predicted mask.

    Attributes:
        series_uid: the series it was found in.
        center_xyz_mm: probability-weighted center of mass, world ``(x, y, z)`` mm.
        center_irc: the same center in fractional array coordinates ``(index, row, col)``.
        diameter_mm: diameter of the sphere with the component's volume, mm.
        voxel_count: voxels in the component.
        probability: the candidate's score, as :attr:`CandidateConfig.score` chose it (the
            highest or the mean voxel probability inside it).
        mean_probability: mean voxel probability inside it.
        max_probability: highest voxel probability inside it.
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    center_irc: tuple[float, float, float]
    diameter_mm: float
    voxel_count: int
    probability: float
    mean_probability: float = math.nan
    max_probability: float = math.nan


@dataclass(frozen=True)
class InferenceSettings:
    """How a run executed (chosen by measurement unless fixed by the caller).

    Attributes:
        device: ``"cpu"``, ``"cuda:0"``, ...
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast dtype).
        threads: CPU threads the model ran with.
        channels_last: the memory format of inputs and weights.
        batch_size: slices per forward pass.
        crop_irc: in-plane box the model ran on, ``(row0, row1, col0, col1)`` (exclusive ends).
        tuned: whether this run measured configurations (threads, format, batch size).
    """

    device: str
    precision: str
    threads: int
    channels_last: bool
    batch_size: int
    crop_irc: tuple[int, int, int, int]
    tuned: bool = False

    def describe(self) -> str:
        """One line for logs and the CLI."""
        fmt = "channels-last" if self.channels_last else "NCHW"
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
    """

    prob: np.ndarray
    mask: np.ndarray
    candidates: list[CandidateNodule]
    seconds: float
    threshold: float = DEFAULT_THRESHOLD
    settings: InferenceSettings | None = None
    model_seconds: float = 0.0

    @property
    def slices_per_second(self) -> float:
        """Slices processed per second of model time."""
        return self.prob.shape[0] / self.model_seconds if self.model_seconds > 0 else math.nan


@dataclass(frozen=True)
class CandidateConfig:
    """Post-processing of the mask into candidates.

    Attributes:
        min_voxels: components with fewer voxels are dropped.
        min_diameter_mm: components whose equivalent diameter is smaller are dropped.
        min_probability: components whose highest probability is lower are dropped.
        connectivity: 26 or 6 (3-D neighbourhood of a component).
        voxel_threshold: voxels below this probability are left out before grouping (a
            stricter cut than the mask's splits touching blobs); None keeps the mask as is.
        score: the candidate's ``probability``: ``"max"`` or ``"mean"`` voxel probability
            (the mean ranks better when many components reach probability 1).
        lung_margin_mm: when the CT is given, mask voxels farther than this (in-plane, mm)
            from the lung field (see :func:`lung_field`) are left out before grouping; None
            keeps every voxel. Nodules sit in the lungs or on their wall; what the model marks
            in the mediastinum or the body wall would otherwise merge into huge components.
    """

    min_voxels: int = 1
    min_diameter_mm: float = DEFAULT_MIN_DIAMETER_MM
    min_probability: float = 0.0
    connectivity: int = DEFAULT_CONNECTIVITY
    voxel_threshold: float | None = None
    score: str = DEFAULT_SCORE
    lung_margin_mm: float | None = None

    def __post_init__(self) -> None:
        if self.connectivity not in (6, 26):
            raise ConfigError(f"connectivity must be 6 or 26, got {self.connectivity}.")
        if self.min_voxels < 1:
            raise ConfigError(f"min_voxels must be >= 1, got {self.min_voxels}.")
        if self.score not in CANDIDATE_SCORES:
            raise ConfigError(
                f"Unknown candidate score {self.score!r}; choose {' or '.join(CANDIDATE_SCORES)}."
            )


# ---------------------------------------------------------------------------------------------
# Error volume and voxel metrics
# ---------------------------------------------------------------------------------------------
_ERROR_LUT = np.array([ERROR_BACKGROUND, ERROR_FP, ERROR_FN, ERROR_TP], dtype=np.uint8)


def _check_same_shape(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape:
        raise GeometryError(
            f"Prediction {pred.shape} and ground truth {truth.shape} differ in shape; "
            "they must come from the same series."
        )


def error_volume(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Label volume of prediction errors, same shape (IRC) as the inputs.

    Values: :data:`~src_train.colors.ERROR_TP` (1) where both are set, ``ERROR_FN`` (2) where
    only ``truth`` is, ``ERROR_FP`` (3) where only ``pred`` is, 0 elsewhere. uint8.
    """
    _check_same_shape(pred, truth)
    code = np.left_shift(np.asarray(truth, dtype=bool).view(np.uint8), 1)
    code |= np.asarray(pred, dtype=bool).view(np.uint8)
    return _ERROR_LUT[code]


def voxel_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Voxel-level counts and scores of ``pred`` against ``truth`` (bool volumes, same shape).

    Returns ``tp``, ``fn``, ``fp`` (voxel counts) and ``precision``, ``recall``, ``dice``
    (NaN where the denominator is zero, e.g. recall without truth voxels).
    """
    _check_same_shape(pred, truth)
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    tp = int(np.count_nonzero(p & t))
    n_pred = int(np.count_nonzero(p))
    n_true = int(np.count_nonzero(t))
    fp, fn = n_pred - tp, n_true - tp

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    return {
        "tp": float(tp),
        "fn": float(fn),
        "fp": float(fp),
        "precision": ratio(tp, n_pred),
        "recall": ratio(tp, n_true),
        "dice": ratio(2 * tp, n_pred + n_true),
    }


# ---------------------------------------------------------------------------------------------
# Candidate grouping
# ---------------------------------------------------------------------------------------------
def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box (IRC slices) holding every set voxel of ``mask``; None when it is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if not len(hits):
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


#: HU below which a voxel is air or lung parenchyma, for :func:`lung_field`.
LUNG_AIR_HU = -400.0

#: In-plane subsampling of :func:`lung_field` (the field is smooth; 2 makes it 4x cheaper).
_LUNG_FIELD_STEP = 2


def lung_field(
    hu: np.ndarray, spacing_irc_mm: Sequence[float], margin_mm: float = 0.0
) -> np.ndarray:
    """Bool mask ``(index, row, col)`` of the lung field: the lungs with what lies inside them.

    Per slice: air (below :data:`LUNG_AIR_HU`) not connected to the slice's border (the air
    around the body), with holes filled (nodules, vessels), widened in-plane by ``margin_mm``
    (juxtapleural nodules). Computed on every second row and column and expanded back.
    """
    step = _LUNG_FIELD_STEP
    small = hu[:, ::step, ::step] < LUNG_AIR_HU
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(small, structure=in_plane)
    border = np.unique(
        np.concatenate(
            [
                labels[:, 0].ravel(),
                labels[:, -1].ravel(),
                labels[:, :, 0].ravel(),
                labels[:, :, -1].ravel(),
            ]
        )
    )
    field = small & ~np.isin(labels, border[border > 0])
    del labels
    field = ndimage.binary_fill_holes(field, structure=in_plane)
    pixel_mm = step * min(spacing_irc_mm[1], spacing_irc_mm[2])
    radius = math.ceil(margin_mm / pixel_mm) if margin_mm > 0 else 0
    if radius:
        disk = np.zeros((3, 2 * radius + 1, 2 * radius + 1), dtype=bool)
        yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
        disk[1] = yy**2 + xx**2 <= radius**2
        field = ndimage.binary_dilation(field, structure=disk)
    full = np.repeat(np.repeat(field, step, axis=1), step, axis=2)
    return full[:, : hu.shape[1], : hu.shape[2]]


def group_candidates(
    prob: np.ndarray,
    mask: np.ndarray,
    geometry: Geometry,
    series_uid: str,
    config: CandidateConfig | None = None,
    *,
    hu: np.ndarray | None = None,
) -> list[CandidateNodule]:
    """Group mask voxels into candidate nodules (3-D connected components).

    Args:
        prob: voxel probabilities ``(index, row, col)`` (any float dtype); the center is the
            probability-weighted center of mass, the score the highest probability.
        mask: bool ``(index, row, col)``, same shape.
        geometry: the series' geometry (converts centers to world mm with its direction).
        series_uid: copied into every candidate.
        config: filters, connectivity and the lung-field margin.
        hu: the CT in HU, same shape; needed for ``config.lung_margin_mm``.

    Returns:
        Candidates, most probable first (ties: larger first).
    """
    cfg = config or CandidateConfig()
    _check_same_shape(prob, mask)
    if tuple(mask.shape) != geometry.shape_irc:
        raise GeometryError(
            f"Mask {mask.shape} does not match series {series_uid!r} {geometry.shape_irc}."
        )
    box = _bounding_box(mask)
    if box is None:
        return []
    sub_mask = np.array(mask[box], dtype=bool)  # a copy: the caller's mask stays as is
    if cfg.voxel_threshold is not None:
        sub_mask &= prob[box] >= cfg.voxel_threshold
    if hu is not None and cfg.lung_margin_mm is not None:
        _check_same_shape(hu, mask)
        # The field needs whole slices (air around the body touches their border).
        field = lung_field(hu[box[0]], geometry.spacing_irc_mm, cfg.lung_margin_mm)
        sub_mask &= field[:, box[1], box[2]]
        del field
    structure = ndimage.generate_binary_structure(3, 3 if cfg.connectivity == 26 else 1)
    try:  # 2 bytes per voxel while there are fewer than 65,536 components, else 4
        labels, n = ndimage.label(sub_mask, structure=structure, output=np.uint16)
    except RuntimeError:
        labels, n = ndimage.label(sub_mask, structure=structure)
    if n == 0:
        return []
    sub_prob = prob[box]
    # Per-component sums, accumulated slab by slab so temporaries stay small.
    count = np.zeros(n + 1, dtype=np.int64)
    weight = np.zeros(n + 1)
    moments = np.zeros((3, n + 1))
    peak = np.zeros(n + 1)
    for z0 in range(0, labels.shape[0], _SCAN_CHUNK_SLICES):
        lab_slab = labels[z0 : z0 + _SCAN_CHUNK_SLICES]
        zz, yy, xx = np.nonzero(lab_slab)
        lab = lab_slab[zz, yy, xx]
        w = sub_prob[z0 : z0 + _SCAN_CHUNK_SLICES][zz, yy, xx].astype(np.float64)
        # A component of zero probability (a mask not made from prob) is weighted uniformly.
        w_center = w + 1e-12
        count += np.bincount(lab, minlength=n + 1)
        weight += np.bincount(lab, w_center, minlength=n + 1)
        for axis, coord in enumerate((zz + z0, yy, xx)):
            moments[axis] += np.bincount(lab, w_center * coord, minlength=n + 1)
        np.maximum.at(peak, lab, w)
    count, weight, moments, peak = count[1:], weight[1:], moments[:, 1:], peak[1:]
    offset = np.array([s.start for s in box], dtype=np.float64)
    center_irc = (moments / weight).T + offset
    voxel_mm3 = geometry.voxel_volume_mm3
    diameter = np.cbrt(6.0 * count * voxel_mm3 / math.pi)
    mean_prob = (weight - 1e-12 * count) / count
    keep = (
        (count >= cfg.min_voxels)
        & (diameter >= cfg.min_diameter_mm)
        & (peak >= cfg.min_probability)
    )
    idx = np.flatnonzero(keep)
    score = peak if cfg.score == "max" else mean_prob
    idx = idx[np.lexsort((-count[idx], -score[idx]))]
    center_xyz = geometry.irc_to_xyz(center_irc[idx]).reshape(-1, 3)
    return [
        CandidateNodule(
            series_uid=series_uid,
            center_xyz_mm=(float(xyz[0]), float(xyz[1]), float(xyz[2])),
            center_irc=(float(c[0]), float(c[1]), float(c[2])),
            diameter_mm=float(diameter[i]),
            voxel_count=int(count[i]),
            probability=float(score[i]),
            mean_probability=float(mean_prob[i]),
            max_probability=float(peak[i]),
        )
        for i, xyz, c in zip(idx, center_xyz, center_irc[idx], strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# Model preparation and the tuner
# ---------------------------------------------------------------------------------------------
def _fold_batch_norms(model: nn.Module) -> int:
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


def _model_facts(model: nn.Module) -> tuple[int, int, int]:
    """``(context slices, in-plane size multiple, depth)`` of a LunaSeg model (defaults else)."""
    config = getattr(unwrap_model(model), "config", None)
    context = int(getattr(config, "context_slices", DEFAULT_CONTEXT_SLICES))
    depth = int(getattr(config, "depth", 3))
    multiple = int(getattr(config, "size_multiple", 2 ** max(depth - 1, 0)))
    return context, max(multiple, 1), depth


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}."
        )
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise ConfigError("fp16 autocast is for CUDA; use bf16 or fp32 on the CPU.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return "bf16"
        except (AttributeError, RuntimeError):
            pass
    return "fp32"


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


#: A tuned configuration: ``(cpu threads, channels_last, batch_size)``.
RunConfig = tuple[int, bool, int]


class _Tuner:
    """Chooses CPU threads, memory format and batch size by timing real batches of the series.

    A coordinate search over the three axes in that order: each option of an axis is tried with
    the best options found so far on the others; for batch sizes (ascending) the search stops
    at the first size that is not faster. Each configuration runs twice and the second run is
    timed (the first builds kernels); a candidate must be :data:`_TUNE_MIN_GAIN` faster per
    slice to win. Every batch it runs is real work, so tuning costs only the slower
    configurations' extra time. Threads matter on a shared machine: when other processes hold
    the cores, one thread can be several times faster than two that wait for each other.
    """

    def __init__(
        self, threads: Sequence[int], formats: Sequence[bool], batch_sizes: Sequence[int]
    ) -> None:
        self._axes: list[list[int] | list[bool]] = [list(threads), list(formats), list(batch_sizes)]
        self.best: RunConfig = (threads[0], formats[0], batch_sizes[0])
        self._seconds_per_slice: dict[RunConfig, float] = {}
        self._axis = 0
        self._option = 0
        self._runs = 0
        self._current = self.best
        self.done = False
        self._step()

    def _with(self, axis: int, value: int | bool) -> RunConfig:
        config: list[int | bool] = list(self.best)
        config[axis] = value
        return (int(config[0]), bool(config[1]), int(config[2]))

    def _step(self) -> None:
        """Move to the next configuration to measure; ``done`` when none is left."""
        while self._axis < len(self._axes):
            options = self._axes[self._axis]
            if self._option >= len(options):
                self._axis += 1
                self._option = 0
                continue
            config = self._with(self._axis, options[self._option])
            if config in self._seconds_per_slice:
                self._option += 1
                continue
            self._current = config
            self._runs = 0
            return
        self.done = True

    def propose(self) -> RunConfig:
        """Configuration for the next batch."""
        return self.best if self.done else self._current

    def cap(self, batch_size: int) -> None:
        """Stop tuning and use ``batch_size`` (after an out-of-memory error)."""
        threads, fmt, _ = self.propose()
        self.best = (threads, fmt, batch_size)
        self.done = True

    def report(self, config: RunConfig, n_slices: int, seconds: float) -> None:
        """Record one batch's time; advances the search after each timed run."""
        if self.done or config != self._current:
            return
        self._runs += 1
        if self._runs < 2:
            return
        per_slice = seconds / max(n_slices, 1)
        self._seconds_per_slice[config] = per_slice
        best = self._seconds_per_slice.get(self.best)
        if best is None or per_slice < best * (1 - _TUNE_MIN_GAIN):
            self.best = config
            self._option += 1
        elif self._axis == len(self._axes) - 1:
            self._option = len(self._axes[self._axis])  # larger batches: stop at the first loss
        else:
            self._option += 1
        self._step()

    def timings(self) -> dict[RunConfig, float]:
        """Seconds per slice measured so far, by configuration."""
        return dict(self._seconds_per_slice)


#: Tuned configuration per (device, precision, slice-area class, context, model type), for this
#: process.
#: A search that a series ended early goes on with the next series of the same class.
_TUNERS: dict[tuple[str, str, int, int, str], _Tuner] = {}


def _body_box(hu: np.ndarray, multiple: int, margin: int) -> tuple[int, int, int, int]:
    """In-plane box ``(row0, row1, col0, col1)`` around voxels denser than the body threshold.

    Widened by ``margin`` pixels, its start aligned to ``multiple`` (so pooling windows match a
    whole-slice pass), clipped to the slice. The whole slice when nothing is that dense.
    """
    n_z, n_rows, n_cols = hu.shape
    rows_hit = np.zeros(n_rows, dtype=bool)
    cols_hit = np.zeros(n_cols, dtype=bool)
    for z0 in range(0, n_z, _SCAN_CHUNK_SLICES):
        dense = hu[z0 : z0 + _SCAN_CHUNK_SLICES] > BODY_THRESHOLD_HU
        rows_hit |= dense.any(axis=(0, 2))
        cols_hit |= dense.any(axis=(0, 1))
    if not rows_hit.any():
        return (0, n_rows, 0, n_cols)
    r = np.flatnonzero(rows_hit)
    c = np.flatnonzero(cols_hit)
    r0 = max(int(r[0]) - margin, 0) // multiple * multiple
    c0 = max(int(c[0]) - margin, 0) // multiple * multiple
    r1 = min(int(r[-1]) + 1 + margin, n_rows)
    c1 = min(int(c[-1]) + 1 + margin, n_cols)
    return (r0, r1, c0, c1)


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------
def run_inference(
    ct: CtVolume,
    model: nn.Module,
    *,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    num_threads: int | None = None,
    crop_to_body: bool = True,
    candidates: CandidateConfig | None = None,
) -> InferenceResult:
    """Segment every slice of ``ct`` with ``model`` and group the mask into candidates.

    Args:
        ct: the series (HU, ``(index, row, col)``); not modified.
        model: a LunaSeg segmentation model returning logits ``(N, 1, H, W)``; it is not
            modified (a private copy with batch norms folded runs).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:N"``.
        batch_size: slices per forward pass; None = the fastest measured.
        threshold: probability at or above which a voxel is in the mask.
        progress: called after each batch as ``progress(slices_done, n_slices, message)``.
        should_stop: polled between batches; when it returns True the run raises
            :class:`CancelledError`.
        precision: ``"auto"`` (bf16 on a CPU that supports it, fp16/bf16 on CUDA), ``"fp32"``,
            ``"bf16"``, ``"fp16"`` (CUDA only).
        channels_last: memory format; None = the fastest measured.
        num_threads: CPU threads for the model; None = the fastest of the current setting and
            one (measured). The process's setting is restored afterwards.
        crop_to_body: run the model only on the in-plane box around the body (see module doc).
        candidates: post-processing options of :func:`group_candidates`.

    Returns:
        An :class:`InferenceResult` (probability float16, mask bool, candidates).
    """
    start = time.perf_counter()
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"The probability threshold must lie in (0, 1); got {threshold}.")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    dev = resolve_device(device)
    prec = _resolve_precision(precision, dev)
    context, multiple, _depth = _model_facts(model)
    hu = ct.hu
    n_z, n_rows, n_cols = hu.shape
    if crop_to_body:
        r0, r1, c0, c1 = _body_box(hu, multiple, BODY_MARGIN_PX)
    else:
        r0, r1, c0, c1 = 0, n_rows, 0, n_cols
    rows, cols = slice(r0, r1), slice(c0, c1)

    runner = copy.deepcopy(unwrap_model(model)).to(dev).eval()
    _fold_batch_norms(runner)
    original_threads = torch.get_num_threads()
    if num_threads is not None:
        threads = [num_threads]
    elif dev.type == "cpu" and original_threads > 1:
        threads = [original_threads, 1]
    else:
        threads = [original_threads]
    formats = [channels_last] if channels_last is not None else [True, False]
    if batch_size is not None:
        sizes = [batch_size]
    else:
        sizes = list(CUDA_BATCH_SIZES if dev.type == "cuda" else CPU_BATCH_SIZES)
    # Only a fully automatic choice is remembered; a caller's fixed options tune the others.
    automatic = batch_size is None and channels_last is None and num_threads is None
    # Slices of similar area (within a factor of 2) share a choice: series differ by a few rows.
    area_class = round(math.log2((r1 - r0) * (c1 - c0)))
    key = (str(dev), prec, area_class, context, type(runner).__name__)
    tuner = _TUNERS.get(key) if automatic else None
    if tuner is None:
        tuner = _Tuner(threads, formats, sizes)
        if automatic:
            _TUNERS[key] = tuner
    measuring = not tuner.done
    autocast_dtype = _AUTOCAST_DTYPES.get(prec)

    prob = np.zeros(hu.shape, dtype=np.float16)
    mask = np.zeros(hu.shape, dtype=bool)
    thr16 = np.float16(threshold)
    model_seconds = 0.0
    current_format: bool | None = None
    done = 0
    try:
        while done < n_z:
            if should_stop is not None and should_stop():
                raise CancelledError(f"Inference on {ct.series_uid} stopped after {done} slices.")
            n_threads, fmt, size = tuner.propose()
            if n_threads != torch.get_num_threads():
                torch.set_num_threads(n_threads)
            if fmt != current_format:
                runner = runner.to(  # type: ignore[call-overload]
                    memory_format=torch.channels_last if fmt else torch.contiguous_format
                )
                current_format = fmt
            n = min(size, n_z - done)
            batch = torch.from_numpy(
                context_stack(hu, np.arange(done, done + n), context, rows, cols)
            )
            t0 = time.perf_counter()
            try:
                probs = _forward(runner, batch, dev, fmt, autocast_dtype)
            except torch.cuda.OutOfMemoryError as exc:
                if size == 1:
                    raise ConfigError(
                        f"Out of memory on {dev} even with one slice per batch ({ct.series_uid}); "
                        "run on the CPU (--device cpu)."
                    ) from exc
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning(
                    "out of memory at batch %d on %s; retrying with %d", size, dev, size // 2
                )
                tuner.cap(size // 2)
                continue
            seconds = time.perf_counter() - t0
            model_seconds += seconds
            tuner.report((n_threads, fmt, size), n, seconds)
            prob[done : done + n, rows, cols] = probs
            mask[done : done + n, rows, cols] = probs >= thr16
            done += n
            if progress is not None:
                progress(done, n_z, f"{ct.series_uid}: slice {done}/{n_z}")

    finally:
        torch.set_num_threads(original_threads)

    final_threads, final_format, final_size = tuner.propose()
    if measuring and tuner.done:
        log.info(
            "tuned %s: %s (seconds/slice %s)",
            key,
            tuner.best,
            {k: round(v, 4) for k, v in tuner.timings().items()},
        )
    settings = InferenceSettings(
        device=str(dev),
        precision=prec,
        threads=final_threads,
        channels_last=bool(final_format),
        batch_size=int(final_size),
        crop_irc=(r0, r1, c0, c1),
        tuned=measuring,
    )
    found = group_candidates(prob, mask, ct.geometry, ct.series_uid, candidates, hu=hu)
    total = time.perf_counter() - start
    log.info(
        "%s: %d slices in %.1f s (model %.1f s, %.1f slices/s; %s), %d candidates",
        ct.series_uid,
        n_z,
        total,
        model_seconds,
        n_z / model_seconds if model_seconds else math.nan,
        settings.describe(),
        len(found),
    )
    return InferenceResult(
        prob=prob,
        mask=mask,
        candidates=found,
        seconds=total,
        threshold=float(threshold),
        settings=settings,
        model_seconds=model_seconds,
    )


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


def find_series(
    data: Path, series: Sequence[str] | None = None, limit: int | None = None
) -> tuple[LunaFolder | None, list[tuple[str, Path]]]:
    """The series to process in ``data``: a LUNA16-layout folder or one series.

    Returns the LUNA folder (None for a series outside one) and ``(uid, path)`` pairs, sorted.
    ``series`` picks UIDs (unknown ones raise :class:`SeriesNotFoundError`); ``limit`` keeps the
    first N. A series file inside ``ROOT/subsetN/`` gets its folder (for annotations).
    """
    if not data.exists():
        raise SeriesReadError(f"{data} does not exist; check the path.")
    wanted = list(series or [])
    if data.is_dir() and (any(data.glob("subset*")) or (data / ANNOTATIONS_FILE).is_file()):
        folder: LunaFolder | None = LunaFolder(data)
        assert folder is not None
        uids = folder.series_uids
        unknown = sorted(set(wanted) - set(uids))
        if unknown:
            raise SeriesNotFoundError(
                f"Series {', '.join(unknown[:3])} not found under {data}/subset*/; it holds "
                f"{len(uids)} series (e.g. {', '.join(uids[:2]) or 'none'}). Check the UID."
            )
        if wanted:
            uids = [u for u in uids if u in set(wanted)]
        pairs = [(u, folder.series_path(u)) for u in uids]
    elif is_series_path(data):
        uid = series_uid_from_path(data) if data.is_file() else data.name
        if wanted and wanted != [uid]:
            raise SeriesNotFoundError(
                f"{data} holds series {uid}, not {', '.join(wanted)}; drop --series or point "
                "at the folder that holds them."
            )
        root = find_luna_root(data)
        folder = LunaFolder(root) if root is not None else None
        pairs = [(uid, data)]
    else:
        raise SeriesReadError(
            f"{data} is neither a LUNA16 folder (subset*/, annotations.csv) nor a series "
            f"({', '.join(SERIES_SUFFIXES)} or a DICOM folder)."
        )
    if limit is not None:
        pairs = pairs[: max(limit, 0)]
    if not pairs:
        raise SeriesNotFoundError(f"No series to process in {data}.")
    return folder, pairs


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
#: Columns of the candidates CSV ``lunaseg infer`` writes (LUNA16 submission + extras).
CANDIDATE_COLUMNS: tuple[str, ...] = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "probability",
    "diameter_mm",
    "voxel_count",
    "mean_probability",
    "index",
    "row",
    "col",
)

#: Probability volumes are written as uint8: ``round(prob * PROB_FILE_SCALE)``.
PROB_FILE_SCALE = 255


def prob_to_uint8(prob: np.ndarray) -> np.ndarray:
    """Probabilities to uint8 ``round(p * 255)`` for files (SimpleITK cannot write float16)."""
    out = np.empty(prob.shape, dtype=np.uint8)
    for z0 in range(0, prob.shape[0], _SCAN_CHUNK_SLICES):
        part = prob[z0 : z0 + _SCAN_CHUNK_SLICES].astype(np.float32) * PROB_FILE_SCALE
        np.rint(part, out=part)
        out[z0 : z0 + _SCAN_CHUNK_SLICES] = part
    return out


def write_candidates_csv(
    path: str | os.PathLike[str],
    candidates: Sequence[CandidateNodule],
    *,
    overwrite: bool = False,
) -> Path:
    """Write candidates in LUNA16 submission format (+ extra columns), atomically."""
    lines = [",".join(CANDIDATE_COLUMNS)]
    for c in candidates:
        x, y, z = c.center_xyz_mm
        i, r, col = c.center_irc
        lines.append(
            f"{c.series_uid},{x:.3f},{y:.3f},{z:.3f},{c.probability:.6f},{c.diameter_mm:.2f},"
            f"{c.voxel_count},{c.mean_probability:.6f},{i:.2f},{r:.2f},{col:.2f}"
        )
    return write_text_atomic(path, "\n".join(lines) + "\n", overwrite=overwrite)


def write_series_list(
    path: str | os.PathLike[str], series_uids: Sequence[str], *, overwrite: bool = False
) -> Path:
    """Write one series UID per line (what ``lunaseg eval --series-list`` reads), atomically."""
    return write_text_atomic(path, "".join(f"{uid}\n" for uid in series_uids), overwrite=overwrite)


@dataclass
class SeriesOutputs:
    """Files ``lunaseg infer`` writes for one series in ``out_dir``."""

    prob: Path
    pred: Path
    error: Path
    extra: list[Path] = field(default_factory=list)

    @classmethod
    def for_series(cls, out_dir: Path, series_uid: str) -> SeriesOutputs:
        """``<uid>_prob.mhd``, ``<uid>_pred.mhd``, ``<uid>_error.mhd`` in ``out_dir``."""
        return cls(
            prob=out_dir / f"{series_uid}_prob.mhd",
            pred=out_dir / f"{series_uid}_pred.mhd",
            error=out_dir / f"{series_uid}_error.mhd",
        )

    def existing(self) -> list[Path]:
        """The ones already on disk (headers or their data files)."""
        paths = [self.prob, self.pred, self.error, *self.extra]
        found = []
        for p in paths:
            for candidate in (p, p.with_suffix(".raw"), p.with_suffix(".zraw")):
                if candidate.exists():
                    found.append(candidate)
        return found


# ---------------------------------------------------------------------------------------------
# A whole run: series in, files out
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferPlan:
    """What :func:`infer_to_folder` is about to do, known before the first series runs.

    Attributes:
        series: ``(uid, path)`` of each series to process, in order.
        outputs: the files of each series, aligned with ``series``.
        candidates_csv: the candidates of every series (LUNA16 submission + extra columns).
        series_list: the series processed, one UID per line (read by ``lunaseg eval``).
        checkpoint: the model checkpoint loaded.
        model_config: the loaded model's configuration.
        annotations_path: the annotations the results are compared with; None without truth.
    """

    series: list[tuple[str, Path]]
    outputs: list[SeriesOutputs]
    candidates_csv: Path
    series_list: Path
    checkpoint: Path
    model_config: ModelConfig
    annotations_path: Path | None


@dataclass(frozen=True)
class SeriesReport:
    """One processed series of :func:`infer_to_folder`.

    Attributes:
        series_uid: the series.
        n_slices: its slices (the CT's first array axis).
        seconds: wall time of :func:`run_inference` on it.
        slices_per_second: slices per second of model time.
        settings: how the model ran.
        n_candidates: candidates found in it.
        outputs: the files written for it (``outputs.error`` only when ``voxel_metrics`` is set).
        voxel_metrics: :func:`voxel_metrics` of the mask against the masks generated from the
            annotations; None without truth.
    """

    series_uid: str
    n_slices: int
    seconds: float
    slices_per_second: float
    settings: InferenceSettings | None
    n_candidates: int
    outputs: SeriesOutputs
    voxel_metrics: dict[str, float] | None = None

    def describe(self) -> str:
        """One line for logs and the CLI."""
        how = self.settings.describe() if self.settings else ""
        line = (
            f"{self.series_uid}: {self.n_slices} slices in {self.seconds:.1f} s "
            f"({self.slices_per_second:.1f} slices/s, {how}), "
            f"{self.n_candidates} candidates"
        )
        if self.voxel_metrics is not None:
            m = self.voxel_metrics
            line += (
                f"; voxels vs generated masks: precision {m['precision']:.3f}, "
                f"recall {m['recall']:.3f}, Dice {m['dice']:.3f}"
            )
        return line


@dataclass(frozen=True)
class InferRunSummary:
    """Outcome of :func:`infer_to_folder`.

    Attributes:
        plan: what was run (series, files, model, annotations).
        series: one report per series, in processing order.
        n_candidates: candidates written to ``plan.candidates_csv``, all series together.
        froc: nodule recall, FROC and CPM of those candidates against the annotated nodules
            (with a diameter) of the processed series; None without truth.
        seconds: wall time of the whole call.
    """

    plan: InferPlan
    series: list[SeriesReport]
    n_candidates: int
    froc: FrocResult | None
    seconds: float

    @property
    def candidates_csv(self) -> Path:
        """The candidates file written."""
        return self.plan.candidates_csv


def infer_to_folder(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    series: Sequence[str] | None = None,
    limit: int | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    precision: str = "auto",
    crop_to_body: bool = True,
    candidates: CandidateConfig | None = None,
    with_truth: bool = True,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    on_start: Callable[[InferPlan], None] | None = None,
    on_series: Callable[[SeriesReport], None] | None = None,
) -> InferRunSummary:
    """Run a model over series and write its outputs to a folder (what ``lunaseg infer`` does).

    For each series (``<uid>`` as :func:`find_series` names it) ``out_dir`` gets, in the CT's
    geometry: ``<uid>_prob.mhd`` (uint8 ``round(p * 255)``, see :func:`prob_to_uint8`),
    ``<uid>_pred.mhd`` (the mask, uint8 0/1) and, with truth, ``<uid>_error.mhd``
    (:func:`error_volume` against masks built from the annotations, see
    :func:`src_train.masks.build_masks`); volumes are compressed. ``candidates.csv`` (every
    series so far, rewritten after each) and, at the end, ``seriesuids.csv``.

    Every output is checked before anything is written or the model is loaded: one that
    exists raises :class:`OutputExistsError` unless ``overwrite``.

    Args:
        data: a LUNA16-layout folder or one series (file or DICOM folder).
        out_dir: the output folder (created; a file there raises :class:`OutputExistsError`).
        checkpoint: model checkpoint; None = :data:`DEMO_CHECKPOINT`.
        series: only these series UIDs; limit: only the first N series.
        device, batch_size, threshold, precision, crop_to_body, candidates: as
            :func:`run_inference` takes them.
        with_truth: compare with the annotations when ``data`` belongs to a LUNA16 folder that
            has them (error volumes, voxel metrics, nodule recall / FROC / CPM).
        overwrite: replace existing outputs.
        progress: passed to :func:`run_inference` for each series
            (``progress(slices_done, n_slices, message)``, restarting at each series).
        should_stop: passed to :func:`run_inference`; a stop raises :class:`CancelledError`
            and leaves the files of the series finished so far (``candidates.csv`` with their
            candidates; no ``seriesuids.csv``).
        on_start: called once the outputs are checked and the model is loaded, before the
            first series, with the :class:`InferPlan`.
        on_series: called after each series is written, with its :class:`SeriesReport`.

    Returns:
        An :class:`InferRunSummary`.
    """
    started = time.perf_counter()
    folder, pairs = find_series(Path(data), series, limit)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder.")
    has_truth = folder is not None and folder.annotations_path is not None
    truth = folder if with_truth and has_truth else None
    outputs = [SeriesOutputs.for_series(out, uid) for uid, _ in pairs]
    csv_path = out / "candidates.csv"
    list_path = out / SERIES_LIST_NAME
    if not overwrite:
        clashes = [p for o in outputs for p in o.existing()]
        clashes += [p for p in (csv_path, list_path) if p.exists()]
        if clashes:
            names = ", ".join(str(p) for p in clashes[:3])
            more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
            raise OutputExistsError(
                f"{names}{more} already exist; pick another --out or pass --overwrite."
            )
    ckpt = Path(checkpoint) if checkpoint is not None else DEMO_CHECKPOINT
    model, config = load_model(ckpt, device=device)
    plan = InferPlan(
        series=pairs,
        outputs=outputs,
        candidates_csv=csv_path,
        series_list=list_path,
        checkpoint=ckpt,
        model_config=config,
        annotations_path=truth.annotations_path if truth is not None else None,
    )
    if on_start is not None:
        on_start(plan)
    out.mkdir(parents=True, exist_ok=True)
    found: list[CandidateNodule] = []
    reports: list[SeriesReport] = []
    for (uid, path), files in zip(pairs, outputs, strict=True):
        ct = load_ct(path)
        if ct.series_uid != uid:  # a DICOM folder or renamed file: keep the name asked for
            ct.series_uid = uid
        result = run_inference(
            ct,
            model,
            device=device,
            batch_size=batch_size,
            threshold=threshold,
            progress=progress,
            should_stop=should_stop,
            precision=precision,
            crop_to_body=crop_to_body,
            candidates=candidates,
        )
        save_volume(
            prob_to_uint8(result.prob), ct.geometry, files.prob, compress=True, overwrite=overwrite
        )
        save_volume(
            result.mask.view(np.uint8), ct.geometry, files.pred, compress=True, overwrite=overwrite
        )
        metrics = None
        if truth is not None:
            truth_mask, _records = build_masks(ct, truth.nodules(uid), on_outside="skip")
            save_volume(
                error_volume(result.mask, truth_mask),
                ct.geometry,
                files.error,
                compress=True,
                overwrite=overwrite,
            )
            metrics = voxel_metrics(result.mask, truth_mask)
            del truth_mask
        report = SeriesReport(
            series_uid=uid,
            n_slices=ct.shape_irc[0],
            seconds=result.seconds,
            slices_per_second=result.slices_per_second,
            settings=result.settings,
            n_candidates=len(result.candidates),
            outputs=files,
            voxel_metrics=metrics,
        )
        reports.append(report)
        if on_series is not None:
            on_series(report)
        found.extend(result.candidates)
        write_candidates_csv(csv_path, found, overwrite=True)
        del ct, result
    uids = [uid for uid, _ in pairs]
    write_series_list(list_path, uids, overwrite=True)
    froc = None
    if truth is not None:
        nodules = [n for uid in uids for n in truth.nodules(uid) if n.diameter_mm]
        marks = [FrocCandidate(c.series_uid, c.center_xyz_mm, c.probability) for c in found]
        froc = evaluate_froc(nodules, marks, series_uids=uids)
    return InferRunSummary(
        plan=plan,
        series=reports,
        n_candidates=len(found),
        froc=froc,
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "CANDIDATE_COLUMNS",
    "DEFAULT_THRESHOLD",
    "DEMO_CHECKPOINT",
    "CandidateConfig",
    "CandidateNodule",
    "InferPlan",
    "InferRunSummary",
    "InferenceResult",
    "InferenceSettings",
    "SeriesOutputs",
    "SeriesReport",
    "error_volume",
    "find_series",
    "group_candidates",
    "infer_to_folder",
    "prob_to_uint8",
    "run_inference",
    "voxel_metrics",
    "write_candidates_csv",
    "write_series_list",
]
