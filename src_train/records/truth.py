"""What a model's results are scored against, and on which series.

One answer for ``lunaseg infer``, ``lunaseg eval``, the trainer's validation and the viewer:

* **Nodules to find**: the folder's nodules from the annotation file the training cache reads
  (``annotations_with_malignancy.csv`` when present, else ``annotations.csv``), as the folder
  gives them: a :class:`~src_train.reviews.ReviewedFolder` gives the reviewed list (rejected
  findings out, reviewers' additions in), which is what a training run scores against;
  **findings to ignore**: ``annotations_excluded.csv`` beside it when present
  (:func:`scoring_truth`).
* **Voxel ground truth** (built from these nodules) is :mod:`src_train.infer.ground_truth`.
* **Which series**: ``--split test|val|train|all`` read from the checkpoint's data contract
  (:func:`select_split`). ``test`` is what results are quoted on; ``val`` is the run's
  *selection set* ("best" and the second stage were chosen on it, so its figures are
  optimistic); ``all`` warns when training series are included, since recall and CPM on series
  a model was trained on are inflated. A set too small to say much gets a warning line
  (:func:`small_split_warning`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from src_train.errors import ConfigError
from src_train.luna import (
    LunaFolder,
    Nodule,
    find_excluded,
    read_excluded,
    require_diameter_column,
    warn_unknown_diameters,
)
from src_train.records.contract import DataContract

log = logging.getLogger(__name__)

#: ``--split`` choices: every series, the checkpoint's test, validation or training series.
SPLITS = ("all", "test", "val", "train")

#: How each set is named where it is printed.
SPLIT_LABELS = {
    "test": "test set",
    "val": "selection set (validation)",
    "train": "training set",
    "all": "all series",
}

#: Fewest series and nodules a set needs before its figures go unwarned.
MIN_SPLIT_SERIES = 3
MIN_SPLIT_NODULES = 5


@dataclass(frozen=True)
class ScoringTruth:
    """The nodules a run is scored against.

    Attributes:
        nodules: series UID -> included nodules (an unknown diameter is scored as
            :data:`~src_train.luna.UNKNOWN_DIAMETER_MM`).
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

    def pool(self, other: ScoringTruth, uids: Sequence[str]) -> None:
        """Add ``other``'s nodules and excluded findings of the series ``uids`` to this truth
        (several folders scored as one set)."""
        wanted = set(uids)
        self.nodules.update({u: other.nodules[u] for u in uids if u in other.nodules})
        self.excluded.extend(f for f in other.excluded if f.series_uid in wanted)


def scoring_truth(folder: LunaFolder) -> ScoringTruth:
    """The nodules of ``folder``'s series (``folder.nodules(uid)``: reviewed ones for a
    :class:`~src_train.reviews.ReviewedFolder`) from its annotation file
    (``folder.annotations_path``, the one the training cache reads) as the included set, and
    ``annotations_excluded.csv`` beside it, as LUNA16's evaluation reads them.

    Raises :class:`~src_train.errors.AnnotationError` for an annotation file without a
    ``diameter_mm`` column (scoring would have to guess every nodule's size)."""
    path = folder.annotations_path
    if path is None:
        return ScoringTruth()
    require_diameter_column(path)
    nodules: dict[str, list[Nodule]] = {}
    for uid, found in folder.nodules_by_series.items():
        kept = [n for n in found if n.is_nodule]
        if kept:
            nodules[uid] = kept
    warn_unknown_diameters(path, [n for found in nodules.values() for n in found])
    excluded_path = find_excluded(path)
    excluded = read_excluded(excluded_path) if excluded_path is not None else []
    return ScoringTruth(nodules, list(excluded), path, excluded_path)


@dataclass(frozen=True)
class SplitSelection:
    """The series a run scores and what the user must be told about them.

    Attributes:
        series: the series kept, in the order given.
        split: ``"all"``, ``"val"`` or ``"train"``.
        training_series: kept series that were in the checkpoint's training set (or lent their
            points to its second stage, ``--ranker-points``).
        warning: a line to show (training series included), or None.
    """

    series: list[str]
    split: str
    training_series: list[str] = field(default_factory=list)
    warning: str | None = None


def small_split_warning(name: str, n_series: int, n_nodules: int | None = None) -> str | None:
    """A warning line when a set has fewer than :data:`MIN_SPLIT_SERIES` series or
    :data:`MIN_SPLIT_NODULES` nodules (``n_nodules`` None: not counted), else None."""
    small = []
    if n_series < MIN_SPLIT_SERIES:
        small.append(f"{n_series} series")
    if n_nodules is not None and n_nodules < MIN_SPLIT_NODULES:
        small.append(f"{n_nodules} nodule{'' if n_nodules == 1 else 's'}")
    if not small:
        return None
    return (
        f"warning: the {SPLIT_LABELS.get(name, name)} holds only {' and '.join(small)} "
        f"(fewer than {MIN_SPLIT_SERIES} series or {MIN_SPLIT_NODULES} nodules): its recall "
        "and CPM can move a lot from one nodule; read them as anecdotes, not estimates"
    )


def split_series_of(contract: DataContract, split: str) -> tuple[str, ...]:
    """The series of ``split`` (``train``, ``val`` or ``test``) in ``contract``."""
    return {
        "train": contract.train_series,
        "val": contract.val_series,
        "test": contract.test_series,
    }[split]


def select_split(
    uids: Sequence[str],
    contract: DataContract | None,
    split: str,
    checkpoint: str | Path,
    truth: ScoringTruth | None = None,
) -> SplitSelection:
    """Keep the series of ``split`` (see the module docstring); ``truth`` (optional) counts the
    nodules for the small-set warning.

    Raises :class:`ConfigError` for ``test``/``val``/``train`` on a checkpoint without run
    information, for ``test`` on a run without a test set, and when no given series is in the
    asked split.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}.")
    name = Path(checkpoint).name
    if split != "all" and contract is None:
        raise ConfigError(
            f"--split {split} needs the checkpoint's run information (its training, "
            f"validation and test series), and {checkpoint} carries none: it was not written "
            "by 'lunaseg train' of this LunaSeg. Use --split all, or a checkpoint trained with "
            "it."
        )
    if contract is None:
        return SplitSelection(list(uids), split)
    if split == "test" and not contract.test_series:
        why = (
            "its run was started before LunaSeg kept a test set"
            if not contract.has_test_split
            else "its data folder held fewer than 3 series"
        )
        raise ConfigError(
            f"--split test: {checkpoint} has no test series ({why}). Use --split val (the "
            "selection set: 'best' was chosen on it, so its figures are optimistic), or "
            "retrain on a folder of 3 series or more for a test set."
        )
    if split == "all":
        trained = [u for u in uids if contract.split_of(u) == "train"]
        pointed = set(contract.point_series)
        lent = [u for u in uids if u in pointed]
        lines = []
        if trained:
            lines.append(
                f"warning: {len(trained)} of the {len(uids)} series were in the training set of "
                f"{name}; recall and CPM on them are inflated (use --split test for series no "
                "choice looked at)"
            )
        if lent:
            lines.append(
                f"warning: {len(lent)} of the {len(uids)} series lent their annotated points to "
                f"the second stage of {name} (lunaseg train --ranker-points): its classifier "
                "learned their nodules, so CPM on them is inflated (score series no run saw)"
            )
        return SplitSelection(list(uids), split, trained + lent, "\n".join(lines) or None)
    kept = [u for u in uids if contract.split_of(u) == split]
    if not kept:
        raise ConfigError(
            f"None of the {len(uids)} series is in the {split} set of {checkpoint} "
            f"({len(contract.test_series)} test, {len(contract.val_series)} validation, "
            f"{len(contract.train_series)} training series): point at the run's data folder, "
            "or use --split all."
        )
    lines = []
    if split == "val":
        lines.append(
            f"note: --split val scores the selection set of {name} ('best' and the second "
            "stage were chosen on it, so its figures are optimistic); quote --split test"
        )
    elif split == "train":
        lines.append(
            f"warning: scoring the {len(kept)} training series of {name}: recall and CPM on "
            "them are inflated"
        )
    n_nodules = len(truth.nodules_of(kept)) if truth is not None else None
    small = small_split_warning(split, len(kept), n_nodules)
    if small:
        lines.append(small)
    trained = kept if split == "train" else []
    return SplitSelection(kept, split, trained, "\n".join(lines) if lines else None)
