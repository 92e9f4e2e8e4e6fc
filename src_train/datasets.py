"""Training samples read from the cache (see :mod:`src_train.cache`).

Samples are ``(image, label)``: image float32 ``(C, H, W)`` = the slice and its context
slices in HU, clamped (:mod:`src_train.context`); label bool ``(1, H, W)``. Arrays are in the
cache's (canonical) frame, ``(index, row, col)``.

Three kinds of crops (:class:`SampleSpec`), mixed per :class:`SampleConfig`:

* ``nodule``: a crop at a random offset inside a window centered on a true nodule, so positives
  are not drowned by background (the SPEC's sampling); some are shown as if the scan ended
  beside the nodule (``edge_fraction``), as nodules cut by the first or last slice are; some
  are taken on another slice of the nodule (``off_center_fraction``: any slice its mask covers
  through its centre), not only the centre slice the SPEC samples;
* ``body``: a crop centered on a random voxel of the body (lungs included) of a random training
  series, on a random slice: the background the model meets on whole series;
* ``hard``: a crop near one of the places where the model fired without a nodule during earlier
  epochs (the trainer keeps that pool, see :meth:`TrainingDataset.set_hard_negatives`).

Randomness depends only on ``(seed, epoch, index)`` and the pool given for the epoch, so a run
draws the same samples with any number of loader workers, and a resumed run draws what the
uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from src_train.anatomy import body_box
from src_train.cache import SeriesCache
from src_train.context import DEFAULT_CONTEXT_SLICES, HU_CLAMP, context_stack, step_slices_of
from src_train.ct import Geometry
from src_train.errors import ConfigError

#: Sample kinds (:attr:`SampleSpec.kind`).
NODULE, BODY, HARD = "nodule", "body", "hard"
SAMPLE_KINDS = (NODULE, BODY, HARD)

#: A body crop is centered on a voxel denser than this (body and lungs, not air or padding), HU.
BODY_CENTER_MIN_HU = -900
#: Tries to find such a voxel before a body crop keeps the last draw.
BODY_CENTER_TRIES = 8
#: Thickest reconstruction a slab crop imitates, mm (LUNA16's slices reach 2.5 mm).
SLAB_MAX_MM = 3.0
#: Extra word of the random stream that draws slab crops.
SLAB_STREAM = 0x51AB


@dataclass(frozen=True)
class SampleConfig:
    """Shapes and mix of training samples.

    Attributes:
        crop_size: training crop height = width, pixels.
        window_size: side of the window centered on a nodule inside which the crop is taken;
            hard negatives move by up to half of ``window_size - crop_size`` around their spot.
        context_slices: neighbouring slices on each side (channels = ``2 * context + 1``).
        negative_fraction: share of crops that are not drawn around a nodule (body or hard).
        hard_fraction: share of those negatives drawn from the hard-negative pool, once it
            holds entries.
        edge_fraction: share of nodule crops shown as if the scan ended next to the nodule
            (0 to ``context_slices - 1`` slices beyond it, on a random side; the context then
            repeats the last slice, as at a real first or last slice): nodules cut by the
            first or last slice are rare, yet must be found.
        context_mm: neighbours every this many mm, resampled between slices (see
            :mod:`src_train.context`); None takes the next slices themselves.
        off_center_fraction: share of nodule crops taken on a slice drawn uniformly from
            those the nodule's mask covers at its centre row and column (its centre slice
            included), rather than on the centre slice: a nodule is met on all its slices at
            inference, small ones on their rims too.
        slab_fraction: share of crops (nodule and negative alike) from scans with slices
            thinner than :data:`SLAB_MAX_MM` shown as a thicker reconstruction of the same
            scan: each context sample is the mean of the scan over a slab whose thickness is
            drawn between the scan's slice spacing and :data:`SLAB_MAX_MM` (resampled context
            only): a thick-slice scan's partial volume, met on every training scan's nodules.
    """

    crop_size: int = 64
    window_size: int = 96
    context_slices: int = DEFAULT_CONTEXT_SLICES
    negative_fraction: float = 0.0
    hard_fraction: float = 0.5
    edge_fraction: float = 0.0
    context_mm: float | None = None
    off_center_fraction: float = 0.0
    slab_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.window_size < self.crop_size:
            raise ConfigError(
                f"Need 1 <= crop size <= window size; got crop {self.crop_size}, window "
                f"{self.window_size}."
            )
        for name in (
            "negative_fraction",
            "hard_fraction",
            "edge_fraction",
            "off_center_fraction",
            "slab_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1]; got {value}.")
        if self.negative_fraction >= 1.0:
            raise ConfigError(
                "negative_fraction must be below 1: some crops must show a nodule; got "
                f"{self.negative_fraction}."
            )
        if self.slab_fraction > 0 and self.context_mm is None:
            raise ConfigError(
                "slab_fraction (--slab-fraction) needs a context in mm (--context-mm above "
                "0): thicker slabs are resampled along z, which the voxel context does not do."
            )


@dataclass(frozen=True)
class SampleSpec:
    """Where a training crop comes from (the cache's frame).

    Attributes:
        kind: :data:`NODULE`, :data:`BODY` or :data:`HARD`.
        series: index of the series in the dataset's ``uids``.
        index: the center slice.
        row0, col0: the crop's first row and column (it may reach past the slice, then it is
            padded).
        first, last: slices the context is limited to, as if the scan began / ended there
            (None: the scan's own ends).
        slab: extra thickness, in slices, each context sample is averaged over (0: the
            scan's own slices; see ``SampleConfig.slab_fraction``).
    """

    kind: str
    series: int
    index: int
    row0: int
    col0: int
    first: int | None = None
    last: int | None = None
    slab: float = 0.0


#: A hard-negative spot: ``(series, index, row0, col0)`` of a crop where the model fired.
HardNegative = tuple[int, int, int, int]


def _slab_stack(
    hu: np.ndarray,
    center: int,
    context: int,
    rows: slice,
    cols: slice,
    step_slices: float | None,
    slab: float,
) -> np.ndarray:
    """The model input of one crop: :func:`context_stack` at ``center``, or with ``slab`` > 0
    the mean of it over centres spread evenly across ``slab`` slices (at most half a slice
    apart), as a reconstruction that many slices thicker would show the scan."""
    if slab <= 0:
        return context_stack(hu, np.array([center]), context, rows, cols, step_slices)
    shifts = np.linspace(-slab / 2, slab / 2, int(np.ceil(2 * slab)) + 1)
    stacks = context_stack(hu, center + shifts, context, rows, cols, step_slices)
    return stacks.mean(axis=0, keepdims=True)


def _crop_start(center: int, size: int, sample: SampleConfig, offset: int) -> int:
    """First row/col of a crop at ``offset`` inside the window around ``center``, kept inside."""
    start = center - sample.window_size // 2 + offset
    return int(np.clip(start, 0, max(size - sample.crop_size, 0)))


def _pad_to(array: np.ndarray, size: int, value: float) -> np.ndarray:
    """Pad the last two axes at the end up to ``size`` (only for images smaller than a crop)."""
    pad_r = size - array.shape[-2]
    pad_c = size - array.shape[-1]
    if pad_r <= 0 and pad_c <= 0:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, max(pad_r, 0)), (0, max(pad_c, 0))]
    return np.pad(array, widths, constant_values=value)


def nodule_slice_extent(column: np.ndarray, z: int) -> tuple[int, int]:
    """First and last slice of the run of mask voxels through slice ``z`` of a mask column
    (the mask along the slice axis at a nodule's centre row and column); ``(z, z)`` when slice
    ``z`` is not in the mask, e.g. an empty mask."""
    column = np.asarray(column, dtype=bool)
    if not column[z]:
        return z, z
    gaps_before = np.flatnonzero(~column[:z])
    gaps_after = np.flatnonzero(~column[z + 1 :])
    first = int(gaps_before[-1]) + 1 if gaps_before.size else 0
    last = z + int(gaps_after[0]) if gaps_after.size else column.size - 1
    return first, last


class TrainingDataset(Dataset):
    """Training crops from the cache: around nodules, and negatives (see the module docstring).

    Item ``i`` of epoch ``e`` is drawn from ``(seed, e, i)``: a negative with probability
    ``negative_fraction`` (from the hard pool with probability ``hard_fraction`` when it has
    entries, else a body crop), else the next nodule of a per-epoch shuffled cycle over all
    nodules of the given series, cropped at a random offset inside a ``window_size`` window
    centered on it. Returns ``(image float32 (C, crop, crop) HU clamped, mask bool (1, crop,
    crop))``; :meth:`spec` says where it came from.
    """

    def __init__(
        self,
        cache: SeriesCache,
        uids: Sequence[str],
        epoch_samples: int,
        sample: SampleConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.cache = cache
        self.uids = list(uids)
        self.sample = sample or SampleConfig()
        self.epoch_samples = int(epoch_samples)
        self.seed = int(seed)
        self._spacings_mm: dict[int, float] = {}
        self.nodules: list[tuple[int, tuple[int, int, int]]] = [
            (k, center)
            for k, uid in enumerate(self.uids)
            for center in cache.meta(uid).nodule_centers_irc
        ]
        if not self.nodules:
            raise ConfigError(
                f"The {len(uids)} training series have no annotated nodules inside their "
                "volumes; check annotations.csv or the data folder."
            )
        if self.epoch_samples < 1:
            raise ConfigError(f"epoch_samples must be positive; got {epoch_samples}.")
        # In-plane body boxes, for body crops (read once, in the process that builds the set).
        self._body_boxes: list[tuple[int, int, int, int]] = (
            [body_box(cache.arrays(uid)[0], 1, 0) for uid in self.uids]
            if self.sample.negative_fraction > 0
            else []
        )
        # Slices each nodule's mask covers through its centre, for off-centre crops.
        self._extents: list[tuple[int, int]] = (
            [
                nodule_slice_extent(cache.arrays(self.uids[k])[1][:, r, c], z)
                for k, (z, r, c) in self.nodules
            ]
            if self.sample.off_center_fraction > 0
            else []
        )
        self._hard: list[HardNegative] = []
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the nodule cycle for ``epoch``."""
        self.epoch = int(epoch)
        rng = np.random.default_rng((self.seed, self.epoch))
        self._order = rng.permutation(len(self.nodules))

    def set_hard_negatives(self, spots: Sequence[HardNegative]) -> None:
        """The pool hard negatives are drawn from (set before an epoch's loader starts)."""
        self._hard = [tuple(int(v) for v in spot) for spot in spots]  # type: ignore[misc]

    @property
    def hard_negatives(self) -> list[HardNegative]:
        """The current pool."""
        return list(self._hard)

    def __len__(self) -> int:
        return self.epoch_samples

    def spec(self, index: int) -> SampleSpec:
        """Where item ``index`` of the current epoch comes from (deterministic)."""
        spec = self._place(index)
        if self.sample.slab_fraction <= 0:
            return spec
        # a generator of its own: the crops' places do not move with the slab option
        rng = np.random.default_rng((self.seed, self.epoch, int(index), SLAB_STREAM))
        spacing = self._slice_spacing_mm(spec.series)
        if rng.random() >= self.sample.slab_fraction or spacing >= SLAB_MAX_MM:
            return spec
        thickness = rng.uniform(spacing, SLAB_MAX_MM)
        return replace(spec, slab=float((thickness - spacing) / spacing))

    def _place(self, index: int) -> SampleSpec:
        """The crop's series, slice and corner for item ``index`` (deterministic)."""
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        s = self.sample
        span = s.window_size - s.crop_size + 1
        offset_r, offset_c = int(rng.integers(span)), int(rng.integers(span))
        if s.negative_fraction > 0 and rng.random() < s.negative_fraction:
            if self._hard and rng.random() < s.hard_fraction:
                return self._hard_spec(rng, offset_r - span // 2, offset_c - span // 2)
            return self._body_spec(rng)
        which = int(self._order[index % len(self.nodules)])
        series, (z, r, c) = self.nodules[which]
        shape = self.cache.meta(self.uids[series]).shape_irc
        if s.off_center_fraction > 0 and rng.random() < s.off_center_fraction:
            low, high = self._extents[which]
            z = int(rng.integers(low, high + 1))
        first = last = None
        if s.edge_fraction > 0 and rng.random() < s.edge_fraction:
            beyond = int(rng.integers(max(s.context_slices, 1)))
            if rng.random() < 0.5:
                last = min(z + beyond, shape[0] - 1)
            else:
                first = max(z - beyond, 0)
        return SampleSpec(
            NODULE,
            series,
            z,
            _crop_start(r, shape[1], s, offset_r),
            _crop_start(c, shape[2], s, offset_c),
            first,
            last,
        )

    def _body_spec(self, rng: np.random.Generator) -> SampleSpec:
        series = int(rng.integers(len(self.uids)))
        hu, _ = self.cache.arrays(self.uids[series])
        r0, r1, c0, c1 = self._body_boxes[series]
        z = int(rng.integers(hu.shape[0]))
        r, c = r0, c0
        for _ in range(BODY_CENTER_TRIES):
            r, c = int(rng.integers(r0, r1)), int(rng.integers(c0, c1))
            if hu[z, r, c] > BODY_CENTER_MIN_HU:
                break
        half = self.sample.crop_size // 2
        return SampleSpec(
            BODY,
            series,
            z,
            int(np.clip(r - half, 0, max(hu.shape[1] - self.sample.crop_size, 0))),
            int(np.clip(c - half, 0, max(hu.shape[2] - self.sample.crop_size, 0))),
        )

    def _hard_spec(self, rng: np.random.Generator, shift_r: int, shift_c: int) -> SampleSpec:
        series, z, r0, c0 = self._hard[int(rng.integers(len(self._hard)))]
        shape = self.cache.meta(self.uids[series]).shape_irc
        crop = self.sample.crop_size
        return SampleSpec(
            HARD,
            series,
            z,
            int(np.clip(r0 + shift_r, 0, max(shape[1] - crop, 0))),
            int(np.clip(c0 + shift_c, 0, max(shape[2] - crop, 0))),
        )

    def crop(self, spec: SampleSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and label of ``spec`` (padded to the crop size at small slices)."""
        hu, mask = self.cache.arrays(self.uids[spec.series])
        size = self.sample.crop_size
        rows, cols = slice(spec.row0, spec.row0 + size), slice(spec.col0, spec.col0 + size)
        # a scan cut at first/last: the context repeats its end slice, as at a real scan end
        lo = 0 if spec.first is None else spec.first
        hi = hu.shape[0] if spec.last is None else spec.last + 1
        step = self._step_slices(spec.series)
        image = _slab_stack(
            hu[lo:hi], spec.index - lo, self.sample.context_slices, rows, cols, step, spec.slab
        )
        label = np.asarray(mask[spec.index, rows, cols], dtype=bool)[None]
        image = _pad_to(image[0], size, HU_CLAMP[0])
        label = _pad_to(label, size, False)
        return torch.from_numpy(image), torch.from_numpy(label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.crop(self.spec(index))

    def _slice_spacing_mm(self, series: int) -> float:
        """Slice spacing of ``series``, read from its geometry once per series, not per crop."""
        if series not in self._spacings_mm:
            geometry = Geometry.from_dict(self.cache.meta(self.uids[series]).geometry)
            self._spacings_mm[series] = float(geometry.spacing_irc_mm[0])
        return self._spacings_mm[series]

    def _step_slices(self, series: int) -> float | None:
        """Slices between context samples of ``series`` (None: every slice)."""
        if self.sample.context_mm is None:
            return None
        return step_slices_of(self.sample.context_mm, self._slice_spacing_mm(series))
