"""One rule for unknown diameters (10 mm, as LUNA16 scores ``-1``): ``lunaseg eval``, the
scoring truth of infer and validation, and the hit test agree; a file without a ``diameter_mm``
column is refused for scoring instead of scoring zero nodules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src_train.cli import main
from src_train.ct import Geometry, save_volume
from src_train.errors import AnnotationError
from src_train.luna import UNKNOWN_DIAMETER_MM, LunaFolder
from src_train.records.candidate import CandidateNodule
from src_train.records.truth import scoring_truth
from src_train.train.validation import SeriesValidation, score_validation

UID = "1.2.3"
HEADER = "seriesuid,coordX,coordY,coordZ"


def _folder(tmp_path: Path, annotations: str) -> Path:
    """A LUNA16 folder with one small series on disk (UID) and ``annotations``."""
    root = tmp_path / "data"
    (root / "subset0").mkdir(parents=True)
    geometry = Geometry((8, 8, 8), (-100.0, -100.0, -100.0), (1.0, 1.0, 1.0))
    save_volume(np.full((8, 8, 8), -1000, np.int16), geometry, root / "subset0" / f"{UID}.mhd")
    (root / "annotations.csv").write_text(annotations)
    return root


def _submission(path: Path, x_mm: float) -> Path:
    path.write_text(f"{HEADER},probability\n{UID},{x_mm},0,0,0.9\n")
    return path


@pytest.mark.parametrize(
    ("offset_mm", "found"),
    [
        (UNKNOWN_DIAMETER_MM / 2 - 0.1, "1.000 (1/1)"),
        (UNKNOWN_DIAMETER_MM / 2 + 0.1, "0.000 (0/1)"),
    ],
)
def test_eval_scores_a_blank_diameter_as_10_mm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offset_mm: float, found: str
) -> None:
    root = _folder(tmp_path, f"{HEADER},diameter_mm\n{UID},0,0,0,\n")
    cands = _submission(tmp_path / "candidates.csv", offset_mm)
    argv = ["eval", "--annotations", str(root / "annotations.csv"), "--candidates", str(cands)]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 0
    assert f"Sensitivity (counted marks): {found}" in capsys.readouterr().out


def test_validation_keeps_a_nodule_of_unknown_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _folder(tmp_path, f"{HEADER},diameter_mm\n{UID},0,0,0,\n{UID},50,0,0,6\n")
    with caplog.at_level("WARNING"):
        truth = scoring_truth(LunaFolder(root))
    assert [n.diameter_mm for n in truth.nodules[UID]] == [None, 6.0]
    assert "1 of 2 nodules have no diameter; scored as 10 mm" in caplog.text
    near = CandidateNodule(UID, (4.9, 0.0, 0.0), (0.0, 0.0, 0.0), 3.0, 10, 0.9)
    metrics = score_validation([SeriesValidation(UID, [near], (0, 0, 0, 1))], truth, [UID])
    assert metrics["nodules"] == 2.0 and metrics["nodule_recall"] == 0.5


def test_a_file_without_a_diameter_column_is_refused_for_scoring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path, f"{HEADER}\n{UID},0,0,0\n")
    with pytest.raises(AnnotationError, match="has no diameter_mm column") as info:
        scoring_truth(LunaFolder(root))
    assert str(root / "annotations.csv") in str(info.value)
    cands = _submission(tmp_path / "candidates.csv", 0.0)
    argv = ["eval", "--annotations", str(root / "annotations.csv"), "--candidates", str(cands)]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no diameter_mm column" in err[0] and "annotations.csv" in err[0]


def test_infer_reviewed_scores_a_nodule_of_unknown_size_as_10_mm(tmp_path: Path) -> None:
    """``infer --reviewed`` scores the reviewed nodules by the same rule (it dropped them)."""
    from src_train.commands.infer_folder import _score_run
    from src_train.reviews import ReviewedFolder

    root = _folder(tmp_path, f"{HEADER},diameter_mm\n{UID},0,0,0,\n")
    near = CandidateNodule(UID, (4.9, 0.0, 0.0), (0.0, 0.0, 0.0), 3.0, 10, 0.9)
    froc = _score_run(ReviewedFolder(root), [UID], [near])
    assert froc.n_nodules == 1 and froc.recall == 1.0
