"""``lunaseg compare``'s core: every model x loss with one budget, a report worth reading,
resumable after a stop, refusing what it must."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src_train.colors import FN_RGB, FP_RGB, TP_RGB
from src_train.errors import ConfigError, LunaSegError, OutputExistsError
from src_train.images2d.compare import (
    COMPARE_FILE,
    CompareEvent,
    load_predictions,
    run_comparison,
)
from src_train.images2d.ct_compare import CtRunRecord
from src_train.images2d.ct_report import write_ct_report
from src_train.images2d.dataset import load_image_set
from src_train.images2d.options import CompareOptions, ModelSpec
from src_train.images2d.plots import plot_examples
from src_train.images2d.results import RESULT_COLUMNS, RunRecord
from src_train.images2d.synth import SynthImageConfig, write_image_set

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "set"
    write_image_set(out, 12, seed=3, config=SynthImageConfig.tiny(), layout="flat")
    return out


def _options(data: Path, out: Path, **overrides: object) -> CompareOptions:
    options: dict[str, object] = {
        "data": str(data),
        "out": str(out),
        "models": ("unet",),
        "losses": ("bce", "dice"),
        "epochs": 2,
        "size": 32,
        "depth": 2,
        "filters": 4,
        "batch_size": 4,
        "augment": "flip",
        "device": "cpu",
        "examples": 2,
    }
    options.update(overrides)
    return CompareOptions(**options)  # type: ignore[arg-type]


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("unet", ("unet", "transpose", 16)),
        ("UNet-Bilinear", ("unet", "bilinear", 16)),
        ("unet:8", ("unet", "transpose", 8)),
        ("unet-bilinear:32", ("unet", "bilinear", 32)),
        ("segnet:8", ("segnet", "transpose", 8)),
    ],
)
def test_model_names(token: str, expected: tuple[str, str, int]) -> None:
    spec = ModelSpec.parse(token, "transpose", 16)
    assert (spec.arch, spec.up, spec.filters) == expected and spec.label == token.lower()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": ("vnet",)}, "Unknown model 'vnet'"),
        ({"models": ("segnet-bilinear",)}, "U-Net only"),
        ({"models": ("unet:wide",)}, "must be a number"),
        ({"losses": ("bce", "hinge")}, "Unknown loss"),
        ({"losses": ("bce", "bce")}, "named twice"),
        ({"rank_by": "test_iou"}, "rank_by"),
        ({"epochs": 0}, "epochs"),
        ({"split": (10, 0, 5)}, "at least 1"),
    ],
)
def test_bad_options_raise_before_any_work(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(LunaSegError, match=message):
        _options(tmp_path, tmp_path / "out", **overrides)


def test_plan_puts_every_combination_of_the_first_seed_first(tmp_path: Path) -> None:
    options = _options(tmp_path, tmp_path / "o", models=("unet", "segnet:8"), seeds=2, seed=5)
    names = [plan.name for plan in options.plan()]
    assert names[:4] == ["unet_bce_s5", "unet_dice_s5", "segnet-8_bce_s5", "segnet-8_dice_s5"]
    assert names[4:] == [n.replace("_s5", "_s6") for n in names[:4]]


# -- a whole comparison ----------------------------------------------------------------------
@pytest.mark.slow
def test_comparison_writes_results_and_a_report(image_dir: Path, tmp_path: Path) -> None:
    events: list[CompareEvent] = []
    out = tmp_path / "out"
    options = _options(image_dir, out, models=("unet", "segnet"))
    result = run_comparison(options, callbacks=[events.append], command_line=["lunaseg", "x"])
    assert not result.stopped and len(result.records) == 4
    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == RESULT_COLUMNS
    assert {(r["model"], r["loss"]) for r in table} == {
        (m, loss) for m in ("unet", "segnet") for loss in ("bce", "dice")
    }
    # rows in rank order, chosen on validation: val_iou never rises down the table
    assert [r["rank"] for r in table] == ["1", "2", "3", "4"]
    val = [float(r["val_iou"]) for r in table]
    assert val == sorted(val, reverse=True)
    assert all(len(r.val_per_image["iou"]) == len(r.val_keys) > 0 for r in result.records)
    ties = [row["tied_with_first"] == "yes" for row in table]
    assert ties == [result.tied > 1 and i < result.tied for i in range(len(table))]
    assert [label for label, _ in result.ranking] == [f"{r['model']} + {r['loss']}" for r in table]
    for row in table:
        assert 0 <= float(row["test_iou"]) <= 1 and int(row["params"]) > 0
        assert float(row["seconds_per_epoch"]) > 0 and row["epochs"] == "2"
    # every run has the same split and budget
    records = result.records
    assert len({tuple(r.test_keys) for r in records}) == 1
    assert {r.epochs for r in records} == {2}
    # the test scores are those of the saved predictions
    data = load_image_set(image_dir, 32)
    truth = data.masks[data.indices(records[0].test_keys)]
    pred = load_predictions(out / "runs" / records[0].name)
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert records[0].test_per_image["iou"] == pytest.approx(iou.tolist())
    # the report links figures that exist and has a generated conclusion
    report = (out / "report.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", report)
    assert len(links) == 4 + 2 * 4 and all((out / link).stat().st_size > 1000 for link in links)
    assert "## Conclusion" in report and "validation IoU" in report
    assert "wins on test" not in report and "never used to rank" in report
    assert "| rank | model | loss |" in report and "## Commands" in report and "lunaseg x" in report
    kinds = [e.kind for e in events]
    assert kinds.count("run") == 4 and kinds.count("scored") == 4 and kinds[-1] == "end"
    assert any(e.kind == "train" and e.train and e.train.kind == "epoch" for e in events)


def test_examples_figure_shows_the_colour_code(tmp_path: Path) -> None:
    """One test image, prediction shifted right of the truth: all three colours appear."""
    truth = np.zeros((1, 40, 40), bool)
    truth[0, 10:30, 5:25] = True
    pred = np.roll(truth, 10, axis=2)
    images = np.full((1, 40, 40, 3), 128, np.uint8)
    record = RunRecord(
        "r",
        "unet",
        "unet",
        "transpose",
        4,
        2,
        "dice",
        0,
        10,
        1,
        1,
        1.0,
        {},
        {},
        ["k"],
        {"iou": [1 / 3]},
    )
    path = plot_examples(record, images, truth, pred, tmp_path / "ex.png", count=1)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)

    def share(rgb: tuple[int, int, int]) -> float:
        blended = np.rint(0.55 * 128 + 0.45 * np.array(rgb))
        return float((np.abs(pixels - blended).max(axis=1) <= 3).mean())

    assert min(share(TP_RGB), share(FN_RGB), share(FP_RGB)) > 0.005


@pytest.mark.slow
def test_stopped_comparison_resumes_where_it_stopped(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stop_after = {"scored": 0}

    def count(event: CompareEvent) -> None:
        if event.kind == "scored":
            stop_after["scored"] += 1
        # stop inside the second run's second epoch
        if (
            event.kind == "train"
            and event.run_index == 2
            and event.train
            and event.train.epoch == 2
        ):
            stop_after["stop"] = 1

    first = run_comparison(
        _options(image_dir, out),
        callbacks=[count],
        should_stop=lambda: "stop" in stop_after,
        command_line=["lunaseg", "compare", "first"],
    )
    assert first.stopped and [r.name for r in first.records] == ["unet_bce_s0"]
    assert not (out / "results.csv").exists()
    with pytest.raises(OutputExistsError, match="--resume"):
        run_comparison(_options(image_dir, out))
    with pytest.raises(ConfigError, match="option epochs was 2, now 3"):
        run_comparison(_options(image_dir, out, epochs=3, resume=True))
    events: list[CompareEvent] = []
    second = run_comparison(
        _options(image_dir, out, resume=True),
        callbacks=[events.append],
        command_line=["lunaseg", "compare", "again"],
    )
    assert not second.stopped and len(second.records) == 2
    assert [(e.kind, e.run) for e in events if e.kind in ("skip", "run")] == [
        ("skip", "unet_bce_s0"),
        ("run", "unet_dice_s0"),
    ]
    assert "resuming" in next(e.message for e in events if e.kind == "run")
    assert second.records[0].test == first.records[0].test
    saved = json.loads((out / COMPARE_FILE).read_text())
    assert saved["split"]["test"] == second.records[1].test_keys
    assert saved["commands"] == [["lunaseg", "compare", "first"], ["lunaseg", "compare", "again"]]
    report = (out / "report.md").read_text()
    assert "lunaseg compare first\nlunaseg compare again" in report


def test_refusals(image_dir: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep")
    with pytest.raises(OutputExistsError, match="did not write"):
        run_comparison(_options(image_dir, foreign, overwrite=True))
    with pytest.raises(ConfigError, match="Cannot resume"):
        run_comparison(_options(image_dir, tmp_path / "new", resume=True))
    luna = tmp_path / "luna"
    luna.mkdir()
    (luna / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    with pytest.raises(ConfigError, match="transposed-convolution upsampling only"):
        run_comparison(_options(luna, tmp_path / "o2", models=("unet-bilinear",)))
    assert not (tmp_path / "o2").exists(), "refused before OUT is touched"


# -- a CT folder -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_ct_folder_is_compared_with_the_ct_pipeline(tiny_synth_dir: Path, tmp_path: Path) -> None:
    """Each run trains as 'lunaseg train' does; the ranking is the validation Dice of the last
    validated epoch, which is the run's own metrics.jsonl row."""
    out = tmp_path / "ct"
    options = _options(
        tiny_synth_dir,
        out,
        models=("unet", "segnet"),
        losses=("dice",),
        epochs=1,
        epoch_samples=8,
        cache_dir=str(tmp_path / "cache"),
        augment="flip,jitter",
    )
    events: list[CompareEvent] = []
    result = run_comparison(options, callbacks=[events.append], command_line=["lunaseg", "c"])
    assert not result.stopped and [r.name for r in result.records] == [
        "unet_dice_s0",
        "segnet_dice_s0",
    ]
    for record in result.records:
        run = out / "runs" / record.name
        config = json.loads((run / "config.json").read_text())["train_config"]
        assert (config["model"], config["loss"], config["epochs"]) == (record.arch, "dice", 1)
        assert config["augment"] == "flip", "the RGB-only jitter is dropped for CT"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert record.val["dice"] == pytest.approx(rows[-1]["val/voxel_f1"])
        assert record.val["iou"] == pytest.approx(rows[-1]["val/voxel_iou"])
        assert record.val_series >= 1 and record.train_series >= 1
    assert result.ranking[0][1] == max(r.val["dice"] for r in result.records)
    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [row["model"] for row in table] == [label.split(" + ")[0] for label, _ in result.ranking]
    report = (out / "report.md").read_text()
    assert "ranked by validation Dice" in report and "lunaseg infer" in report
    assert (out / "figures" / "curves_all.png").stat().st_size > 1000
    assert any(e.kind == "train" and e.train and e.train.kind == "epoch" for e in events)
    # a second call resumes nothing and rewrites the report from the saved records
    again = run_comparison(CompareOptions(**{**options.to_dict(), "resume": True}))
    assert [r.val for r in again.records] == [r.val for r in result.records]


def _ct_record(name: str, dice: float, test_series: int) -> CtRunRecord:
    val = {"dice": dice, "iou": dice / (2 - dice), "precision": 0.5, "recall": 0.5, "cpm": 0.4}
    return CtRunRecord(
        name=name,
        model="unet",
        arch="unet",
        filters=8,
        depth=2,
        loss=name.split("_")[1],
        seed=0,
        params=1000,
        epochs=2,
        last_epoch=2,
        val=val,
        best_epoch=2,
        best_val=val,
        seconds_per_epoch=1.0,
        train_series=7,
        val_series=2,
        history=[{"epoch": 1.0, "train/loss": 0.9}, {"epoch": 2.0, "train/loss": 0.5}],
        test_series=test_series,
    )


@pytest.mark.parametrize("test_series", [3, 0])
def test_the_ct_report_counts_the_test_series_and_scores_checkpoints_there(
    tmp_path: Path, test_series: int
) -> None:
    out = tmp_path / "ct"
    options = _options(tmp_path / "data", out)
    records = [_ct_record("unet_bce_s0", 0.4, test_series), _ct_record("unet_dice_s0", 0.5, 0)]
    report = write_ct_report(out, options, records)["report"].read_text()
    infer = [line for line in report.splitlines() if line.startswith("lunaseg infer")]
    assert len(infer) == 2
    assert "7 training series, 2 validation series (the ranking" in report
    if test_series:
        assert "3 test series (no choice looks at them" in report
        assert all(line.endswith("--split test") for line in infer)
    else:
        assert "no test series" in report and not any("--split" in line for line in infer)
