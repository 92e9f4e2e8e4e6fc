"""The density test every mask method shares: "dense" means strictly above a threshold in HU."""

from __future__ import annotations

import math

import numpy as np

from src_train.errors import ConfigError

#: The SPEC's default density threshold for bounding-box growth, in HU.
DEFAULT_THRESHOLD_HU = -700


def dense(values: np.ndarray, threshold_hu: float) -> np.ndarray:
    """``values > threshold_hu`` as a bool array, fast for integer HU.

    Integer volumes are compared against an integer of their own dtype (``v > t`` equals
    ``v > floor(t)`` for integer ``v``), which is about three times faster than a float compare
    and never converts the array. Thresholds beyond the dtype's range give all-True/all-False.
    """
    threshold_hu = check_threshold(threshold_hu)
    if np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        t = math.floor(threshold_hu)
        if t < info.min:
            return np.ones(values.shape, dtype=bool)
        if t >= info.max:
            return np.zeros(values.shape, dtype=bool)
        return values > values.dtype.type(t)
    return values > values.dtype.type(threshold_hu)


def check_threshold(threshold_hu: float) -> float:
    """``threshold_hu`` as a float; :class:`ConfigError` unless it is a finite number of HU."""
    try:
        value = float(threshold_hu)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(
            f"Density threshold {threshold_hu!r} is not a finite number of HU; give e.g. "
            f"{DEFAULT_THRESHOLD_HU} (the SPEC default)."
        )
    return value
