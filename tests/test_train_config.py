"""TrainConfig: validation of every option, round trips, the validation cadence."""

from __future__ import annotations

import pytest

from src_train.errors import ConfigError
from src_train.train import TrainConfig, Trainer


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"amp": "fp8"},
        {"model": "vnet"},
        {"loss": "hinge"},
        {"augment": "wobble"},
        {"crop_size": 128},
        {"lr": 0.0},
        {"channels_last": "yes"},
        {"seed": -1},
        {"val_stride": 1},
        {"detection_threshold": 0.0},
        {"detection_threshold": 1.0},
        {"small_nodule_px": -5.0},
        {"scanner_fraction": 0.5},  # no scanner augmentation named: nothing to share out
        {"augment": "flip,kernel", "scanner_fraction": -0.1},
        {"resume": True, "overwrite": True},
    ],
)
def test_bad_options_raise_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_config_round_trips() -> None:
    cfg = TrainConfig(epochs=3, augment="flip,noise", model="segnet")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"epochs": 1, "bogus": 2})


def test_scanner_fraction_reaches_the_augmentation() -> None:
    cfg = TrainConfig(augment="flip,intensity,kernel", scanner_fraction=0.3)
    augment = cfg.augment_config()
    assert augment.scanner_fraction == 0.3 and augment.kernel and augment.intensity
    assert TrainConfig().augment_config().scanner_fraction == 1.0


def test_validation_cadence() -> None:
    trainer = Trainer(TrainConfig(epochs=12, val_every=5))
    assert [e for e in range(1, 13) if trainer._should_validate(e)] == [1, 5, 10, 12]


def test_a_contract_stored_before_an_option_existed_reads_it_as_its_default() -> None:
    from src_train.records.contract import CONTRACT_OPTIONS, OPTION_DEFAULTS, DataContract
    from src_train.train.config import REFERENCE_RECIPE

    # a run made with the values those options had before they existed (the reference recipe)
    today = TrainConfig(data_dir="d", **REFERENCE_RECIPE)
    options = {name: getattr(today, name) for name in CONTRACT_OPTIONS}
    older = {k: v for k, v in options.items() if k not in OPTION_DEFAULTS}
    record = DataContract(("a",), ("b",), older, {}).to_dict()
    stored = DataContract.from_dict(record)
    assert stored.options["small_nodule_px"] == 0.0
    assert stored.options["detection_threshold"] == today.detection_threshold == 0.5
    assert stored.differences(DataContract(("a",), ("b",), options, {})) == []
    boosted = DataContract(("a",), ("b",), {**options, "small_nodule_px": 30.0}, {})
    assert stored.differences(boosted) == ["--small-nodule-px: the run used 0.0, now 30.0"]
