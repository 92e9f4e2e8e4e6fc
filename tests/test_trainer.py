"""The Trainer, shown rather than claimed: loss falls, checkpoints reload, resume, stop."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from training import config_for, fit_stopping_when, weights_of

from src_train.errors import AnnotationError, CheckpointError, ConfigError, OutputExistsError
from src_train.masks import DEFAULT_THRESHOLD_HU
from src_train.model import build_model, load_checkpoint, load_model, save_checkpoint
from src_train.train import (
    BEST,
    CONFIG_FILE,
    FINAL,
    LATEST,
    LOG_FILE,
    METRICS_FILE,
    TENSORBOARD_DIR,
    ProgressEvent,
    TrainConfig,
    Trainer,
)
from src_train.train.validation import choose_best

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.slow
def test_loss_falls_and_checkpoints_reload_identically(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    events: list[ProgressEvent] = []
    cfg = config_for(
        tiny_synth_dir,
        cache_dir,
        tmp_path / "run",
        epochs=4,
        epoch_samples=24,
        augment="none",
        tb_images=2,
        tensorboard=True,
    )
    trainer = Trainer(cfg, callbacks=[events.append], command_line=["pytest", "train"])
    result = trainer.fit()

    losses = [row["train/loss"] for row in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert not result.stopped and result.epoch == 4 and result.samples_seen == 4 * 24

    run = tmp_path / "run"
    for name in (CONFIG_FILE, LOG_FILE, METRICS_FILE, LATEST, BEST, FINAL):
        assert (run / name).is_file(), name
    assert list((run / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert [
        json.loads(line)["epoch"] for line in (run / METRICS_FILE).read_text().split("\n") if line
    ] == [1, 2, 3, 4]
    config = json.loads((run / CONFIG_FILE).read_text())
    assert not set(config["train_series"]) & set(config["val_series"])
    assert len(config["val_series"]) == 1  # 4 series, every 10th validates: the first

    ckpt = load_checkpoint(run / FINAL)
    assert ckpt.epoch == 4 and ckpt.samples_seen == 96
    assert ckpt.train_config == cfg.to_dict() and ckpt.command_line == ["pytest", "train"]
    assert ckpt.model_config == cfg.model_config() and ckpt.optimizer_state
    assert "sha1" in (run / LOG_FILE).read_text() and ckpt.sha1 in (run / LOG_FILE).read_text()

    # the reloaded model gives bit-identical outputs
    model, model_cfg = load_model(run / FINAL, device="cpu")
    trainer.model_plain.eval()
    x = torch.randn(3, model_cfg.in_channels, 48, 40) * 400
    with torch.no_grad():
        assert torch.equal(model(x), trainer.model_plain(x))

    # validation on epochs 1 and 4 (the last), by detection on the whole validation series;
    # the best is kept by CPM (then nodule recall, voxel F1)
    assert "val/cpm" in result.history[0] and "val/cpm" not in result.history[1]
    assert "val/cpm" in result.history[3]
    for key in ("nodule_recall", "fp_per_scan", "voxel_precision", "voxel_recall"):
        assert key in result.best_metrics
    assert result.best_epoch == choose_best(result.history, cfg.best_min_precision)
    assert load_checkpoint(run / BEST).epoch == result.best_epoch
    contract = json.loads((run / CONFIG_FILE).read_text())["contract"]
    assert contract["val_series"] == config["val_series"]
    assert load_checkpoint(run / BEST).extra["contract"] == contract, "the split travels"

    kinds = {e.kind for e in events}
    assert {"cache", "batch", "validation", "epoch", "checkpoint", "end"} <= kinds
    batch = next(e for e in events if e.kind == "batch")
    assert batch.batches == 3 and batch.samples_per_s > 0 and "loss" in batch.metrics
    json.loads(batch.to_json())


@pytest.mark.slow
def test_resume_continues_numbering_and_matches_an_uninterrupted_run(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    Trainer(config_for(tiny_synth_dir, cache_dir, tmp_path / "a", epochs=2)).fit()
    Trainer(config_for(tiny_synth_dir, cache_dir, tmp_path / "b", epochs=1)).fit()
    resumed = Trainer(config_for(tiny_synth_dir, cache_dir, tmp_path / "b", epochs=2, resume=True))
    result = resumed.fit()
    assert resumed.start_epoch == 2 and result.epoch == 2 and result.samples_seen == 32
    lines = (tmp_path / "b" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert [row["epoch"] for row in result.history] == [1, 2]
    a, b = weights_of(tmp_path / "a" / FINAL), weights_of(tmp_path / "b" / FINAL)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), (
        "resuming repeats the same data and augmentation"
    )


def test_resume_refuses_another_split_or_data_option_naming_each_difference(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    Trainer(config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8)).fit()
    stored = json.loads((run / CONFIG_FILE).read_text())["contract"]
    fresh_cache = tmp_path / "fresh-cache"
    changed = config_for(
        tiny_synth_dir,
        fresh_cache,
        run,
        epochs=2,
        epoch_samples=8,
        resume=True,
        val_stride=2,
        threshold_hu=-600.0,
    )
    with pytest.raises(ConfigError) as info:
        Trainer(changed).fit()
    lines = str(info.value).splitlines()
    assert any(line.strip() == "--val-stride: the run used 10, now 2" for line in lines)
    assert any(line.strip() == "--threshold-hu: the run used -700, now -600.0" for line in lines)
    moved = [line for line in lines if "series the run trained on would now validate" in line]
    assert len(moved) == 1 and "split: 1 series" in moved[0]
    assert "--contract stored" in str(info.value)
    assert not fresh_cache.exists(), "refused before caching"
    assert load_checkpoint(run / LATEST).epoch == 1

    # accepting the stored contract explicitly continues on the stored split and options
    keep = dataclasses.replace(changed, contract="stored", cache_dir=str(cache_dir))
    trainer = Trainer(keep)
    result = trainer.fit()
    assert result.epoch == 2 and trainer.config.val_stride == 10
    assert trainer.config.threshold_hu == -700.0
    assert json.loads((run / CONFIG_FILE).read_text())["contract"] == stored


def test_resume_of_a_run_without_a_contract_says_how_to_continue(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8)
    Trainer(cfg).fit()
    old = load_checkpoint(run / LATEST)  # as an older LunaSeg wrote it: no contract
    model = build_model(old.model_config)
    model.load_state_dict(old.model_state)
    extra = {k: v for k, v in old.extra.items() if k != "contract"}
    save_checkpoint(run / LATEST, model, old.model_config, epoch=1, samples_seen=8, extra=extra)
    resume = dataclasses.replace(cfg, epochs=2, resume=True)
    with pytest.raises(ConfigError, match=r"older LunaSeg.*--overwrite.*--contract current"):
        Trainer(resume).fit()
    result = Trainer(dataclasses.replace(resume, contract="current")).fit()
    assert result.epoch == 2
    assert load_checkpoint(run / FINAL).extra["contract"]["val_series"]


def test_resume_after_the_data_folder_grew_is_refused(tiny_synth_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data, ignore=shutil.ignore_patterns("cache"))
    run = tmp_path / "run"
    cfg = config_for(data, tmp_path / "cache", run, epochs=1, epoch_samples=8)
    Trainer(cfg).fit()
    first = sorted((data / "subset0").glob("*.mhd"))[0]
    (data / "subset1").mkdir()
    for src in (first, first.with_suffix(".raw")):  # a later download adds a series
        shutil.copyfile(src, data / "subset1" / src.name.replace(first.stem, "0.9"))
    with pytest.raises(ConfigError, match=r"data folder: the run saw 4 series, it now holds 5"):
        Trainer(dataclasses.replace(cfg, epochs=2, resume=True)).fit()


@pytest.mark.slow
def test_stop_mid_epoch_then_resume_equals_an_uninterrupted_run_bit_for_bit(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Negative crops and the hard-negative pool included: the resumed run continues at the
    next sample, with the partial epoch's counters, and ends with identical weights."""
    options = {"epochs": 3, "epoch_samples": 24, "negative_fraction": 0.5, "val_every": 2}
    whole = Trainer(config_for(tiny_synth_dir, cache_dir, tmp_path / "whole", **options)).fit()

    run = tmp_path / "run"
    _, result, _ = fit_stopping_when(
        config_for(tiny_synth_dir, cache_dir, run, **options),
        lambda e: e.kind == "batch" and e.epoch == 2 and e.batch == 1,
    )
    assert result.stopped and result.epoch == 1
    assert result.samples_seen == 24 + 8, "stopped between batches, right after batch 1"
    assert not (run / FINAL).exists()
    ckpt = load_checkpoint(run / LATEST)
    assert ckpt.epoch == 1 and ckpt.samples_seen == 32, "labelled with the last whole epoch"
    assert ckpt.extra["partial_epoch"]["epoch"] == 2
    assert ckpt.extra["partial_epoch"]["batches_done"] == 1
    load_model(run / LATEST)

    resumed = Trainer(config_for(tiny_synth_dir, cache_dir, run, resume=True, **options))
    done = resumed.fit()
    assert resumed.start_epoch == 2 and resumed.start_batch == 1
    assert not done.stopped and done.epoch == 3 and done.samples_seen == 72
    a, b = weights_of(tmp_path / "whole" / FINAL), weights_of(run / FINAL)
    assert all(torch.equal(a[k], b[k]) for k in a), "the same samples, augmentations and steps"
    assert _without_rates(done.history) == _without_rates(whole.history)


def _without_rates(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Metrics rows without the throughput columns (which depend on the machine's load)."""
    return [{k: v for k, v in row.items() if "samples_per_s" not in k} for row in history]


def test_stop_request_during_validation_keeps_the_trained_epoch(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = config_for(tiny_synth_dir, cache_dir, run, epochs=3, epoch_samples=8, val_batch_size=1)
    _, result, events = fit_stopping_when(cfg, lambda e: e.kind == "validation")
    steps = [e for e in events if e.kind == "validation"]
    assert len(steps) == 1 and steps[0].batches > 1, "stopped after one of several passes"
    assert result.stopped and result.epoch == 1 and "val/cpm" not in result.history[0]
    latest = load_checkpoint(run / LATEST)
    assert latest.epoch == 1 and latest.extra["pending_validation"] == 1
    assert not (run / BEST).exists(), "an unvalidated epoch is never best"

    # resuming validates the interrupted epoch first, then trains on
    resumed = Trainer(dataclasses.replace(cfg, epochs=2, resume=True)).fit()
    assert "val/cpm" in resumed.history[0] and resumed.epoch == 2
    assert load_checkpoint(run / BEST).epoch in (1, 2)


def test_should_stop_callable_and_request_stop() -> None:
    polled = Trainer(TrainConfig(), should_stop=lambda: True)
    assert polled.stop_requested
    asked = Trainer(TrainConfig())
    assert not asked.stop_requested
    asked.request_stop()
    assert asked.stop_requested


def test_resume_takes_the_new_learning_rate_and_drops_stray_metric_rows(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    Trainer(config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8)).fit()
    with open(run / METRICS_FILE, "a") as fh:  # a row written just before a crash
        fh.write(json.dumps({"epoch": 2.0}) + "\n")
    resumed = Trainer(
        config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8, lr=0.005, resume=True)
    )
    resumed.setup()
    try:
        assert all(g["lr"] == 0.005 for g in resumed.optimizer.param_groups)
        assert resumed.optimizer.state, "Adam's moments were restored"
        rows = (run / METRICS_FILE).read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in rows] == [1]
    finally:
        resumed.close()


def test_run_folder_guards(tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="Cannot resume"):
        Trainer(config_for(tiny_synth_dir, cache_dir, run, resume=True)).fit()
    run.mkdir(exist_ok=True)
    (run / METRICS_FILE).write_text("{}\n")  # a run whose latest checkpoint went missing
    with pytest.raises(OutputExistsError, match=r"metrics\.jsonl.*--resume"):
        Trainer(config_for(tiny_synth_dir, cache_dir, run)).fit()
    (run / METRICS_FILE).unlink()
    (run / LATEST).write_bytes(b"not a checkpoint")
    with pytest.raises(OutputExistsError, match="--resume"):
        Trainer(config_for(tiny_synth_dir, cache_dir, run)).fit()
    with pytest.raises(CheckpointError, match=LATEST):
        Trainer(config_for(tiny_synth_dir, cache_dir, run, resume=True)).fit()


def test_resume_with_other_model_options_is_refused(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    Trainer(
        config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8, tensorboard=False)
    ).fit()
    for other in ({"filters": 8}, {"model": "segnet"}):
        fresh_cache = tmp_path / f"cache-{len(other)}-{next(iter(other.values()))}"
        with pytest.raises(ConfigError, match=r"holds a model .*Resume with the run's model"):
            Trainer(
                config_for(tiny_synth_dir, fresh_cache, run, epochs=2, resume=True, **other)
            ).fit()
        assert not fresh_cache.exists(), "refused before any caching"
    assert load_checkpoint(run / LATEST).epoch == 1, "the run is untouched"


def test_resume_from_a_corrupt_latest_names_the_run_s_other_checkpoints(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    Trainer(config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8)).fit()
    final_bytes = (run / FINAL).read_bytes()
    (run / LATEST).write_bytes(b"half a checkpoint")  # e.g. a disk that filled up
    fresh_cache = tmp_path / "fresh-cache"
    resume = config_for(tiny_synth_dir, fresh_cache, run, epochs=2, epoch_samples=8, resume=True)
    with pytest.raises(CheckpointError) as info:
        Trainer(resume).fit()
    message = str(info.value)
    assert LATEST in message and "corrupt" in message
    assert f"{FINAL} (epoch 1) or {BEST} (epoch 1)" in message and "--overwrite" in message
    assert "train a new" not in message.lower()
    assert not fresh_cache.exists(), "refused before caching"
    assert (run / FINAL).read_bytes() == final_bytes, "nothing of the run was lost"

    # the advice works: copy final over latest and resume
    shutil.copyfile(run / FINAL, run / LATEST)
    result = Trainer(dataclasses.replace(resume, cache_dir=str(cache_dir))).fit()
    assert result.epoch == 2 and result.samples_seen == 16

    # with no readable alternative the error says how to start over
    (run / LATEST).write_bytes(b"")
    (run / BEST).write_bytes(b"also broken")
    (run / FINAL).unlink()
    with pytest.raises(CheckpointError, match=r"no readable checkpoint_final\.pt.*--overwrite"):
        Trainer(resume).fit()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda_is_refused_before_anything_is_written(
    tiny_synth_dir: Path, tmp_path: Path
) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=r"CUDA is not available.*--device cpu"):
            Trainer(config_for(tiny_synth_dir, cache, run, device=device)).fit()
    assert not run.exists() and not cache.exists()


def test_validation_series_with_an_empty_mask_is_a_warning_not_a_crash(
    tiny_synth_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir / "subset0", data / "subset0")
    # the validation series (the first of every val_stride) loses its annotations
    lines = (tiny_synth_dir / "annotations.csv").read_text().splitlines()
    first_uid = sorted(p.stem for p in (data / "subset0").glob("*.mhd"))[0]
    kept = [lines[0], *(line for line in lines[1:] if not line.startswith(first_uid + ","))]
    (data / "annotations.csv").write_text("\n".join(kept) + "\n")
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="src_train"):
        result = Trainer(config_for(data, tmp_path / "cache", run, epochs=1, epoch_samples=8)).fit()
    assert "hold no annotated nodule" in caplog.text
    assert result.last_metrics["val/nodule_recall"] == 0.0
    # no true voxel: recall is 1 when nothing was marked either, else 0 (metrics.overlap_scores)
    marked = result.last_metrics["val/voxel_fp"] > 0
    assert result.last_metrics["val/voxel_recall"] == (0.0 if marked else 1.0)
    assert np.isfinite(result.last_metrics["train/loss"])
    assert (run / BEST).is_file() and (run / FINAL).is_file()


def test_overwrite_starts_over(tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8)).fit()
    Trainer(
        config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8, overwrite=True)
    ).fit()
    assert len((run / METRICS_FILE).read_text().splitlines()) == 1
    assert load_checkpoint(run / FINAL).samples_seen == 8


def test_bf16_channels_last_segnet_and_every_loss_train(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    for loss in ("dice", "bce", "focal"):
        cfg = config_for(
            tiny_synth_dir,
            cache_dir,
            tmp_path / loss,
            epochs=1,
            epoch_samples=8,
            amp="bf16",
            channels_last="on",
            model="segnet",
            loss=loss,
            num_workers=1 if loss == "focal" else 0,  # one run through worker processes
        )
        trainer = Trainer(cfg)
        result = trainer.fit()
        assert trainer.amp_dtype == torch.bfloat16 and trainer.channels_last
        assert np.isfinite(result.last_metrics["train/loss"])
        _, model_cfg = load_model(tmp_path / loss / FINAL)
        assert model_cfg.arch == "segnet"


def test_stop_while_preparing_the_cache(tiny_synth_dir: Path, tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    trainer = Trainer(
        config_for(tiny_synth_dir, tmp_path / "fresh-cache", tmp_path / "run"),
        callbacks=[events.append],
        should_stop=lambda: True,
    )
    result = trainer.fit()
    assert result.stopped and result.epoch == 0 and result.samples_seen == 0
    assert not (tmp_path / "run" / LATEST).exists()
    assert [e.kind for e in events] == ["stopped", "end"]


def test_stop_requested_after_the_last_epoch_still_finishes(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8)
    _, result, events = fit_stopping_when(cfg, lambda e: e.kind == "epoch" and e.epoch == 1)
    assert not result.stopped and result.epoch == 1
    assert load_checkpoint(run / FINAL).epoch == 1
    assert events[-1].kind == "end" and events[-1].message == "done"


class _RecordingWriter:
    """Stands in for TensorBoard's SummaryWriter; keeps the image tags per step."""

    def __init__(self) -> None:
        self.images: list[tuple[str, int]] = []

    def add_image(self, tag: str, image: np.ndarray, step: int, dataformats: str) -> None:
        assert image.dtype == np.uint8 and image.ndim == 3 and dataformats == "HWC"
        self.images.append((tag, step))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_tensorboard_images_show_what_the_model_saw(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training pictures use the augmented CT under the augmented labels; validation slices
    each get their own tag."""
    drawn: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    original = Trainer._log_images

    def spy(self: Trainer, tag: str, epoch: int, image, logits, label, first=0) -> None:  # type: ignore[no-untyped-def]
        drawn.append((tag, image.detach().clone(), label.detach().clone()))
        original(self, tag, epoch, image, logits, label, first)

    monkeypatch.setattr(Trainer, "_log_images", spy)
    cfg = config_for(
        tiny_synth_dir, cache_dir, tmp_path / "run", epochs=1, augment="flip", tb_images=3
    )
    trainer = Trainer(cfg)
    trainer.setup()
    writer = _RecordingWriter()
    trainer._writer = writer
    trainer.fit()

    _, image, label = next(d for d in drawn if d[0] == "train")
    center = image[:, image.shape[1] // 2]
    assert label.any()
    # mask voxels are denser than the mask threshold in the CT the model was given (flips move
    # voxels exactly, so the augmented CT keeps its values)
    assert (center[label[:, 0]] > DEFAULT_THRESHOLD_HU - 1).all()
    val_tags = [t for t, _ in writer.images if t.startswith("val/")]
    assert val_tags == [f"val/{i}" for i in range(cfg.tb_images)]
    assert [t for t, _ in writer.images if t.startswith("train/")] == [
        f"train/{i}" for i in range(cfg.tb_images)
    ]


def test_data_folder_without_annotations_fails_before_caching(
    tiny_synth_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir / "subset0", data / "subset0")
    cache = tmp_path / "cache"
    with pytest.raises(AnnotationError, match=r"annotations\.csv"):
        Trainer(config_for(data, cache, tmp_path / "run")).fit()
    # annotations only for the validation series (the first UID): no training nodule
    lines = (tiny_synth_dir / "annotations.csv").read_text().splitlines()
    first_uid = sorted(p.stem for p in (data / "subset0").glob("*.mhd"))[0]
    kept = [lines[0], *(line for line in lines[1:] if line.startswith(first_uid + ","))]
    (data / "annotations.csv").write_text("\n".join(kept) + "\n")
    with pytest.raises(AnnotationError, match="training series"):
        Trainer(config_for(data, cache, tmp_path / "run")).fit()
    assert not cache.exists(), "nothing was cached"


def test_the_detection_threshold_shapes_validation_and_travels_with_the_checkpoint(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Validation's masks use --detection-threshold, and inference takes it from the
    checkpoint: a lower threshold never marks fewer validation voxels."""
    from src_train.infer.detector import load_detector

    marked = {}
    for threshold in (0.5, 0.2):
        run = tmp_path / f"run{threshold}"
        cfg = config_for(
            tiny_synth_dir, cache_dir, run, epochs=1, augment="none", detection_threshold=threshold
        )
        trainer = Trainer(cfg)
        result = trainer.fit()
        assert trainer.val_options.threshold == threshold
        row = result.history[-1]
        marked[threshold] = row["val/voxel_tp"] + row["val/voxel_fp"]
        assert load_detector(run / FINAL).threshold == threshold
    assert marked[0.2] >= marked[0.5]


@pytest.mark.parametrize(
    ("native_bf16", "amx", "expected"),
    [(True, True, torch.bfloat16), (True, False, None), (False, False, None)],
)
def test_auto_precision_on_a_cpu_is_bf16_only_where_amx_makes_it_faster(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool, amx: bool, expected: torch.dtype | None
) -> None:
    """A Xeon with AVX-512 bf16 but no AMX trained slower in bf16 than in fp32 (131 against 155
    samples/s, benchmarks/train_throughput.py): auto keeps fp32 (and NCHW) there."""
    from src_train import devices
    from src_train.train import runtime

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: amx)
    cpu = torch.device("cpu")
    assert runtime.step_settings("auto", "auto", cpu) == (expected, expected is not None)
    assert runtime.step_settings("bf16", "auto", cpu) == (torch.bfloat16, True)  # asked for
