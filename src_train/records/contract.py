"""A run's data contract: what it trains and validates on, fixed for the life of the run.

The contract holds the series split (training / validation / test series UIDs,
:mod:`src_train.records.split`), the options that decide what a sample and its ground truth are
(mask method and threshold, loss, seed, crops, sampling, schedule) and a fingerprint of the data
folder (its series, annotation files and reviews). It is stored in ``config.json`` and in every
checkpoint, so that

* ``--resume`` continues on exactly the same data: any difference between the stored contract
  and today's options or folder is refused with one line per difference
  (:func:`resolve_contract`), unless the user accepts the stored contract explicitly
  (``--contract stored``); a run folder from an older LunaSeg without a contract is refused
  with a line saying how to continue (``--contract current`` adopts today's split);
* a checkpoint carries its ground-truth definition and split to ``lunaseg infer`` / ``eval``
  (``--split test|val|train|all``) and to the viewer (:func:`contract_of_checkpoint`).

Contracts of version 1 (before the test split) still load: their test set is empty
(:attr:`DataContract.has_test_split` False), and a run of theirs resumes on its two-way split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src_train.errors import ConfigError
from src_train.luna import LunaFolder, find_excluded
from src_train.model import Checkpoint
from src_train.records.split import SeriesSplit
from src_train.records.threshold import PRE_OPTION_THRESHOLD, THRESHOLD_KEY

log = logging.getLogger(__name__)

#: Bump when the meaning of a stored contract changes (2: the test split).
CONTRACT_VERSION = 2

#: Versions this code reads (1: training and validation series only).
READABLE_VERSIONS = (1, 2)

#: Key of the contract in a checkpoint's ``extra`` and in ``config.json``.
CONTRACT_KEY = "contract"

#: TrainConfig fields that define the data a run sees and how it is judged: a resumed run
#: keeps them (``epochs``, ``lr``, devices and writers may change).
CONTRACT_OPTIONS: tuple[str, ...] = (
    "mask_method",
    "threshold_hu",
    "val_stride",
    "seed",
    "loss",
    "fn_weight",
    "focal_gamma",
    "focal_alpha",
    "small_nodule_px",
    "crop_size",
    "window_size",
    "context_slices",
    "context_mm",
    "negative_fraction",
    "hard_fraction",
    "edge_fraction",
    "off_center_fraction",
    "slab_fraction",
    "epoch_samples",
    "batch_size",
    "augment",
    "scanner_fraction",
    "best_min_precision",
    "detection_threshold",
)

#: Options added to the contract later, with the value every run stored before them had: a
#: stored contract without one still resumes when today's value is that one.
OPTION_DEFAULTS: dict[str, Any] = {
    "small_nodule_px": 0.0,
    THRESHOLD_KEY: PRE_OPTION_THRESHOLD,
    "context_mm": 0.0,
    "off_center_fraction": 0.0,
    "slab_fraction": 0.0,
    "scanner_fraction": 1.0,
}

#: How ``--resume`` treats the stored contract (:func:`resolve_contract`).
CONTRACT_POLICIES = ("check", "stored", "current")

#: Series UIDs named in a message before "and N more".
_NAMED_UIDS = 3


def _sha1_text(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _sha1_file(path: Path | None) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path is not None else None


def folder_fingerprint(
    folder: LunaFolder, uids: Sequence[str], reviews: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a run's data folder holds: its series (count and a hash of the sorted UIDs), the
    annotation files the ground truth comes from (name and SHA-1 of their bytes) and the
    review state (``reviews``: per series what its reviewed ground truth depends on; None or
    empty when nothing is reviewed, hashed)."""
    annotations = folder.annotations_path
    excluded = find_excluded(annotations) if annotations is not None else None
    return {
        "series": len(uids),
        "series_sha1": _sha1_text("\n".join(sorted(uids))),
        "annotations": annotations.name if annotations is not None else None,
        "annotations_sha1": _sha1_file(annotations),
        "excluded_sha1": _sha1_file(excluded),
        "reviews_sha1": _sha1_text(json.dumps(reviews, sort_keys=True)) if reviews else None,
    }


@dataclass(frozen=True)
class DataContract:
    """The data a run trains and validates on (see the module docstring).

    Attributes:
        train_series, val_series, test_series: the split, series UIDs (validation = the
            selection set; test: never looked at by a choice).
        options: the values of :data:`CONTRACT_OPTIONS`.
        data: :func:`folder_fingerprint` of the data folder.
        version: :data:`CONTRACT_VERSION` at writing time.
        train_spacing_mm: the training series' spacing ranges
            (:func:`~src_train.records.spacing.training_spacing`); empty when not recorded
            (a run from before it was kept). Derived from the series, so not compared on resume.
        point_series: series of another folder (``--ranker-points``) whose annotated nodule
            centres and candidate points the second stage's classifier learns from (the
            segmenter never sees them); none of them is a series of the data folder.
    """

    train_series: tuple[str, ...]
    val_series: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    version: int = CONTRACT_VERSION
    test_series: tuple[str, ...] = ()
    train_spacing_mm: dict[str, list[float]] = field(default_factory=dict)
    point_series: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, config_values: dict[str, Any], split: SeriesSplit, fingerprint: dict[str, Any]
    ) -> DataContract:
        """A contract from a TrainConfig's ``to_dict()``, a split and a fingerprint."""
        return cls(
            train_series=split.train,
            val_series=split.val,
            test_series=split.test,
            options={name: config_values[name] for name in CONTRACT_OPTIONS},
            data=dict(fingerprint),
        )

    @property
    def has_test_split(self) -> bool:
        """False for a contract written before the test split (version 1)."""
        return self.version >= 2

    def as_two_way(self) -> DataContract:
        """This contract as a version-1 run had it: the test series train (to compare with a
        stored version-1 contract on resume)."""
        train = tuple(sorted(self.train_series + self.test_series))
        return dataclasses.replace(self, train_series=train, test_series=(), version=1)

    @property
    def all_series(self) -> tuple[str, ...]:
        """Every series of the run, sorted."""
        return tuple(sorted(self.train_series + self.val_series + self.test_series))

    @property
    def mask_method(self) -> str:
        """How the run's ground truth is made from points."""
        return str(self.options["mask_method"])

    @property
    def threshold_hu(self) -> float:
        """The density threshold of the run's ground truth, HU."""
        return float(self.options["threshold_hu"])

    def split_of(self, uid: str) -> str | None:
        """``"train"``, ``"val"``, ``"test"`` or None (a series the run never saw)."""
        if uid in self.train_series:
            return "train"
        if uid in self.val_series:
            return "val"
        if uid in self.test_series:
            return "test"
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "version": self.version,
            "train_series": list(self.train_series),
            "val_series": list(self.val_series),
            "test_series": list(self.test_series),
            "options": dict(self.options),
            "data": dict(self.data),
            "train_spacing_mm": {k: list(v) for k, v in self.train_spacing_mm.items()},
            "point_series": list(self.point_series),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataContract:
        """Inverse of :meth:`to_dict`; :class:`ConfigError` for a record this code cannot use."""
        try:
            version = int(data["version"])
            contract = cls(
                train_series=tuple(str(u) for u in data["train_series"]),
                val_series=tuple(str(u) for u in data["val_series"]),
                test_series=tuple(str(u) for u in data.get("test_series") or ()),
                options={**OPTION_DEFAULTS, **data["options"]},
                data=dict(data["data"]),
                version=version,
                train_spacing_mm={
                    str(k): [float(v) for v in bounds]
                    for k, bounds in (data.get("train_spacing_mm") or {}).items()
                },
                point_series=tuple(str(u) for u in data.get("point_series") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"Damaged data contract record ({type(exc).__name__}: {exc})."
            ) from exc
        if version not in READABLE_VERSIONS:
            raise ConfigError(
                f"The stored data contract has version {version}; this LunaSeg reads versions "
                f"{', '.join(str(v) for v in READABLE_VERSIONS)}."
            )
        return contract

    def differences(self, now: DataContract) -> list[str]:
        """One line per way ``now`` differs from this (stored) contract; empty when equal."""
        lines = []
        for name in CONTRACT_OPTIONS:
            old, new = self.options.get(name), now.options.get(name)
            if old != new:
                flag = "--" + name.replace("_", "-")
                lines.append(f"{flag}: the run used {old!r}, now {new!r}")
        lines.extend(_split_differences(self, now))
        if set(self.point_series) != set(now.point_series):
            lines.append(
                f"--ranker-points: the run's second stage learns from the points of "
                f"{len(self.point_series)} series of another folder, now of "
                f"{len(now.point_series)} (another set of series)"
            )
        old_data, new_data = self.data, now.data
        if (old_data.get("series"), old_data.get("series_sha1")) != (
            new_data.get("series"),
            new_data.get("series_sha1"),
        ):
            lines.append(
                f"data folder: the run saw {old_data.get('series')} series, it now holds "
                f"{new_data.get('series')} (another set of series)"
            )
        if old_data.get("annotations_sha1") != new_data.get("annotations_sha1"):
            lines.append(
                f"annotations ({new_data.get('annotations')}): changed since the run started, "
                "so its ground truth would differ"
            )
        if old_data.get("excluded_sha1") != new_data.get("excluded_sha1"):
            lines.append("excluded findings (annotations_excluded.csv): changed since the run")
        if old_data.get("reviews_sha1") != new_data.get("reviews_sha1"):
            lines.append(
                "reviews (reviews/reviews.csv or its label volumes): changed since the run "
                "started, so its reviewed ground truth would differ"
            )
        return lines


def _uids_text(uids: Sequence[str]) -> str:
    shown = ", ".join(sorted(uids)[:_NAMED_UIDS])
    more = len(uids) - _NAMED_UIDS
    return shown + (f" and {more} more" if more > 0 else "")


_SET_NAMES = {"train": "training", "val": "validation", "test": "test"}


def _split_differences(old: DataContract, new: DataContract) -> list[str]:
    """One line per (old set, new set) move of series, and for series new or missing."""
    lines = []
    moves: dict[tuple[str | None, str | None], list[str]] = {}
    for uid in sorted(set(old.all_series) | set(new.all_series)):
        was, now = old.split_of(uid), new.split_of(uid)
        if was != now:
            moves.setdefault((was, now), []).append(uid)
    for (was, now), uids in sorted(moves.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        named = f"({_uids_text(uids)})"
        if was is None:
            lines.append(f"split: {len(uids)} series are new to the run {named}")
        elif now is None:
            lines.append(f"split: {len(uids)} series of the run are missing {named}")
        elif (was, now) == ("train", "val"):
            lines.append(f"split: {len(uids)} series the run trained on would now validate {named}")
        elif (was, now) == ("val", "train"):
            lines.append(f"split: {len(uids)} validation series would now be trained on {named}")
        else:
            lines.append(
                f"split: {len(uids)} {_SET_NAMES[was]} series would now be in the "
                f"{_SET_NAMES[now]} set {named}"
            )
    return lines


def resolve_contract(
    stored: DataContract | None,
    current: DataContract,
    policy: str,
    run_dir: str | Path,
    available: Sequence[str],
) -> DataContract:
    """The contract a resumed run continues with, or :class:`ConfigError` saying why not.

    Args:
        stored: the contract of the run's latest checkpoint (None: an older LunaSeg's run).
        current: the contract today's options and folder describe.
        policy: ``"check"`` (the default: refuse any difference), ``"stored"`` (continue with
            the stored contract, overriding today's options), ``"current"`` (a run without a
            stored contract adopts today's; refused when the run has one).
        run_dir: the run folder (named in messages).
        available: series UIDs in the data folder now (the stored split must still exist).
    """
    if policy not in CONTRACT_POLICIES:
        raise ConfigError(
            f"--contract must be one of {', '.join(CONTRACT_POLICIES)}; got {policy!r}."
        )
    if stored is None:
        if policy == "current":
            log.warning(
                "%s stores no data contract (an older LunaSeg); adopting today's split and "
                "options as asked (--contract current)",
                run_dir,
            )
            return current
        raise ConfigError(
            f"Cannot resume {run_dir}: it was written by an older LunaSeg and stores no data "
            "contract, so today's split could move series it trained on into validation. "
            "Start a new run (--overwrite or another --run-dir), or accept today's split and "
            "options explicitly with --contract current."
        )
    if policy == "current":
        raise ConfigError(
            f"{run_dir} stores its data contract; --contract current is only for runs of an "
            "older LunaSeg. Resume with its stored contract (--contract stored) or start a new "
            "run."
        )
    missing = sorted(set(stored.all_series) - set(available))
    differences = stored.differences(current)
    if policy == "stored":
        if missing:
            raise ConfigError(
                f"Cannot resume {run_dir} with its stored contract: {len(missing)} of its series "
                f"are missing from the data folder ({_uids_text(missing)}). Restore them or "
                "start a new run."
            )
        for line in differences:
            log.warning("keeping the run's stored contract: %s", line)
        return stored
    if differences:
        raise ConfigError(
            f"Cannot resume {run_dir}: today's options or data differ from the run's stored "
            "contract:\n  "
            + "\n  ".join(differences)
            + "\nResume with the run's options, pass --contract stored to continue with the "
            "stored contract, or start a new run (--overwrite or another --run-dir)."
        )
    return stored


def contract_of_checkpoint(ckpt: Checkpoint) -> DataContract | None:
    """The data contract a checkpoint carries (None: written without run information)."""
    record = ckpt.extra.get(CONTRACT_KEY)
    if not isinstance(record, dict):
        return None
    try:
        return DataContract.from_dict(record)
    except ConfigError as exc:
        raise ConfigError(f"{ckpt.path}: {exc}") from exc
