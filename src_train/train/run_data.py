"""What a CT run trains, selects and is scored on: its data contract, fixed at the start (or
read back on resume), and the inference options of its whole-series passes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from src_train.cache import check_training_folder
from src_train.errors import ConfigError
from src_train.infer.candidates import CandidateConfig
from src_train.infer.runner import InferenceOptions
from src_train.luna import LunaFolder
from src_train.model import Checkpoint
from src_train.records.contract import (
    DataContract,
    contract_of_checkpoint,
    folder_fingerprint,
    resolve_contract,
)
from src_train.records.split import split_series
from src_train.train.config import TrainConfig


def prepare_contract(
    cfg: TrainConfig, resume_from: Checkpoint | None, run_dir: Path
) -> tuple[LunaFolder, DataContract, TrainConfig]:
    """The data folder, the run's contract and its options: today's for a new run, the stored
    ones on resume (:func:`~src_train.records.contract.resolve_contract` refuses differences).
    """
    folder = LunaFolder(cfg.data_dir)
    check_training_folder(folder)
    uids = folder.series_uids
    if len(uids) < 2:
        raise ConfigError(
            f"{folder.root} holds {len(uids)} series; training needs at least 2 (one "
            "is held out for validation)."
        )
    train, val = split_series(uids, cfg.val_stride)
    current = DataContract.build(cfg.to_dict(), train, val, folder_fingerprint(folder, uids))
    contract = current
    if resume_from is not None:
        stored = contract_of_checkpoint(resume_from)
        contract = resolve_contract(stored, current, cfg.contract, run_dir, uids)
        if contract is stored and stored is not None:
            # continue with the run's options (identical unless --contract stored)
            cfg = dataclasses.replace(cfg, **stored.options)
    return folder, contract, cfg


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
