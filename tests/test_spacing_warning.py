"""Issue 22, bad input: a checkpoint used on a scan whose spacing its training never saw says
so in one warning line; a checkpoint that records no training spacing stays silent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from models import chest, contract_checkpoint
from training import config_for

from src_train.ct import CtVolume, Geometry
from src_train.infer import InferenceOptions
from src_train.infer.detector import load_detector, run_detection
from src_train.model import load_checkpoint
from src_train.records.contract import DataContract, contract_of_checkpoint
from src_train.records.spacing import spacing_warning, training_spacing
from src_train.train import LATEST, Trainer

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TRAINED = {"slice": [0.6, 3.0], "pixel": [0.5, 0.95]}


def test_the_spacing_range_and_the_warning_line() -> None:
    assert training_spacing([(2.5, 0.7, 0.7), (0.6, 0.5, 0.95), (3.0, 0.8, 0.8)]) == TRAINED
    assert training_spacing([]) == {}
    line = spacing_warning(TRAINED, (10.0, 0.7, 0.7), "s1", "best.pt", context_slices=2)
    assert line is not None and line.startswith("warning: series s1 has slices 10 mm apart")
    assert "trained on 0.6-3 mm" in line and "reach 20 mm" in line and "best.pt" in line
    assert "pixels" not in line
    pixels = spacing_warning(TRAINED, (1.0, 2.0, 2.0), "s1", "best.pt")
    assert pixels is not None and "pixels of 2 mm (trained on 0.5-0.95 mm)" in pixels
    for fine in ((0.7, 0.6, 0.6), (3.0, 0.95, 0.95), (4.0, 1.2, 1.2)):
        assert spacing_warning(TRAINED, fine, "s1", "best.pt") is None, fine
    assert spacing_warning({}, (10.0, 0.7, 0.7), "s1", "best.pt") is None


def _thick(ct: CtVolume, slice_mm: float) -> CtVolume:
    spacing = (*ct.geometry.spacing_xyz_mm[:2], slice_mm)
    geometry = dataclasses.replace(ct.geometry, spacing_xyz_mm=spacing)
    return dataclasses.replace(ct, geometry=geometry)


def _checkpoint(path: Path, spacing: dict[str, list[float]]) -> Path:
    options = {"mask_method": "ball", "threshold_hu": -650.0, "context_slices": 3}
    contract = DataContract(("a",), ("b",), options, {}, train_spacing_mm=spacing)
    return contract_checkpoint(path, contract, options)


def test_inference_on_a_ten_mm_scan_warns_and_an_old_checkpoint_does_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thick = _thick(chest((9, 48, 48)), 10.0)
    options = InferenceOptions(device="cpu")
    for spacing, warned in ((TRAINED, True), ({}, False)):
        detector = load_detector(_checkpoint(tmp_path / f"{warned}.pt", spacing))
        caplog.clear()
        with caplog.at_level("WARNING", logger="src_train"):
            run_detection(thick, detector, options)
            run_detection(chest((9, 48, 48)), detector, options)  # 2 mm slices: within range
        lines = [r.getMessage() for r in caplog.records if "apart" in r.getMessage()]
        if warned:
            assert len(lines) == 1 and "slices 10 mm apart (trained on 0.6-3 mm" in lines[0]
        else:
            assert lines == []


def test_training_records_the_spacing_range_of_its_training_series(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    trainer = Trainer(config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8))
    trainer.fit()
    contract = contract_of_checkpoint(load_checkpoint(run / LATEST))
    assert contract is not None and contract.train_spacing_mm
    spacings = [
        Geometry.from_dict(trainer.cache.meta(uid).geometry).spacing_irc_mm
        for uid in contract.train_series
    ]
    assert contract.train_spacing_mm == training_spacing(spacings)
    low, high = contract.train_spacing_mm["slice"]
    assert 0 < low <= high == max(s[0] for s in spacings)
