"""What a model's results are scored against, and on which series.

One answer for ``lunaseg infer``, ``lunaseg eval``, the trainer's validation and the viewer:

* **Nodules to find**: ``annotations.csv`` (the included set of LUNA16's evaluation), else the
  folder's annotation file; **findings to ignore**: ``annotations_excluded.csv`` beside it
  when present (:func:`scoring_truth`).
* **Voxel ground truth** (built from these nodules) is :mod:`src_train.infer.ground_truth`.
* **Which series**: ``--split val|train|all`` read from the checkpoint's data contract
  (:func:`select_split`): ``all`` warns when training series are included, since recall and
  CPM on series a model was trained on are inflated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from src_train.errors import ConfigError
from src_train.luna import (
    ANNOTATIONS_FILE,
    LunaFolder,
    Nodule,
    find_excluded,
    read_annotations,
    read_excluded,
)
from src_train.records.contract import DataContract

log = logging.getLogger(__name__)

#: ``--split`` choices: every series, the checkpoint's validation or training series.
SPLITS = ("all", "val", "train")


@dataclass(frozen=True)
class ScoringTruth:
    """The nodules a run is scored against.

    Attributes:
        nodules: series UID -> included nodules (LUNA16's ``annotations.csv``; an unknown
            diameter is scored as :data:`~src_train.luna.UNKNOWN_DIAMETER_MM`).
        excluded: findings whose hits are neither true nor false positives.
        annotations_path: the file the nodules come from.
        excluded_path: the excluded findings' file; None without one.
    """

    nodules: dict[str, list[Nodule]] = field(default_factory=dict)
    excluded: list[Nodule] = field(default_factory=list)
    annotations_path: Path | None = None
    excluded_path: Path | None = None

    def nodules_of(self, uids: Sequence[str]) -> list[Nodule]:
        """The nodules of these series, series by series."""
        return [n for uid in uids for n in self.nodules.get(uid, [])]


def scoring_truth(folder: LunaFolder) -> ScoringTruth:
    """``annotations.csv`` of ``folder`` as the included set (else the folder's annotation
    file) and ``annotations_excluded.csv`` beside it, as LUNA16's evaluation reads them.

    Raises :class:`~src_train.errors.AnnotationError` for an annotation file without a
    ``diameter_mm`` column (scoring would have to guess every nodule's size)."""
    plain = folder.root / ANNOTATIONS_FILE
    path = plain if plain.is_file() else folder.annotations_path
    if path is None:
        return ScoringTruth()
    nodules: dict[str, list[Nodule]] = {}
    for nodule in read_annotations(path, require_diameter=True):
        if nodule.is_nodule:
            nodules.setdefault(nodule.series_uid, []).append(nodule)
    excluded_path = find_excluded(path)
    excluded = read_excluded(excluded_path) if excluded_path is not None else []
    return ScoringTruth(nodules, list(excluded), path, excluded_path)


@dataclass(frozen=True)
class SplitSelection:
    """The series a run scores and what the user must be told about them.

    Attributes:
        series: the series kept, in the order given.
        split: ``"all"``, ``"val"`` or ``"train"``.
        training_series: kept series that were in the checkpoint's training set.
        warning: a line to show (training series included), or None.
    """

    series: list[str]
    split: str
    training_series: list[str] = field(default_factory=list)
    warning: str | None = None


def select_split(
    uids: Sequence[str],
    contract: DataContract | None,
    split: str,
    checkpoint: str | Path,
) -> SplitSelection:
    """Keep the series of ``split`` (see the module docstring).

    Raises :class:`ConfigError` for ``val``/``train`` on a checkpoint without run information,
    and when no given series is in the asked split.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}.")
    if split != "all" and contract is None:
        raise ConfigError(
            f"--split {split} needs the checkpoint's run information (its training and "
            f"validation series), and {checkpoint} carries none: it was not written by "
            "'lunaseg train' of this LunaSeg. Use --split all, or a checkpoint trained with it."
        )
    if contract is None:
        return SplitSelection(list(uids), split)
    if split == "all":
        trained = [u for u in uids if contract.split_of(u) == "train"]
        warning = None
        if trained:
            warning = (
                f"warning: {len(trained)} of the {len(uids)} series were in the training set of "
                f"{Path(checkpoint).name}; recall and CPM on them are inflated (use --split val "
                "for the held-out series only)"
            )
        return SplitSelection(list(uids), split, trained, warning)
    kept = [u for u in uids if contract.split_of(u) == split]
    if not kept:
        raise ConfigError(
            f"None of the {len(uids)} series is in the {split} set of {checkpoint} "
            f"({len(contract.val_series)} validation, {len(contract.train_series)} training "
            "series): point at the run's data folder, or use --split all."
        )
    if split == "val":
        return SplitSelection(kept, split)
    return SplitSelection(
        kept,
        split,
        kept,
        f"warning: scoring the {len(kept)} training series of {Path(checkpoint).name}: recall "
        "and CPM on them are inflated",
    )
