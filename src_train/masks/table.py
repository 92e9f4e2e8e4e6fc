"""The per-nodule table ``nodules.csv``: one row per nodule mask (world mm, IRC voxels, HU).

``lunaseg mask`` writes it beside the masks (:func:`src_train.masks.folder.write_masks`, with a
``review`` column) and the viewer's Mask QA saves the same format for one series
(:func:`write_nodule_table`, with its per-method Dice after the standard columns).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from src_train.atomic import write_csv_atomic
from src_train.masks.build import NoduleMask

#: The table's columns, in order (also written when there is no nodule at all).
NODULE_TABLE_COLUMNS = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "method",
    "threshold_hu",
    "center_irc",
    "radius_irc",
    "box_lo_irc",
    "box_hi_irc",
    "voxel_count",
    "skipped",
    "notes",
    "review",
)


def write_nodule_table(
    path: str | os.PathLike[str],
    records: Sequence[NoduleMask],
    extra: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """Write ``records`` as ``nodules.csv`` atomically; ``extra`` adds columns after the
    standard ones (name -> one value per record, None written empty)."""
    extra = dict(extra or {})
    for name, values in extra.items():
        if len(values) != len(records):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(records)} rows")
    rows = []
    for k, record in enumerate(records):
        row = record.to_row()
        row.update({name: "" if v[k] is None else v[k] for name, v in extra.items()})
        rows.append(row)
    return write_csv_atomic(path, rows, [*NODULE_TABLE_COLUMNS, *extra])
