"""What a CT run trains, selects and is scored on: its data contract, fixed at the start (or
read back on resume), and the inference options of its whole-series passes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from src_train.cache import SeriesCache, check_training_folder
from src_train.ct import Geometry
from src_train.errors import ConfigError
from src_train.infer.candidates import CandidateConfig
from src_train.infer.runner import InferenceOptions
from src_train.luna import LunaFolder
from src_train.model import Checkpoint, ModelConfig
from src_train.records.contract import (
    CONTRACT_KEY,
    DataContract,
    contract_of_checkpoint,
    folder_fingerprint,
    resolve_contract,
)
from src_train.records.spacing import training_spacing
from src_train.records.split import split_series
from src_train.records.truth import (
    ScoringTruth,
    scoring_truth,
    small_split_warning,
    split_series_of,
)
from src_train.reviews import ReviewBook, ReviewedFolder
from src_train.train.config import TrainConfig
from src_train.train.runtime import DistInfo

log = logging.getLogger(__name__)


def review_state(book: ReviewBook, uids: Sequence[str]) -> dict[str, Any]:
    """Per reviewed series of ``uids``, what its reviewed ground truth depends on (each
    nodule's latest verdict; a corrected nodule's label volume); empty when nothing is
    reviewed. Part of the contract's fingerprint, so a resume after reviews changed is
    refused."""
    reviewed = set(book.series_uids)
    return {uid: book.fingerprint(uid) for uid in sorted(uids) if uid in reviewed}


def prepare_contract(
    cfg: TrainConfig, resume_from: Checkpoint | None, run_dir: Path
) -> tuple[LunaFolder, DataContract, TrainConfig]:
    """The data folder, the run's contract and its options: today's for a new run, the stored
    ones on resume (:func:`~src_train.records.contract.resolve_contract` refuses differences).

    A stored contract from before the test split resumes on its two-way split (said so).
    """
    folder = LunaFolder(cfg.data_dir)
    check_training_folder(folder)
    uids = folder.series_uids
    if len(uids) < 2:
        raise ConfigError(
            f"{folder.root} holds {len(uids)} series; training needs at least 2 (one "
            "is held out for validation)."
        )
    reviews = review_state(ReviewBook.for_folder(folder), uids)
    fingerprint = folder_fingerprint(folder, uids, reviews)
    current = DataContract.build(cfg.to_dict(), split_series(uids, cfg.val_stride), fingerprint)
    current = dataclasses.replace(current, point_series=point_series(cfg, folder))
    contract = current
    if resume_from is not None:
        stored = contract_of_checkpoint(resume_from)
        if stored is not None and not stored.has_test_split:
            log.warning(
                "%s was started before LunaSeg kept a test set: it resumes on its training and "
                "validation series and has no test series (--split test will refuse its "
                "checkpoints; a new run has one)",
                run_dir,
            )
            current = current.as_two_way()
        contract = resolve_contract(stored, current, cfg.contract, run_dir, uids)
        if contract is stored and stored is not None:
            # continue with the run's options (identical unless --contract stored)
            cfg = dataclasses.replace(cfg, **stored.options)
    return folder, contract, cfg


def point_series(cfg: TrainConfig, folder: LunaFolder) -> tuple[str, ...]:
    """The series of ``--ranker-points`` whose points the second stage's classifier learns
    from: all of that folder's series except those of the run's data ``folder`` (which holds
    the validation and test series), sorted; empty without ``--ranker-points``.

    Raises :class:`ConfigError` when the folder is the data folder, has no annotation file or
    adds no series."""
    if cfg.ranker_points is None:
        return ()
    if not Path(cfg.ranker_points).is_dir():
        raise ConfigError(
            f"--ranker-points {cfg.ranker_points} does not exist. Name a LUNA16-layout folder "
            "(e.g. made by 'lunaseg synth DIR --seed N'), or drop --ranker-points."
        )
    points = LunaFolder(cfg.ranker_points)
    if points.root.resolve() == folder.root.resolve():
        raise ConfigError(
            f"--ranker-points {cfg.ranker_points} is the data folder itself; its training series "
            "already teach the second stage. Name another folder (e.g. 'lunaseg synth DIR "
            "--seed N' with a seed of its own), or drop --ranker-points."
        )
    if points.annotations_path is None:
        raise ConfigError(
            f"--ranker-points {cfg.ranker_points} has no annotations.csv: its series have no "
            "nodule centres to learn from. Name a LUNA16-layout folder with annotations."
        )
    known = set(folder.series_uids)
    uids = tuple(sorted(u for u in points.series_uids if u not in known))
    if not uids:
        raise ConfigError(
            f"--ranker-points {cfg.ranker_points} holds no series outside {folder.root} (series "
            "of the data folder are left out: its validation and test series must stay unseen). "
            "Name a folder with other series, or drop --ranker-points."
        )
    return uids


def with_training_spacing(contract: DataContract, cache: SeriesCache) -> DataContract:
    """``contract`` with the spacing ranges of its training series (from their cache entries,
    canonical frame), so that inference can warn about a scan the model cannot serve
    (:mod:`src_train.records.spacing`); a contract that records them already is kept."""
    if contract.train_spacing_mm:
        return contract
    spacings = [
        Geometry.from_dict(cache.meta(uid).geometry).spacing_irc_mm for uid in contract.train_series
    ]
    return dataclasses.replace(contract, train_spacing_mm=training_spacing(spacings))


def run_truth(folder: LunaFolder, contract: DataContract | None = None) -> ScoringTruth:
    """What a run scores against (validation, "best", the second stage's labels): the reviewed
    nodules of the annotation file the cache reads, as the cache's masks are reviewed. With
    ``contract``, logs a warning per set too small to say much (:func:`split_warnings`)."""
    truth = scoring_truth(ReviewedFolder(folder.root))
    if contract is not None:
        for line in split_warnings(contract, truth):
            log.warning("%s", line)
        if not truth.nodules_of(contract.val_series):
            log.warning(
                "the %d validation series hold no annotated nodule: nodule recall and CPM stay "
                "0 and checkpoint_best is chosen by voxel F1 only; use more series or another "
                "--val-stride",
                len(contract.val_series),
            )
    return truth


def split_warnings(contract: DataContract, truth: ScoringTruth) -> list[str]:
    """A warning line per set of the run too small to say much (or missing)."""
    lines = []
    for name in ("val", "test"):
        series = split_series_of(contract, name)
        if name == "test" and not series:
            lines.append(
                "warning: this run has no test set (its folder holds fewer than 3 series, or "
                "it began before LunaSeg kept one): no figure of it is free of selection"
            )
            continue
        line = small_split_warning(name, len(series), len(truth.nodules_of(series)))
        if line:
            lines.append(line)
    return lines


def pass_options(cfg: TrainConfig, device: torch.device, channels_last: bool) -> InferenceOptions:
    """Inference options of validation and the second stage.

    On the CPU, memory format and threads are left to the tuner, as ``lunaseg infer`` leaves
    them, so validation and the second stage's pass over training series (most of a CPU run's
    time) may run on an installed runtime such as OpenVINO.
    """
    on_cpu = device.type == "cpu"
    return InferenceOptions(
        device=str(device),
        batch_size=cfg.val_batch_size,
        threshold=cfg.detection_threshold,
        channels_last=None if on_cpu else channels_last,
        num_threads=None if on_cpu else torch.get_num_threads(),
        candidates=CandidateConfig(),
    )


def config_record(
    cfg: TrainConfig, contract: DataContract, model_config: ModelConfig, dist: DistInfo
) -> dict[str, Any]:
    """``config.json``'s run record: options, model, processes, the three sets of series and
    the contract (the caller adds where it runs and the command line)."""
    return {
        "train_config": cfg.to_dict(),
        "model_config": model_config.to_dict(),
        "world_size": dist.world_size,
        "train_series": list(contract.train_series),
        "val_series": list(contract.val_series),
        "test_series": list(contract.test_series),
        CONTRACT_KEY: contract.to_dict(),
        "torch": torch.__version__,
    }
