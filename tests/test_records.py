"""The shared records below the stages: what an older checkpoint's detection threshold is, read
the same way by the run's contract (resume) and by inference (one rule, records/threshold)."""

from __future__ import annotations

from pathlib import Path

import pytest

from src_train.model import ModelConfig, build_model, load_checkpoint, save_checkpoint
from src_train.records.contract import CONTRACT_VERSION, DataContract
from src_train.records.threshold import (
    DEFAULT_THRESHOLD,
    PRE_OPTION_THRESHOLD,
    THRESHOLD_KEY,
    checkpoint_threshold,
)


@pytest.mark.parametrize("stored", [None, 0.25])
def test_contract_and_inference_read_a_checkpoint_threshold_alike(
    tmp_path: Path, stored: float | None
) -> None:
    options = {"mask_method": "grow"} if stored is None else {THRESHOLD_KEY: stored}
    contract = DataContract.from_dict(
        {
            "version": CONTRACT_VERSION,
            "train_series": ["a"],
            "val_series": ["b"],
            "options": options,
            "data": {},
        }
    )
    config = ModelConfig(filters=4, depth=2)
    path = tmp_path / "old.pt"
    save_checkpoint(path, build_model(config), config, train_config=options)
    expected = PRE_OPTION_THRESHOLD if stored is None else stored
    assert contract.options[THRESHOLD_KEY] == expected
    assert checkpoint_threshold(load_checkpoint(path)) == expected
    assert 0.0 < DEFAULT_THRESHOLD < 1.0
