"""What a synthetic data set is drawn from: the ranges of :class:`SynthConfig`, and the UID and
seed of each scan (both follow from the data set's seed and the scan's index; a one-family data
set's UIDs also from its family)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from src_train.errors import ConfigError
from src_train.synth.protocols import MIXED, ScanProtocol, check_family, draw_protocol

#: Root of LUNA16's (LIDC-IDRI's) series UIDs; synthetic UIDs append 30 digits.
UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."

#: Largest nodule label the uint8 truth volume can hold.
MAX_TRUTH_LABEL = int(np.iinfo(np.uint8).max)


@dataclass(frozen=True)
class SynthConfig:
    """Ranges the synthetic scans are drawn from (inclusive ``(low, high)``; units in names).

    The defaults look like LUNA16 scans; tests shrink them (see :meth:`tiny`).
    Anatomy scales with the field of view, so a tiny scan is a coarse whole chest, while
    nodule sizes stay in millimetres.
    """

    inplane_px_range: tuple[int, int] = (448, 512)
    #: In-plane sizes are multiples of this (a U-Net of depth 3 needs multiples of 8).
    inplane_px_multiple: int = 16
    slices_range: tuple[int, int] = (100, 420)
    #: Length of chest covered, mm; the slice count is this over the slice spacing, clipped.
    chest_length_mm_range: tuple[float, float] = (220.0, 320.0)
    spacing_inplane_mm_range: tuple[float, float] = (0.6, 0.9)
    slice_spacing_mm_range: tuple[float, float] = (1.0, 2.5)
    #: Body width as a fraction of the field of view's diameter.
    body_fov_fraction_range: tuple[float, float] = (0.78, 0.9)
    nodules_per_scan_range: tuple[int, int] = (1, 4)
    #: Target diameters are LUNA16 diameters within this range (mm).
    diameter_mm_range: tuple[float, float] = (3.0, 32.0)
    false_candidates_per_scan_range: tuple[int, int] = (20, 60)
    lung_hu: float = -850.0
    #: Standard deviation of the CT noise, HU.
    noise_hu_range: tuple[float, float] = (12.0, 25.0)
    solid_hu_range: tuple[float, float] = (-30.0, 70.0)
    ground_glass_hu_range: tuple[float, float] = (-650.0, -450.0)
    vessel_hu_range: tuple[float, float] = (20.0, 70.0)
    #: Fraction of solid / part-solid nodules with a vessel running into them.
    juxtavascular_fraction: float = 0.4
    #: Branching levels of each vessel tree at most (0 = trunks only); branches also stop
    #: when they get thinner than about a third of a pixel.
    vessel_generations: int = 9
    vessel_trunks_per_lung: int = 8
    outside_fov_hu_choices: tuple[int, ...] = (-2000, -3024)
    #: Flip the world direction of the array's x, y, z axes (direction entries -1).
    flip_xyz: tuple[bool, bool, bool] = (False, False, False)
    #: Store the CT as compressed ``.zraw`` (the truth volumes are always compressed).
    compress_ct: bool = False
    #: Protocol family each scan's spacing, kernel, noise, HU offset, padding and coverage are
    #: drawn from (:data:`~src_train.synth.protocols.FAMILY_NAMES`); None: this config's own
    #: spacing, noise and padding ranges with a smooth kernel, no offset and full coverage.
    protocol: str | None = MIXED

    def __post_init__(self) -> None:
        for name in (
            "inplane_px_range",
            "slices_range",
            "chest_length_mm_range",
            "spacing_inplane_mm_range",
            "slice_spacing_mm_range",
            "body_fov_fraction_range",
            "nodules_per_scan_range",
            "diameter_mm_range",
            "false_candidates_per_scan_range",
            "noise_hu_range",
            "solid_hu_range",
            "ground_glass_hu_range",
            "vessel_hu_range",
        ):
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"SynthConfig.{name} = {(low, high)}: low must not exceed high.")
        if self.inplane_px_range[0] < 32 or self.slices_range[0] < 4:
            raise ConfigError(
                f"SynthConfig: scans need at least 32 px in-plane and 4 slices; got "
                f"{self.inplane_px_range} px and {self.slices_range} slices."
            )
        if min(self.spacing_inplane_mm_range[0], self.slice_spacing_mm_range[0]) <= 0:
            raise ConfigError("SynthConfig: voxel spacings must be positive (mm).")
        if self.diameter_mm_range[0] <= 0 or self.nodules_per_scan_range[0] < 0:
            raise ConfigError("SynthConfig: diameters must be positive, nodule counts >= 0.")
        if self.nodules_per_scan_range[1] > MAX_TRUTH_LABEL:
            raise ConfigError(
                f"SynthConfig.nodules_per_scan_range = {self.nodules_per_scan_range}: the uint8 "
                f"truth volume holds at most {MAX_TRUTH_LABEL} nodules per scan."
            )
        if not 0 < self.body_fov_fraction_range[1] <= 0.98:
            raise ConfigError("SynthConfig.body_fov_fraction_range must lie within (0, 0.98].")
        if self.protocol is not None:
            check_family(self.protocol)
        if not self.outside_fov_hu_choices or self.inplane_px_multiple < 1:
            raise ConfigError("SynthConfig: give outside_fov_hu_choices and a px multiple >= 1.")

    @classmethod
    def tiny(cls, **overrides: object) -> SynthConfig:
        """A small, fast configuration for tests and demos (~112 px, ~40 slices, coarse).

        Keyword arguments override single fields.
        """
        base: dict[str, object] = {
            "inplane_px_range": (96, 128),
            "slices_range": (32, 48),
            "chest_length_mm_range": (90.0, 110.0),
            "spacing_inplane_mm_range": (1.5, 1.9),
            "slice_spacing_mm_range": (2.0, 2.5),
            "nodules_per_scan_range": (2, 4),
            "diameter_mm_range": (6.0, 20.0),
            "false_candidates_per_scan_range": (5, 10),
            "vessel_generations": 4,
            "vessel_trunks_per_lung": 4,
            "protocol": None,
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


def synthetic_series_uid(seed: int, index: int, family: str | None = MIXED) -> str:
    """A LUNA16-looking series UID for scan ``index`` of the data set made with ``seed``.

    A data set of one named protocol ``family`` gets UIDs of its own, so that folders of
    different families made with the same seed never share a series UID (and can be merged);
    the mixed default keeps the UIDs it always had."""
    words = [int(seed) & 0xFFFFFFFF, int(index), 0x5EED]
    if family not in (None, MIXED):
        words.append(zlib.crc32(str(family).encode("utf-8")))
    rng = np.random.default_rng(words)
    digits = rng.integers(0, 10, size=29)
    return UID_PREFIX + str(int(rng.integers(1, 10))) + "".join(map(str, digits))


def scan_seed(seed: int, index: int) -> int:
    """The random seed of scan ``index`` of the data set made with ``seed`` (what
    :func:`~src_train.synth.write_dataset` passes to :func:`~src_train.synth.generate_scan`)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1)[0])


def scan_protocol(rng: np.random.Generator, cfg: SynthConfig) -> ScanProtocol:
    """One scan's protocol: drawn from the family ``cfg.protocol``, or (None) from ``cfg``'s own
    spacing, noise and padding ranges with a smooth kernel, no HU offset and full coverage."""
    if cfg.protocol is not None:
        return draw_protocol(rng, cfg.protocol)
    return ScanProtocol(
        family="custom",
        slice_spacing_mm=round(float(rng.uniform(*cfg.slice_spacing_mm_range)), 4),
        inplane_spacing_mm=round(float(rng.uniform(*cfg.spacing_inplane_mm_range)), 6),
        kernel="smooth",
        noise_hu=float(rng.uniform(*cfg.noise_hu_range)),
        hu_offset=0.0,
        pad_hu=int(rng.choice(cfg.outside_fov_hu_choices)),
        coverage="full",
    )
