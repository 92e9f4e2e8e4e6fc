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
    val_iou: float | None = None,
    val_per_image: list[float] | None = None,
    precision: float = 0.9,
    recall: float = 0.9,
    best_epoch: int = 6,
    params: int = 1000,
) -> RunRecord:
    images = per_image or [iou] * 4
    val = iou - 0.01 if val_iou is None else val_iou
    val_images = val_per_image or [val] * 4
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
        val={"iou": val, "dice": val + 0.05, "loss": 0.3},
        test={
            "iou": iou,
            "iou_score": iou / 2,
            "dice": iou + 0.05,
            "precision": precision,
            "recall": recall,
        },
        test_keys=["a", "b", "c", "d"],
        test_per_image={"iou": images},
        val_keys=["v1", "v2", "v3", "v4"],
        val_per_image={"iou": val_images},
    )


def _one_seed() -> list[RunRecord]:
    """Validation IoU 0.80, 0.75, 0.78, 0.70 (the same as test, for easy reading), each image of
    a run scoring its mean: no image noise, one seed, so no run-to-run noise is measured."""
    return [
        _run("unet", "dice", 0.80, val_iou=0.80, best_epoch=10),
        _run("unet", "bce", 0.75, val_iou=0.75, precision=0.95, recall=0.70),
        _run("segnet", "dice", 0.78, val_iou=0.78, precision=0.7, recall=0.95),
        _run("segnet", "bce", 0.70, val_iou=0.70, params=600),
    ]


def test_winner_gap_losses_and_models_from_the_numbers() -> None:
    result = conclude(aggregate(_one_seed()), "val_iou", baselines={"whole image": 0.25})
    text = "\n".join(result.lines)
    assert result.winner.label == "unet + dice" and result.tied == 1
    assert result.gap == pytest.approx(0.02)
    assert "ahead of segnet + dice (0.780) by 0.020" in text
    assert "last is segnet + bce (0.700)" in text
    assert "**dice** is the best loss for every model" in text
    assert "**unet** is the best model with every loss (by 0.020 to 0.050)" in text
    assert "whole image 0.250" in text
    assert "higher on 4 and lower on 0" in text
    assert "still improving" in text, "best epoch 10 of 10"


def test_validation_chooses_and_test_is_only_reported() -> None:
    """Issue 21 defect 3: the winner was picked on the test images."""
    records = [
        _run("unet", "bce", 0.70, val_iou=0.85, val_per_image=[0.86, 0.84, 0.85, 0.85]),
        _run("segnet", "bce", 0.90, val_iou=0.60, val_per_image=[0.61, 0.59, 0.6, 0.6]),
    ]
    result = conclude(aggregate(records))
    assert result.metric == "val_iou"
    assert result.winner.label == "unet + bce" and result.tied == 1
    text = "\n".join(result.lines)
    assert "**unet + bce** is chosen on validation IoU: 0.850" in text
    assert "unet + bce test IoU 0.700" in text and "never used to rank" in text
    with pytest.raises(ConfigError, match="Cannot rank by 'test_iou'"):
        conclude(aggregate(records), "test_iou")


def test_gaps_within_the_validation_image_noise_are_ties(tmp_path: Path) -> None:
    """One seed; per-image validation scores that swing by 0.2 around means 0.001 apart."""
    records = [
        _run("unet", "bce", 0.8, val_iou=0.801, val_per_image=[1.0, 0.6, 0.9, 0.704]),
        _run("unet", "dice", 0.8, val_iou=0.800, val_per_image=[0.6, 1.0, 0.7, 0.9]),
        _run("segnet", "bce", 0.8, val_iou=0.500, val_per_image=[0.5, 0.5, 0.5, 0.5]),
    ]
    result = conclude(aggregate(records), baselines={"whole image": 0.2})
    text = "\n".join(result.lines)
    assert result.tied == 2 and result.beyond_noise is False
    assert "wins" not in text and "is chosen" not in text
    assert "a tie** between unet + bce (0.801), unet + dice (0.800)" in text
    assert "validation images SD" in text and "seeds not measured" in text
    # the image noise is the bootstrap SD of the mean paired difference
    diff = np.array([0.4, -0.4, 0.2, -0.196])
    assert result.noise_sd == pytest.approx(diff.std() / 2, rel=0.15)
    path = write_results_csv(tmp_path / "results.csv", result.ranking, result.tied)
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["tied_with_first"] for r in table] == ["yes", "yes", "no"]


def test_precision_and_recall_explain_each_loss() -> None:
    text = "\n".join(conclude(aggregate(_one_seed())).lines)
    # bce: precision (0.95 + 0.9) / 2 = 0.925, recall (0.7 + 0.9) / 2 = 0.8 -> under-segments
    assert "bce: precision 0.925, recall 0.800: under-segments" in text
    # dice: precision 0.8, recall 0.925 -> over-segments
    assert "dice: precision 0.800, recall 0.925: over-segments" in text


def test_ranking_metric_can_change_the_winner() -> None:
    records = [_run("unet", "dice", 0.80), _run("unet", "bce", 0.75)]
    records[1].val["dice"] = 0.99
    assert conclude(aggregate(records), "val_dice").winner.loss == "bce"
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
        _run("unet", "dice", 0.80, val_iou=0.80),
        _run("unet", "bce", 0.74, val_iou=0.74),
        _run("unet", "dice", dice_1, seed=1, val_iou=dice_1),
        _run("unet", "bce", bce_1, seed=1, val_iou=bce_1),
    ]
    rows = aggregate(records)
    assert [len(r.seeds) for r in rows] == [2, 2]
    result = conclude(rows)
    # sample variances over two seeds: (a - b)^2 / 2; pooled over the two rows; no image noise
    # (every image of a run scores its mean, and the seeds' images are averaged)
    var = np.mean([(0.80 - dice_1) ** 2 / 2, (0.74 - bce_1) ** 2 / 2])
    assert result.noise_sd == pytest.approx(math.sqrt(var) * math.sqrt(1 / 2 + 1 / 2))
    assert result.beyond_noise is beyond
    assert ("beyond the noise" in "\n".join(result.lines)) is beyond
    assert (result.tied == 1) is beyond


def test_single_run_and_empty_input() -> None:
    result = conclude(aggregate([_run("unet", "dice", 0.8, best_epoch=2)]))
    assert result.lines[0].startswith("Only unet + dice ran")
    assert any("did not improve in the later epochs" in line for line in result.lines)
    with pytest.raises(ConfigError, match="No finished runs"):
        conclude([])


def test_results_csv_lists_rows_in_rank_order_with_val_iou(tmp_path: Path) -> None:
    records = [*_one_seed(), _run("unet", "dice", 0.70, seed=1, val_iou=0.70)]
    result = conclude(aggregate(records))
    path = write_results_csv(tmp_path / "results.csv", result.ranking, result.tied)
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == RESULT_COLUMNS
    # validation means: segnet+dice 0.78, unet+dice (0.80 + 0.70) / 2, unet+bce 0.75, ...
    assert [(r["rank"], r["model"], r["loss"]) for r in table] == [
        ("1", "segnet", "dice"),
        ("2", "unet", "dice"),
        ("3", "unet", "bce"),
        ("4", "segnet", "bce"),
    ]
    assert [float(r["val_iou"]) for r in table] == pytest.approx([0.78, 0.75, 0.75, 0.70])
    second = table[1]
    assert float(second["test_iou"]) == pytest.approx(0.75) and second["seeds"] == "2"
    assert float(second["test_iou_sd"]) == pytest.approx(np.std([0.8, 0.7], ddof=1))
    assert table[0]["test_iou_sd"] == "", "one seed: no SD"
    assert int(table[3]["params"]) == 600


def test_runs_that_do_not_beat_trivial_masks_are_called_out() -> None:
    rows = aggregate(_one_seed())  # validation IoU 0.80, 0.75, 0.78, 0.70
    text = "\n".join(conclude(rows, baselines={"whole image": 0.72}).lines)
    assert "2 of 4 runs do not beat the best trivial mask by 0.05" in text
    assert "unet + bce seed 0 (0.750), segnet + bce seed 0 (0.700)" in text
    text = "\n".join(conclude(rows, baselines={"whole image": 0.78}).lines)
    assert "No run beats the best trivial mask" in text
    assert "**No winner**" in text and "is chosen" not in text
    assert "No loss and no model is better" in text and "best loss" not in text
    text = "\n".join(conclude(rows, baselines={"whole image": 0.3}).lines)
    assert "do not beat" not in text and "No run" not in text


def test_runs_that_all_score_the_same_are_one_tie() -> None:
    """Four runs that learned nothing (every score 0): a tie of all, not 'wins by 0.000'."""
    records = [
        _run(m, loss, 0.0, val_iou=0.0) for m in ("unet", "segnet") for loss in ("bce", "dice")
    ]
    result = conclude(aggregate(records), baselines={"whole image": 0.19})
    text = "\n".join(result.lines)
    assert result.tied == 4 and "wins" not in text and "by 0.000" not in text
    assert "The gap is 0.0 times that" in text and "**No winner**" in text
