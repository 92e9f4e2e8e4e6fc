"""The 2-D training loop: it learns (beats trivial masks), keeps a run folder, stops between
batches and resumes exactly as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src_train.errors import ConfigError, OutputExistsError
from src_train.images2d.dataset import ImageSet, Split, SplitConfig, load_image_set, split_keys
from src_train.images2d.metrics import score_images
from src_train.images2d.predict import predict_masks
from src_train.images2d.synth import SynthImageConfig, write_image_set
from src_train.images2d.trainer import (
    BEST,
    FINAL,
    LATEST,
    METRICS_FILE,
    ImageTrainConfig,
    ImageTrainer,
)
from src_train.model import load_checkpoint, load_model
from src_train.train.events import ProgressEvent

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """30 synthetic images (about 64 x 80), loaded at 48 x 48."""
    out = tmp_path_factory.mktemp("synth2d") / "set"
    write_image_set(out, 30, seed=0, config=SynthImageConfig.tiny())
    return load_image_set(out, size=48)


def _config(run_dir: Path, **overrides: object) -> ImageTrainConfig:
    options: dict[str, object] = {
        "run_dir": str(run_dir),
        "depth": 2,
        "filters": 4,
        "epochs": 2,
        "batch_size": 4,
        "augment": "flip,jitter",
        "device": "cpu",
    }
    options.update(overrides)
    return ImageTrainConfig(**options)  # type: ignore[arg-type]


def _small_split(data: ImageSet) -> Split:
    return split_keys(data.keys[:12], SplitConfig(seed=1))


@pytest.mark.slow
def test_short_training_beats_trivial_masks(tiny_set: ImageSet, tmp_path: Path) -> None:
    split = split_keys(tiny_set.keys, SplitConfig(seed=0))
    cfg = _config(
        tmp_path / "run", depth=3, filters=8, epochs=8, lr=0.01, loss="bce", augment="flip"
    )
    result = ImageTrainer(cfg, tiny_set, split).fit()
    assert result.best_epoch is not None and not result.stopped
    model, _ = load_model(tmp_path / "run" / BEST)
    test = tiny_set.indices(split.test)
    truth = tiny_set.masks[test]
    got = score_images(predict_masks(model, tiny_set.images[test]), truth).mean()["iou"]
    all_lesion = score_images(np.ones_like(truth), truth).mean()["iou"]
    no_lesion = score_images(np.zeros_like(truth), truth).mean()["iou"]
    assert no_lesion == 0.0
    assert got > all_lesion + 0.15, f"test IoU {got:.3f} vs all-lesion {all_lesion:.3f}"


def test_run_folder_metrics_and_events(tiny_set: ImageSet, tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    split = _small_split(tiny_set)
    result = ImageTrainer(
        _config(tmp_path / "run"), tiny_set, split, callbacks=[events.append]
    ).fit()
    run = tmp_path / "run"
    for name in (LATEST, BEST, FINAL, METRICS_FILE, "config.json", "train.log"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2] and rows == result.history
    for key in ("train/loss", "train/iou", "train/recall", "val/loss", "val/iou", "val/dice"):
        assert all(np.isfinite(row[key]) for row in rows), key
    assert 0.0 <= rows[-1]["val/iou"] <= 1.0 and rows[-1]["seconds"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["split"]["val"] == list(split.val) and config["model_config"]["in_channels"] == 3
    kinds = [e.kind for e in events]
    assert kinds.count("epoch") == 2 and kinds[-1] == "end" and "checkpoint" in kinds
    batches = [e for e in events if e.kind == "batch" and e.epoch == 1]
    assert [e.batch for e in batches] == list(range(1, batches[0].batches + 1))
    best = load_checkpoint(run / BEST)
    assert best.epoch == result.best_epoch
    assert best.metrics["val/iou"] == max(row["val/iou"] for row in rows)
    assert result.parameters > 0 and result.seconds_per_epoch > 0


def test_stop_and_resume_train_as_an_uninterrupted_run(tiny_set: ImageSet, tmp_path: Path) -> None:
    split = _small_split(tiny_set)
    whole = ImageTrainer(_config(tmp_path / "whole", epochs=3), tiny_set, split).fit()

    def stop_in_epoch_2(event: ProgressEvent) -> None:
        if event.kind == "batch" and event.epoch == 2 and event.batch == 1:
            trainer.request_stop()

    trainer = ImageTrainer(_config(tmp_path / "cut", epochs=3), tiny_set, split, [stop_in_epoch_2])
    cut = trainer.fit()
    assert cut.stopped and cut.epoch == 1
    assert load_checkpoint(tmp_path / "cut" / LATEST).epoch == 1
    assert not (tmp_path / "cut" / FINAL).exists()
    resumed = ImageTrainer(_config(tmp_path / "cut", epochs=3, resume=True), tiny_set, split).fit()
    assert not resumed.stopped and len(resumed.history) == 3
    a = load_checkpoint(tmp_path / "whole" / FINAL).model_state
    b = load_checkpoint(tmp_path / "cut" / FINAL).model_state
    assert all(torch.equal(a[k], b[k]) for k in a), "same weights as the uninterrupted run"
    assert [r["val/iou"] for r in resumed.history] == [r["val/iou"] for r in whole.history]
    lines = (tmp_path / "cut" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_used_run_folder_and_bad_resume_are_refused(tiny_set: ImageSet, tmp_path: Path) -> None:
    split = _small_split(tiny_set)
    with pytest.raises(ConfigError, match="Cannot resume"):
        ImageTrainer(_config(tmp_path / "run", resume=True), tiny_set, split).fit()
    ImageTrainer(_config(tmp_path / "run", epochs=1), tiny_set, split).fit()
    with pytest.raises(OutputExistsError, match="already holds a run"):
        ImageTrainer(_config(tmp_path / "run"), tiny_set, split).fit()
    other = split_keys(tiny_set.keys[:12], SplitConfig(seed=2))
    with pytest.raises(ConfigError, match="another train/val/test split"):
        ImageTrainer(_config(tmp_path / "run", resume=True), tiny_set, other).fit()
    ImageTrainer(_config(tmp_path / "run", epochs=1, overwrite=True), tiny_set, split).fit()
    rows = (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
    assert len(rows) == 1, "overwrite starts the metrics over"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss": "hinge"}, "Unknown loss"),
        ({"augment": "flip,wobble"}, "wobble"),
        ({"epochs": 0}, "epochs"),
        ({"up": "nearest"}, "upsampling"),
        ({"resume": True, "overwrite": True}, "contradict"),
    ],
)
def test_bad_options_raise(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **overrides)


def test_segnet_ignores_the_unet_upsampling(tmp_path: Path) -> None:
    cfg = _config(tmp_path, model="segnet", up="bilinear")
    assert cfg.model_config().arch == "segnet" and cfg.model_config().up == "transpose"
