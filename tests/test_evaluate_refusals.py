"""``lunaseg eval`` refuses inputs that cannot describe one run (issue 21, defect 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from models import random_model

from src_train.cli import main
from src_train.model import ModelConfig, file_sha1, save_checkpoint
from src_train.records.infer_files import RUN_FILE

HEADER = "seriesuid,coordX,coordY,coordZ,probability\n"


def _annotations(folder: Path) -> Path:
    path = folder / "annotations.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.1,0,0,0,8\n1.2,5,5,5,6\n")
    return path


def test_annotations_and_candidates_without_a_common_series_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: 'CPM nan' and exit 0."""
    ann = _annotations(tmp_path)
    cands = tmp_path / "candidates.csv"
    cands.write_text(HEADER + "9.9,0,0,0,0.9\n9.8,1,1,1,0.5\n")
    args = ["eval", "--annotations", str(ann), "--candidates", str(cands)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no series in common" in err and str(cands) in err and str(ann) in err
    assert not (tmp_path / "froc.csv").exists()
    cands.write_text(HEADER + "9.9,0,0,0,0.9\n1.1,0,0,0,0.8\n")  # one shared series: scored
    assert main(args) == 0


def test_candidates_made_by_another_checkpoint_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: scored against checkpoint A's split although run.json names B's SHA-1."""
    ann = _annotations(tmp_path)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint(a, random_model(seed=1), ModelConfig())
    save_checkpoint(b, random_model(seed=2), ModelConfig())
    out = tmp_path / "out"
    out.mkdir()
    cands = out / "candidates.csv"
    cands.write_text(HEADER + "1.1,0,0,0,0.9\n")
    (out / RUN_FILE).write_text(
        json.dumps({"settings": {"checkpoint_sha1": file_sha1(b)}, "series_uids": ["1.1"]})
    )
    args = ["eval", "--annotations", str(ann), "--candidates", str(cands), "--split", "val"]
    assert main([*args, "--checkpoint", str(a)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert file_sha1(b) in err and str(a) in err
    # With the checkpoint that made them the check passes (this bare one has no split, which
    # is the next, separate refusal).
    assert main([*args, "--checkpoint", str(b)]) == 2
    assert "carries none" in capsys.readouterr().err
