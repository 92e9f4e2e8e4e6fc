"""Which series train, which select, which test: a split by series, fixed by the UIDs alone.

Three sets, disjoint and together every series of the folder:

* **validation** ("selection set"): what the checkpoint ``best`` and the second stage's
  calibration look at;
* **test**: looked at by nothing that chooses; scores on it are reported only;
* **training**: the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from src_train.errors import ConfigError

#: Fewest series a folder needs for every set to be non-empty.
MIN_SERIES_FOR_TEST = 3


@dataclass(frozen=True)
class SeriesSplit:
    """Training, validation and test series UIDs (sorted, disjoint)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def split_series(uids: Iterable[str], val_stride: int = 10) -> SeriesSplit:
    """Split series into training, validation and test sets.

    The UIDs are de-duplicated and sorted. Position ``i`` validates when ``i % val_stride ==
    0`` (so the first series always validates) and tests when ``i % val_stride == 1``
    (``i % 4 == 1`` for ``val_stride`` 2, so that some series still train); the rest train.
    With :data:`MIN_SERIES_FOR_TEST` series or more each set is non-empty (a set left empty by
    the rule takes the last series of the largest one); with 2 the test set is empty.
    """
    if val_stride < 2:
        raise ConfigError(
            f"val_stride must be at least 2 (every n-th series validates); got {val_stride}."
        )
    ordered = sorted(set(uids))
    test_stride = val_stride if val_stride > 2 else 2 * val_stride
    with_test = len(ordered) >= MIN_SERIES_FOR_TEST
    sets: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, uid in enumerate(ordered):
        if i % val_stride == 0:
            sets["val"].append(uid)
        elif with_test and i % test_stride == 1:
            sets["test"].append(uid)
        else:
            sets["train"].append(uid)
    if with_test:
        for name in ("train", "test"):
            if not sets[name]:
                largest = max(sets.values(), key=len)
                sets[name].append(largest.pop())
    return SeriesSplit(
        tuple(sorted(sets["train"])), tuple(sorted(sets["val"])), tuple(sorted(sets["test"]))
    )
