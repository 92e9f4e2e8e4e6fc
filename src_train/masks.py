"""Ground truth from points: per-nodule masks grown from annotated centres.

Arrays are ``(index, row, col)``; thresholds are Hounsfield units.
"""

from __future__ import annotations

#: The SPEC's default density threshold for bounding-box growth, in HU.
DEFAULT_THRESHOLD_HU = -700
