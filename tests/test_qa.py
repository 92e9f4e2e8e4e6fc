"""Label QA: each kind of bad annotation is found, for its reason, in any geometry; the CLI
writes the annotation's own columns and refuses what it cannot score."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from qa_scene import FLIPPED, IDENTITY, NODULE_D_MM, NODULES, chest, scene_rows, world, write_folder

from src_train.cli import main
from src_train.luna import LunaFolder
from src_train.model import ModelConfig, build_model, save_checkpoint
from src_train.qa import QaRule, duplicate_of, nodule_signals, run_qa
from src_train.qa.combine import noisy_or, ramp
from src_train.qa.measure import roc_auc, score_ranking
from src_train.reviews import record_verdict, reviews_dir


@pytest.mark.parametrize("direction", [IDENTITY, FLIPPED], ids=["identity", "flipped"])
def test_every_bad_row_ranks_above_the_good_one_for_its_reason(
    tmp_path: Path, direction: tuple[float, ...]
) -> None:
    write_folder(tmp_path, direction)
    result = run_qa(LunaFolder(tmp_path))
    by_what = {s.row.values["reader"].split("-")[1]: s for s in result.rows}
    good = by_what["good"]
    assert good.verdict.suspicion < 0.2 and good.verdict.reasons == ()
    expected = {
        "large": "large",
        "small": "small",
        "air": "air",
        "body": "body",
        "outside": "outside",
        "duplicate": "duplicate",
    }
    for what, reason in expected.items():
        verdict = by_what[what].verdict
        assert reason in verdict.reasons, (what, verdict)
        assert verdict.suspicion >= 0.5 > good.verdict.suspicion
    assert by_what["outside"].verdict.suspicion == 1.0
    assert result.rows[-1] is good  # most suspicious first, the good row last
    assert [s.verdict.suspicion for s in result.rows] == sorted(
        (s.verdict.suspicion for s in result.rows), reverse=True
    )


def test_signals_measure_the_nodule_on_its_box() -> None:
    ct = chest(IDENTITY)
    good = nodule_signals(ct.hu, ct.geometry, world(ct, NODULES["A"]), NODULE_D_MM)
    # an 8 mm ball of 1 x 1 x 2 mm voxels: the mask's equivalent diameter is within a voxel
    assert abs(good.mask_diameter_mm - NODULE_D_MM) < 1.5
    assert good.capped_axes == 0 and not good.outside_body
    assert good.fill > 0.9 and good.shell_fill < 0.05
    assert good.blob_distance_mm == 0.0 and good.blob_offset_mm < 1.0
    air = nodule_signals(ct.hu, ct.geometry, world(ct, (20, 48, 26)), 6.0)
    # the nearest dense voxel is nodule A's top: (20 - 12) slices x 2 mm - its 4 mm radius
    assert air.fill == 0.0 and air.blob_distance_mm == pytest.approx(12.0, abs=1.0)
    assert air.center_hu < -800
    assert nodule_signals(ct.hu, ct.geometry, world(ct, (-3, 48, 26)), 6.0).outside


def test_duplicate_goes_to_the_copy_that_fits_worse() -> None:
    centers = np.array([[0.0, 0, 0], [1.0, 0, 0], [30.0, 0, 0]])
    diameters = np.array([8.0, 8.0, 8.0])
    # row 1 fits worse: it is the duplicate of row 0; row 2 is alone
    assert duplicate_of(centers, diameters, np.array([0.1, 0.3, 0.0])).tolist() == [-1, 0, -1]
    # equal badness: the later row is the copy
    assert duplicate_of(centers, diameters, np.zeros(3)).tolist() == [-1, 0, -1]
    # farther apart than one radius (4 mm): no pair
    far = np.array([[0.0, 0, 0], [5.0, 0, 0]])
    assert duplicate_of(far, np.array([8.0, 8.0]), np.zeros(2)).tolist() == [-1, -1]


def test_ramp_and_noisy_or() -> None:
    assert ramp(0.5, 0.0, 1.0) == 0.5 and ramp(0.5, 1.0, 0.0) == 0.5
    assert ramp(2.0, 0.0, 1.0) == 1.0 and ramp(math.nan, 0.0, 1.0) == 0.0
    # 1 - (1 - 0.5)(1 - 0.5) = 0.75
    assert noisy_or({"a": 0.5, "b": 0.5}) == pytest.approx(0.75)


def test_roc_auc_and_precision_by_hand() -> None:
    # bad rows score 0.9 and 0.4, good rows 0.5, 0.1, 0.1: of the 2 x 3 pairs the bad row
    # wins 3 (0.9) + 2 (0.4 > 0.1 twice) = 5, so AUC = 5/6
    scores = [0.9, 0.5, 0.4, 0.1, 0.1]
    kinds = ["moved", "", "lung", "", ""]
    assert roc_auc(scores, [bool(k) for k in kinds]) == pytest.approx(5 / 6)
    ranking = score_ranking(scores, kinds)
    # k = 2: the top two are 0.9 (bad) and 0.5 (good)
    assert ranking.k == 2 and ranking.precision_at_k == 0.5
    assert ranking.missed == {"lung": 1}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_writes_the_rows_as_given_sorted_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_folder(tmp_path, IDENTITY)
    given = read_csv(tmp_path / "annotations.csv")
    assert main(["qa", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "qa" / "suspicious.csv")
    with (tmp_path / "qa" / "suspicious.csv").open() as fh:
        header = fh.readline().strip().split(",")
    assert header == [*given[0].keys(), "suspicion", "reasons"]
    assert sorted(tuple(r[c] for c in given[0]) for r in rows) == sorted(
        tuple(g.values()) for g in given
    )
    suspicion = [float(r["suspicion"]) for r in rows]
    assert suspicion == sorted(suspicion, reverse=True)
    assert rows[-1]["reader"].endswith("good") and rows[-1]["reasons"] == ""
    assert {"air", "outside", "duplicate"} <= {w for r in rows for w in r["reasons"].split(";")}
    out = capsys.readouterr().out
    summary = (tmp_path / "qa" / "summary.txt").read_text()
    assert "outside: 1 rows" in out and "outside: 1 rows" in summary
    assert "7 annotations scored" in summary
    signals = read_csv(tmp_path / "qa" / "signals.csv")
    assert [s["coordX"] for s in signals] == [r["coordX"] for r in rows]  # the same order
    k = next(i for i, r in enumerate(rows) if r["reasons"] == "outside")
    assert float(signals[k]["score_outside"]) == 1.0 and signals[k]["outside"] == "1"
    assert all(s["outside"] == "0" for i, s in enumerate(signals) if i != k)


def test_cli_reviewed_list_drops_rejected_and_adds_additions(tmp_path: Path) -> None:
    ct = write_folder(tmp_path, IDENTITY)
    rows = scene_rows(ct)
    record_verdict(reviews_dir(tmp_path), "1.2.3", rows[3][1], 6.0, "rejected", "ann")
    added = world(ct, (12, 48, 62))
    record_verdict(reviews_dir(tmp_path), "1.2.3", added, 5.0, "added", "ann")
    assert main(["qa", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = read_csv(tmp_path / "out" / "suspicious.csv")
    readers = {r["reader"] for r in out}
    assert "r3-air" not in readers and len(out) == len(rows)  # one dropped, one added
    addition = next(r for r in out if r["reader"] == "")
    assert float(addition["coordX"]) == pytest.approx(added[0], abs=1e-3)


def test_cli_refuses_a_folder_without_annotations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_folder(tmp_path, IDENTITY)
    (tmp_path / "annotations.csv").unlink()
    assert main(["qa", str(tmp_path)]) == 2
    assert "annotations.csv" in capsys.readouterr().err
    assert not (tmp_path / "qa").exists()


def test_cli_refuses_a_2d_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_folder(tmp_path, IDENTITY)
    config = ModelConfig(in_channels=3)
    ckpt = tmp_path / "rgb.pt"
    save_checkpoint(ckpt, build_model(config), config, extra={"image_size": 64})
    assert main(["qa", str(tmp_path), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "2-D" in err and str(ckpt) in err


def test_checkpoint_adds_the_models_view(tmp_path: Path) -> None:
    import torch

    write_folder(tmp_path, IDENTITY)
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    with torch.no_grad():  # a model that says "no nodule" everywhere
        model.head.bias.fill_(-20.0)
    ckpt = tmp_path / "ct.pt"
    save_checkpoint(ckpt, model, ModelConfig())
    from src_train.qa import load_ct_detector

    result = run_qa(LunaFolder(tmp_path), detector=load_ct_detector(ckpt))
    inside = [s for s in result.rows if not s.signals.outside]
    assert all(s.model is not None and s.model.probability < 0.01 for s in inside)
    good = next(s for s in result.rows if s.row.values["reader"].endswith("good"))
    assert "model" in good.verdict.reasons
    assert good.verdict.scores["model"] == pytest.approx(QaRule().model_weight)


def test_injected_label_errors_rank_above_good_rows(tiny_synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    from src_train.qa.inject import draw_errors, write_injected

    root = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, root)
    rows = draw_errors(LunaFolder(root), np.random.default_rng(3), per_kind=1)
    kinds = [r.kind for r in rows]
    assert sorted(k for k in kinds if k) == sorted(
        ["moved", "diameter", "lung", "vessel", "duplicate"]
    )
    write_injected(root, rows)
    result = run_qa(LunaFolder(root))
    by_line = {r.nodule.row + 2: r.kind for r in rows}  # header on line 1
    ranking = score_ranking(
        [s.verdict.suspicion for s in result.rows], [by_line[s.row.nodule.row] for s in result.rows]
    )
    # tiny, coarse scans (1.5-1.9 mm pixels): the benchmark measures the goals on finer ones
    assert ranking.auc >= 0.85 and ranking.precision_at_k >= 0.6, ranking
