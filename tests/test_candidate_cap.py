"""Issue 22: a detector keeps a short list, the most probable candidates after its ranker
(``--max-candidates``, default 30); grouping and label QA keep every candidate."""

from __future__ import annotations

import math
from collections.abc import Generator
from pathlib import Path

import numpy as np
import pytest
from models import checkpoint_file, chest

from src_train.classify import Ranker
from src_train.classify.features import FEATURE_NAMES, LogisticModel
from src_train.cli import main
from src_train.errors import ConfigError
from src_train.infer import InferenceOptions
from src_train.infer import detector as detector_module
from src_train.infer.candidates import DEFAULT_MAX_CANDIDATES, CandidateConfig, most_probable
from src_train.infer.detector import load_detector, run_detection
from src_train.infer.runner import InferenceProgress, InferenceResult
from src_train.records.candidate import CandidateNodule

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FOUND = 45


def _candidates(uid: str) -> list[CandidateNodule]:
    """``FOUND`` candidates, most probable (by the segmenter) first; the larger ones come last."""
    return [
        CandidateNodule(
            series_uid=uid,
            center_xyz_mm=(float(k), 0.0, 0.0),
            center_irc=(0.0, 0.0, float(k)),
            diameter_mm=3.0 + 0.1 * k,
            voxel_count=10 + k,
            probability=1.0 - k / 100,
            mean_probability=1.0 - k / 100,
            max_probability=1.0 - k / 100,
        )
        for k in range(FOUND)
    ]


@pytest.fixture
def grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The segmenter's pass replaced by one that finds :func:`_candidates`."""

    def fake(
        ct, model, options, tuners=None
    ) -> Generator[InferenceProgress, None, InferenceResult]:  # type: ignore[no-untyped-def]
        yield InferenceProgress(0, 1, "fake")
        empty = np.zeros(ct.shape_irc, dtype=bool)
        return InferenceResult(empty.astype(np.float16), empty, _candidates(ct.series_uid), 0.1)

    monkeypatch.setattr(detector_module, "iter_inference", fake)


def test_most_probable_keeps_the_head_of_the_list_and_counts_the_rest() -> None:
    found = _candidates("s")
    kept, left = most_probable(found, 30)
    assert kept == found[:30] and left == FOUND - 30
    assert most_probable(found, 0) == (found, 0)
    assert most_probable(found[:5], 30) == (found[:5], 0)
    with pytest.raises(ConfigError, match="max_candidates must be >= 0"):
        CandidateConfig(max_candidates=-1)


def test_the_detector_keeps_the_most_probable_after_its_ranker(
    tmp_path: Path, grouped: None
) -> None:
    detector = load_detector(checkpoint_file(tmp_path))
    ct = chest((9, 48, 48))
    plain = run_detection(ct, detector, InferenceOptions(device="cpu"))
    assert DEFAULT_MAX_CANDIDATES == 30
    assert [c.center_xyz_mm[0] for c in plain.candidates] == list(range(30))
    assert plain.left_out == FOUND - 30

    # A ranker that prefers large candidates reverses the order: the cap follows the ranker.
    n = len(FEATURE_NAMES)
    weights = [0.0] * n
    weights[FEATURE_NAMES.index("log_voxels")] = 5.0
    detector.ranker = Ranker("features", LogisticModel([3.0] * n, [1.0] * n, weights, -15.0))
    ranked = run_detection(ct, detector, InferenceOptions(device="cpu"))
    assert [c.center_xyz_mm[0] for c in ranked.candidates] == list(range(FOUND - 1, 14, -1))
    assert all(math.isfinite(c.segmenter_probability) for c in ranked.candidates)

    every = InferenceOptions(device="cpu", candidates=CandidateConfig(max_candidates=0))
    assert len(run_detection(ct, detector, every).candidates) == FOUND


def test_infer_records_what_the_cap_left_out(
    tiny_synth_dir: Path, tmp_path: Path, grouped: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.infer.records import read_record

    out = tmp_path / "out"
    args = ["infer", str(tiny_synth_dir), "--out", str(out), "--limit", "1", "--device", "cpu"]
    code = main([*args, "--max-candidates", "12"])
    assert code == 0
    printed = capsys.readouterr()
    assert (
        "12 candidates (the most probable; 33 less probable left out)" in printed.out + printed.err
    )
    uid = (out / "seriesuids.csv").read_text().split()[-1]
    record = read_record(out, uid)
    assert record is not None and len(record.candidates) == 12 and record.left_out == FOUND - 12
    rows = (out / "candidates.csv").read_text().splitlines()
    assert len(rows) == 1 + 12
