"""Mask methods by name: what a method returns, the registry, and the notes records carry.

A mask method takes one nodule and returns its local mask (:class:`MethodResult`). Methods are
registered by name (:func:`register_method`); :func:`available_methods` lists them with the
reference rule ``"grow"`` (the SPEC's bounding-box growth) first. To add a method: write a
function with the :data:`MaskMethod` signature in a module of this package, call
:func:`register_method` below it, and import that module in ``masks/__init__.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src_train.errors import ConfigError

#: Name of the reference (SPEC) method, the default everywhere.
REFERENCE_METHOD = "grow"

# Flags written to :attr:`NoduleMask.notes` (stable strings: viewers and tests match on them).
NOTE_CENTER_BELOW = "center below threshold"
NOTE_EMPTY = "empty mask"
NOTE_NO_DIAMETER = "no diameter: reference rule used"
NOTE_OUTSIDE = "center outside the volume: skipped"
NOTE_EDGE = "growth stopped at the volume edge"


@dataclass(frozen=True)
class GrowthStep:
    """One radius tested by bounding-box growth along one axis.

    Attributes:
        axis: array axis, 0 = index (z), 1 = row (y), 2 = col (x).
        radius: the radius tested, in voxels.
        hu_minus: HU at ``center - radius`` along ``axis``; ``None`` outside the volume.
        hu_plus: HU at ``center + radius`` along ``axis``; ``None`` outside the volume.
        accepted: True when both sides were dense and growth went on.
        stopped_by: ``""`` when accepted, else ``"minus"``, ``"plus"``, ``"both"`` (a side not
            dense) or ``"edge"`` (a side outside the volume).
    """

    axis: int
    radius: int
    hu_minus: float | None
    hu_plus: float | None
    accepted: bool
    stopped_by: str = ""


@dataclass
class MethodResult:
    """What a mask method returns for one nodule.

    Attributes:
        box_lo_irc: first voxel of the nodule's box (inclusive), inside the volume.
        box_hi_irc: end of the box (exclusive), inside the volume.
        local_mask: bool array of the box's shape, True on the nodule.
        radius_irc: radius per axis in voxels ``(index, row, col)``.
        steps: growth steps (may be empty).
        notes: remarks for the record.
        method: the method actually used when it differs from the one asked for (fall-backs).
    """

    box_lo_irc: tuple[int, int, int]
    box_hi_irc: tuple[int, int, int]
    local_mask: np.ndarray
    radius_irc: tuple[int, int, int]
    steps: list[GrowthStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    method: str | None = None


#: A mask method: one nodule in, its local mask out. Called as
#: ``method(hu, geometry, nodule, center_irc, threshold_hu, **params)`` with ``hu`` the whole
#: volume ``(index, row, col)`` in HU (read only), ``center_irc`` the center voxel (inside the
#: volume) and ``threshold_hu`` in HU; it reads only a region around the nodule and returns a
#: :class:`MethodResult`. Parameters are keyword-only and named with their unit.
MaskMethod = Callable[..., MethodResult]


@dataclass(frozen=True)
class MethodInfo:
    """A registered mask method: its callable, a one-line description and its parameters."""

    name: str
    func: MaskMethod
    description: str
    defaults: dict[str, Any]


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, func: MaskMethod, description: str) -> None:
    """Register (or replace) a mask method under ``name``.

    Its parameters (and their defaults) are the keyword-only arguments of ``func``.
    """
    defaults = {
        p.name: p.default
        for p in inspect.signature(func).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    _METHODS[name] = MethodInfo(name, func, description, defaults)


def available_methods() -> list[str]:
    """Names of the registered mask methods, the reference rule ``"grow"`` first."""
    return sorted(_METHODS, key=lambda n: (n != REFERENCE_METHOD, n))


def method_info(name: str) -> MethodInfo:
    """The registered method ``name``; :class:`ConfigError` listing the choices otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown mask method {name!r}; choose one of {', '.join(available_methods())}."
        ) from None


def check_params(info: MethodInfo, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` completed with the method's defaults; :class:`ConfigError` for unknown names."""
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        known = ", ".join(info.defaults) or "none"
        raise ConfigError(
            f"Mask method {info.name!r} has no parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {known}."
        )
    return {**info.defaults, **params}
