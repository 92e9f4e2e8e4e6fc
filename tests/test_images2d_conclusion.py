"""The generated conclusion and the results table, from hand-made numbers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from src_train.errors import ConfigError
from src_train.images2d.conclusion import conclude
from src_train.images2d.results import (
    RESULT_COLUMNS,
    RunRecord,
    aggregate,
    write_results_csv,
)


def _run(
    model: str,
    loss: str,
    iou: float,
    seed: int = 0,
    per_image: list[float] | None = None,
    precision: float = 0.9,
    recall: float = 0.9,
    best_epoch: int = 6,
    params: int = 1000,
) -> RunRecord:
    images = per_image or [iou] * 4
    return RunRecord(
        name=f"{model}_{loss}_s{seed}",
        model=model,
        arch=model,
        up="transpose",
        filters=8,
        depth=3,
        loss=loss,
        seed=seed,
        params=params,
        epochs=10,
        best_epoch=best_epoch,
        seconds_per_epoch=2.0,
        val={"iou": iou - 0.01, "loss": 0.3},
        test={
            "iou": iou,
            "iou_score": iou / 2,
            "dice": iou + 0.05,
            "precision": precision,
            "recall": recall,
        },
        test_keys=["a", "b", "c", "d"],
        test_per_image={"iou": images},
    )


def _one_seed() -> list[RunRecord]:
    return [
        _run("unet", "dice", 0.80, per_image=[0.9, 0.8, 0.7, 0.8], best_epoch=10),
        _run("unet", "bce", 0.75, precision=0.95, recall=0.70),
        _run("segnet", "dice", 0.78, per_image=[0.8, 0.9, 0.6, 0.82], precision=0.7, recall=0.95),
        _run("segnet", "bce", 0.70, params=600),
    ]


def test_winner_gap_losses_and_models_from_the_numbers() -> None:
    result = conclude(aggregate(_one_seed()), "test_iou", baselines={"whole image": 0.25})
    text = "\n".join(result.lines)
    assert result.winner.label == "unet + dice"
    assert result.gap == pytest.approx(0.02)
    assert "ahead of segnet + dice (0.780) by 0.020" in text
    assert "last is segnet + bce (0.700)" in text
    assert "not measured" in text and math.isnan(result.noise_sd) and result.beyond_noise is None
    assert "**dice** is the best loss for every model" in text
    assert "**unet** is the best model with every loss (by 0.020 to 0.050)" in text
    assert "whole image 0.250" in text
    # per image: unet+dice minus segnet+dice = [0.1, -0.1, 0.1, -0.02] -> 2 better, 2 worse
    assert "higher IoU on 2 and the lower on 2" in text
    assert "mean per-image difference 0.020" in text
    assert "still improving" in text, "best epoch 10 of 10"


def test_precision_and_recall_explain_each_loss() -> None:
    text = "\n".join(conclude(aggregate(_one_seed())).lines)
    # bce: precision (0.95 + 0.9) / 2 = 0.925, recall (0.7 + 0.9) / 2 = 0.8 -> under-segments
    assert "bce: precision 0.925, recall 0.800: under-segments" in text
    # dice: precision 0.8, recall 0.925 -> over-segments
    assert "dice: precision 0.800, recall 0.925: over-segments" in text


def test_ranking_metric_can_change_the_winner() -> None:
    records = [_run("unet", "dice", 0.80), _run("unet", "bce", 0.75)]
    records[1].test["iou_score"] = 0.9
    assert conclude(aggregate(records), "test_iou_score").winner.loss == "bce"
    with pytest.raises(ConfigError, match="Cannot rank"):
        conclude(aggregate(records), "val_loss")


@pytest.mark.parametrize(
    ("second_seed", "beyond"),
    [((0.81, 0.73), True), ((0.72, 0.79), False)],
    ids=["clear", "noisy"],
)
def test_gap_is_judged_against_seed_noise(second_seed: tuple[float, float], beyond: bool) -> None:
    dice_1, bce_1 = second_seed
    records = [
        _run("unet", "dice", 0.80),
        _run("unet", "bce", 0.74),
        _run("unet", "dice", dice_1, seed=1),
        _run("unet", "bce", bce_1, seed=1),
    ]
    rows = aggregate(records)
    assert [len(r.seeds) for r in rows] == [2, 2]
    result = conclude(rows)
    # sample variances over two seeds: (a - b)^2 / 2; pooled over the two rows
    var = np.mean([(0.80 - dice_1) ** 2 / 2, (0.74 - bce_1) ** 2 / 2])
    assert result.noise_sd == pytest.approx(math.sqrt(var) * math.sqrt(2 / 2))
    assert result.beyond_noise is beyond
    assert ("beyond seed noise" in "\n".join(result.lines)) is beyond


def test_single_run_and_empty_input() -> None:
    result = conclude(aggregate([_run("unet", "dice", 0.8, best_epoch=2)]))
    assert result.lines[0].startswith("Only unet + dice ran")
    assert any("did not improve in the later epochs" in line for line in result.lines)
    with pytest.raises(ConfigError, match="No finished runs"):
        conclude([])


def test_results_csv_has_one_row_per_model_and_loss(tmp_path: Path) -> None:
    records = [*_one_seed(), _run("unet", "dice", 0.70, seed=1)]
    rows = aggregate(records)
    path = write_results_csv(tmp_path / "results.csv", rows)
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == RESULT_COLUMNS
    assert [(r["model"], r["loss"]) for r in table] == [
        ("unet", "dice"),
        ("unet", "bce"),
        ("segnet", "dice"),
        ("segnet", "bce"),
    ]
    first = table[0]
    assert float(first["test_iou"]) == pytest.approx(0.75) and first["seeds"] == "2"
    assert float(first["test_iou_sd"]) == pytest.approx(np.std([0.8, 0.7], ddof=1))
    assert table[1]["test_iou_sd"] == "", "one seed: no SD"
    assert int(table[3]["params"]) == 600


def test_runs_that_do_not_beat_trivial_masks_are_called_out() -> None:
    rows = aggregate(_one_seed())  # test IoU 0.80, 0.75, 0.78, 0.70
    text = "\n".join(conclude(rows, baselines={"whole image": 0.72}).lines)
    assert "2 of 4 runs do not beat the best trivial mask by 0.05" in text
    assert "unet + bce seed 0 (0.750), segnet + bce seed 0 (0.700)" in text
    text = "\n".join(conclude(rows, baselines={"whole image": 0.78}).lines)
    assert "No run beats the best trivial mask" in text
    text = "\n".join(conclude(rows, baselines={"whole image": 0.3}).lines)
    assert "do not beat" not in text and "No run" not in text
