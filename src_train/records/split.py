"""Which series train and which validate: a split by series, fixed by the UIDs alone."""

from __future__ import annotations

from collections.abc import Iterable

from src_train.errors import ConfigError


def split_series(uids: Iterable[str], val_stride: int = 10) -> tuple[list[str], list[str]]:
    """Split series into (training, validation) by series.

    The UIDs are de-duplicated and sorted; position ``i`` goes to validation when
    ``i % val_stride == 0`` (so the first series always validates), the rest train. The lists
    are disjoint and together hold every UID.
    """
    if val_stride < 2:
        raise ConfigError(
            f"val_stride must be at least 2 (every n-th series validates); got {val_stride}."
        )
    ordered = sorted(set(uids))
    validation = ordered[::val_stride]
    held_out = set(validation)
    return [u for u in ordered if u not in held_out], validation
