"""Honest by default: infer/eval read the checkpoint's split and ground-truth definition."""

from __future__ import annotations

from pathlib import Path

import pytest
from models import checkpoint_file, contract_checkpoint, random_model, run_options

from src_train.cli import main
from src_train.commands.infer_folder import infer_to_folder
from src_train.errors import ConfigError
from src_train.luna import LunaFolder
from src_train.model import ModelConfig, save_checkpoint
from src_train.records.contract import DataContract

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _run_checkpoint(path: Path, train: list[str], val: list[str], mask_method: str) -> Path:
    """A checkpoint carrying a run's contract: these series, masks made with ``mask_method``."""
    options = {"mask_method": mask_method, "threshold_hu": -650.0}
    contract = DataContract(tuple(train), tuple(val), options, {})
    return contract_checkpoint(path, contract, options)


def test_split_val_on_a_checkpoint_without_run_information_is_a_clear_error(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = checkpoint_file(tmp_path)
    out = tmp_path / "out"
    args = ["infer", str(tiny_synth_dir), "--out", str(out), "--checkpoint", str(bare)]
    assert main([*args, "--split", "val", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--split val" in err and "carries none" in err and "--split all" in err
    assert not out.exists(), "refused before anything was written"
    cands = tmp_path / "c.csv"
    cands.write_text("seriesuid,coordX,coordY,coordZ,probability\n")
    ann = str(tiny_synth_dir / "annotations.csv")
    evaluate = ["eval", "--annotations", ann, "--candidates", str(cands), "--out", str(tmp_path)]
    assert main([*evaluate, "--split", "train", "--checkpoint", str(bare)]) == 2
    assert "carries none" in capsys.readouterr().err
    assert main([*evaluate, "--split", "val"]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err


def test_the_checkpoint_s_split_and_ground_truth_are_used(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uids = LunaFolder(tiny_synth_dir).series_uids
    ckpt = _run_checkpoint(tmp_path / "run.pt", uids[1:], uids[:1], "ball")
    held_out = infer_to_folder(
        tiny_synth_dir, tmp_path / "val", run_options(checkpoint=str(ckpt), split="val")
    )
    assert [uid for uid, _ in held_out.plan.series] == uids[:1]
    # the split note and the small-set warning lunaseg eval prints
    notes = held_out.plan.notes
    assert any(n.startswith("note: --split val scores the selection set") for n in notes)
    small = [n for n in notes if n.startswith("warning: the selection set (validation)")]
    assert len(small) == 1 and "holds only 1 series" in small[0]
    assert not any("in the training set" in note for note in notes)
    assert any("ball masks at -650 HU (the checkpoint's)" in note for note in held_out.plan.notes)
    assert held_out.froc is not None and held_out.froc.series_uids == uids[:1]

    everything = infer_to_folder(
        tiny_synth_dir, tmp_path / "all", run_options(checkpoint=str(ckpt), limit=2)
    )
    assert len(everything.plan.series) == 2
    warning = [note for note in everything.plan.notes if note.startswith("warning")]
    assert len(warning) == 1 and "1 of the 2 series were in the training set" in warning[0]

    # lunaseg eval reads the same split from the checkpoint
    out = tmp_path / "all"
    ann = str(tiny_synth_dir / "annotations.csv")
    evaluate = ["eval", "--annotations", ann, "--candidates", str(out / "candidates.csv")]
    assert main([*evaluate, "--checkpoint", str(ckpt), "--split", "val"]) == 0
    assert "LUNA16 evaluation: 1 scans" in capsys.readouterr().out
    assert main([*evaluate, "--checkpoint", str(ckpt), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "warning: 1 of the 2 series were in the training set" in printed

    with pytest.raises(ConfigError, match="None of the 1 series is in the train set"):
        infer_to_folder(
            tiny_synth_dir,
            tmp_path / "none",
            run_options(checkpoint=str(ckpt), series=(uids[0],), split="train"),
        )


def test_the_checkpoint_s_detection_threshold_is_the_default_mask_threshold(
    tiny_synth_dir: Path, tmp_path: Path
) -> None:
    import json

    import numpy as np
    from models import chest

    from src_train.infer import InferenceOptions
    from src_train.infer.detector import load_detector, run_detection

    path = tmp_path / "low.pt"
    save_checkpoint(path, random_model(), ModelConfig(), train_config={"detection_threshold": 0.3})
    detector = load_detector(path)
    assert detector.threshold == 0.3 and "detection threshold 0.3" in detector.describe()
    ct = chest((9, 64, 64))
    result = run_detection(ct, detector, InferenceOptions(device="cpu"))
    assert result.threshold == 0.3
    assert np.array_equal(result.mask, result.prob >= np.float16(0.3))
    asked = run_detection(ct, detector, InferenceOptions(device="cpu", threshold=0.6))
    assert asked.threshold == 0.6 and asked.mask.sum() <= result.mask.sum()
    assert load_detector(checkpoint_file(tmp_path)).threshold == 0.5  # a run without one

    # the output folder records the threshold that applied
    infer_to_folder(tiny_synth_dir, tmp_path / "out", run_options(checkpoint=str(path), limit=1))
    settings = json.loads((tmp_path / "out" / "run.json").read_text())["settings"]
    assert settings["inference"]["threshold"] == 0.3
