"""The voxel spacings a run trained on, and the warning for a scan outside them.

A CT checkpoint's input is ``2 x context_slices + 1`` neighbouring slices, taken at fixed voxel
offsets or every ``context_mm`` millimetres (resampled), and its filters learned nodule and
vessel sizes in voxels: on a scan whose slices or pixels are much farther apart (or closer) than
anything it trained on, the same input spans another distance (voxel context) or is
interpolated across gaps it never saw (mm context), and its output is not what its validation
measured. The run records the range
of its training series' spacings in its data contract (:func:`training_spacing`, in the
canonical frame: slice spacing along the index axis, pixel spacing in-plane, mm);
:func:`spacing_warning` gives the line to show for a scan outside that range by more than
:data:`SPACING_SLACK`. A checkpoint whose contract records no spacing (written before it was
kept) gives no warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

#: A scan's spacing may be this many times beyond the training range before it is warned about.
SPACING_SLACK = 1.5


def training_spacing(spacings_irc_mm: Iterable[Sequence[float]]) -> dict[str, list[float]]:
    """``{"slice": [min, max], "pixel": [min, max]}`` (mm) over the canonical
    ``(index, row, col)`` spacings of the training series; empty when there are none."""
    slices: list[float] = []
    pixels: list[float] = []
    for spacing in spacings_irc_mm:
        slices.append(float(spacing[0]))
        pixels.extend(float(v) for v in spacing[1:])
    if not slices:
        return {}
    return {"slice": [min(slices), max(slices)], "pixel": [min(pixels), max(pixels)]}


def _outside(value: float, bounds: Sequence[float]) -> bool:
    low, high = float(bounds[0]), float(bounds[1])
    return value > high * SPACING_SLACK or value < low / SPACING_SLACK


def spacing_warning(
    trained: Mapping[str, Sequence[float]],
    spacing_irc_mm: Sequence[float],
    series_uid: str,
    checkpoint: str,
    context_slices: int | None = None,
    context_mm: float | None = None,
) -> str | None:
    """The warning line for a scan of canonical spacing ``spacing_irc_mm`` (mm) run with a
    checkpoint trained on the ranges ``trained`` (:func:`training_spacing`); None when the
    scan is within them (by :data:`SPACING_SLACK`) or nothing was recorded."""
    slice_mm = float(spacing_irc_mm[0])
    pixel_mm = max(float(v) for v in spacing_irc_mm[1:])
    odd = []
    if "slice" in trained and _outside(slice_mm, trained["slice"]):
        low, high = trained["slice"]
        reach = ""
        if context_slices and context_mm is not None:
            reach = (
                f"; it expects its context every {context_mm:.3g} mm ({context_slices} either "
                f"side), here interpolated between slices {slice_mm:.3g} mm apart"
            )
        elif context_slices:
            reach = (
                f"; its {context_slices} context slice(s) either side reach "
                f"{context_slices * slice_mm:.3g} mm here"
            )
        odd.append(f"slices {slice_mm:.3g} mm apart (trained on {low:.3g}-{high:.3g} mm{reach})")
    if "pixel" in trained and _outside(pixel_mm, trained["pixel"]):
        low, high = trained["pixel"]
        odd.append(f"pixels of {pixel_mm:.3g} mm (trained on {low:.3g}-{high:.3g} mm)")
    if not odd:
        return None
    return (
        f"warning: series {series_uid} has {' and '.join(odd)}: {checkpoint} was not trained "
        "on such scans, so expect missed nodules and false positives its figures do not show; "
        "resample the scan to a spacing in that range or use a model trained on such scans"
    )
