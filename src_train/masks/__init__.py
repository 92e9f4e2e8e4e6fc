"""Ground truth from points: per-nodule voxel masks grown from annotated centers.

Arrays are ``(index, row, col)`` = ``(z, y, x)``; world centers are ``(x, y, z)`` mm; thresholds
are Hounsfield units (HU). "Dense" always means strictly greater than the threshold.

Modules, in the order data flows through them:

* :mod:`.density` -- the shared density test and the SPEC's default threshold (-700 HU);
* :mod:`.registry` -- mask methods by name, what a method returns, the notes records carry;
* :mod:`.grow` -- the SPEC's reference rule (bounding-box growth), method ``"grow"``;
* :mod:`.diameter` -- methods that use the annotated diameter, ``"ball"`` and ``"region"``;
* :mod:`.build` -- one record per nodule, the volume mask, :class:`MaskState` for sliders;
* :mod:`.truth` -- pairing annotations with true shapes and the Dice against them;
* :mod:`.report` / :mod:`.plots` -- every method against the true shapes, as tables and PNGs.

Writing masks for a whole folder (``lunaseg mask``) and the report folder (``lunaseg
mask-report``) are commands: :mod:`src_train.commands`.

The names below are the package's public API.
"""

from src_train.masks import diameter, grow  # noqa: F401  (importing registers the methods)
from src_train.masks.boxes import Slices3, box_around
from src_train.masks.build import MaskState, NoduleMask, OutsidePolicy, build_masks, mask_nodule
from src_train.masks.density import DEFAULT_THRESHOLD_HU, check_threshold, dense
from src_train.masks.diameter import method_ball, method_region
from src_train.masks.grow import AXIS_NAMES, GROW_START_RADIUS, grow_radius, method_grow
from src_train.masks.plots import plot_mask_report, plot_report_case
from src_train.masks.registry import (
    NOTE_CENTER_BELOW,
    NOTE_EDGE,
    NOTE_EMPTY,
    NOTE_NO_DIAMETER,
    NOTE_OUTSIDE,
    REFERENCE_METHOD,
    GrowthStep,
    MaskMethod,
    MethodInfo,
    MethodResult,
    available_methods,
    method_info,
    register_method,
)
from src_train.masks.report import (
    SIZE_BANDS_MM,
    MaskReport,
    NoduleScore,
    ScanScore,
    mask_report,
    score_against_truth,
    score_series,
    size_band,
)
from src_train.masks.truth import (
    MATCH_MIN_DISTANCE_MM,
    SeriesTruth,
    dense_surround,
    load_series_truth,
    match_true,
)

__all__ = [
    "AXIS_NAMES",
    "DEFAULT_THRESHOLD_HU",
    "GROW_START_RADIUS",
    "MATCH_MIN_DISTANCE_MM",
    "NOTE_CENTER_BELOW",
    "NOTE_EDGE",
    "NOTE_EMPTY",
    "NOTE_NO_DIAMETER",
    "NOTE_OUTSIDE",
    "REFERENCE_METHOD",
    "SIZE_BANDS_MM",
    "GrowthStep",
    "MaskMethod",
    "MaskReport",
    "MaskState",
    "MethodInfo",
    "MethodResult",
    "NoduleMask",
    "NoduleScore",
    "OutsidePolicy",
    "ScanScore",
    "SeriesTruth",
    "Slices3",
    "available_methods",
    "box_around",
    "build_masks",
    "check_threshold",
    "dense",
    "dense_surround",
    "grow_radius",
    "load_series_truth",
    "mask_nodule",
    "mask_report",
    "match_true",
    "method_ball",
    "method_grow",
    "method_info",
    "method_region",
    "plot_mask_report",
    "plot_report_case",
    "register_method",
    "score_against_truth",
    "score_series",
    "size_band",
]
