"""Scanner protocols of the synthetic scans, as named families.

A family is a set of ranges (slice and pixel spacing, reconstruction kernel, noise, HU
calibration offset, outside-field-of-view padding, how often a scan covers only part of the
lungs). Each scan draws one concrete :class:`ScanProtocol` from its family; the ``mixed`` family
first draws a family per scan. A data set can then be generated per family
(``lunaseg synth --protocol thick``) to test a detector on protocols it was not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src_train.errors import ConfigError
from src_train.synth.primitives import uniform

#: Reconstruction kernels: ``smooth`` blurs the image and correlates the noise in-plane;
#: ``sharp`` enhances edges and leaves the noise fine-grained.
KERNELS = ("smooth", "sharp")

#: The family that draws one of the others for each scan (the default).
MIXED = "mixed"


class UnknownProtocolError(ConfigError):
    """A protocol family name that does not exist."""


@dataclass(frozen=True)
class ProtocolFamily:
    """Ranges a family's scans are drawn from (inclusive ``(low, high)``; units in names)."""

    name: str
    description: str
    slice_spacing_mm: tuple[float, float]
    inplane_spacing_mm: tuple[float, float]
    kernels: tuple[str, ...]
    noise_hu: tuple[float, float]
    #: Added to every stored HU value (a scanner's calibration error).
    hu_offset: tuple[float, float]
    outside_fov_hu: tuple[int, ...]
    #: Probability that a scan starts or ends inside the lungs.
    partial_coverage: float


@dataclass(frozen=True)
class ScanProtocol:
    """The protocol of one scan (drawn from a family or from a config's own ranges)."""

    family: str
    slice_spacing_mm: float
    inplane_spacing_mm: float
    kernel: str
    noise_hu: float
    hu_offset: float
    pad_hu: int
    #: ``"full"``, ``"starts-inside"`` (the first slice cuts the lungs high) or
    #: ``"ends-inside"`` (the last slice cuts them low).
    coverage: str


FAMILIES: dict[str, ProtocolFamily] = {
    f.name: f
    for f in (
        ProtocolFamily(
            "standard",
            "routine chest CT: 1-1.5 mm slices, 0.6-0.8 mm pixels, smooth kernel",
            (1.0, 1.5),
            (0.6, 0.8),
            ("smooth",),
            (12.0, 25.0),
            (0.0, 0.0),
            (-2000, -3024),
            0.0,
        ),
        ProtocolFamily(
            "thin-sharp",
            "thin slices (0.6-1 mm), small pixels (0.5-0.75 mm), sharp lung kernel, noisier",
            (0.6, 1.0),
            (0.5, 0.75),
            ("sharp",),
            (30.0, 55.0),
            (-10.0, 10.0),
            (-2000, -3024, -1024),
            0.1,
        ),
        ProtocolFamily(
            "thick",
            "thick slices (2-3 mm), large pixels (0.7-0.95 mm), smooth kernel",
            (2.0, 3.0),
            (0.7, 0.95),
            ("smooth",),
            (10.0, 20.0),
            (-5.0, 5.0),
            (-2000, -3024, -1024),
            0.1,
        ),
        ProtocolFamily(
            "low-dose",
            "screening low dose: 1-2.5 mm slices, either kernel, 40-75 HU noise",
            (1.0, 2.5),
            (0.6, 0.9),
            KERNELS,
            (40.0, 75.0),
            (-10.0, 10.0),
            (-2000, -3024),
            0.1,
        ),
        ProtocolFamily(
            "odd",
            "awkward series: HU offsets up to 40, padding 0 or -1024, half cover part of "
            "the lungs, any slices 0.6-3 mm and pixels 0.5-0.95 mm",
            (0.6, 3.0),
            (0.5, 0.95),
            KERNELS,
            (15.0, 45.0),
            (-40.0, 40.0),
            (0, -1024, -2000, -3024),
            0.5,
        ),
    )
}

#: Every name ``--protocol`` accepts.
FAMILY_NAMES: tuple[str, ...] = (*FAMILIES, MIXED)


def check_family(name: str) -> str:
    """``name`` if it is a family (or ``mixed``), else :class:`UnknownProtocolError`."""
    if name not in FAMILY_NAMES:
        raise UnknownProtocolError(
            f"Unknown protocol family {name!r}: choose one of {', '.join(FAMILY_NAMES)}."
        )
    return name


def draw_protocol(rng: np.random.Generator, name: str) -> ScanProtocol:
    """One scan's protocol drawn from family ``name`` (``mixed``: a family drawn first)."""
    check_family(name)
    if name == MIXED:
        name = str(rng.choice(list(FAMILIES)))
    family = FAMILIES[name]
    coverage = "full"
    if rng.random() < family.partial_coverage:
        coverage = "starts-inside" if rng.random() < 0.5 else "ends-inside"
    return ScanProtocol(
        family=name,
        slice_spacing_mm=round(uniform(rng, family.slice_spacing_mm), 4),
        inplane_spacing_mm=round(uniform(rng, family.inplane_spacing_mm), 6),
        kernel=str(rng.choice(list(family.kernels))),
        noise_hu=uniform(rng, family.noise_hu),
        hu_offset=round(uniform(rng, family.hu_offset)),
        pad_hu=int(rng.choice(family.outside_fov_hu)),
        coverage=coverage,
    )
