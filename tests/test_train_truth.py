"""One ground truth per run, three splits in its contract, honest rankers per checkpoint.

Each test here failed before the fix it guards (issue 21): the trainer scored validation
against the raw ``annotations.csv`` while the cache applied reviews and read the malignancy
file; runs held no test series; a short run left no ``checkpoint_best.pt``; the final
checkpoint carried the best epoch's ranker.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from training import config_for, fixed_ranker

from src_train.classify import RankerExamples
from src_train.classify.ranker import RANKER_KEY
from src_train.ct import CtVolume
from src_train.errors import ConfigError, LunaSegError
from src_train.luna import ANNOTATIONS_FILE, LunaFolder
from src_train.luna.layout import MALIGNANCY_FILE
from src_train.model import load_checkpoint
from src_train.records.contract import CONTRACT_KEY, contract_of_checkpoint
from src_train.records.split import split_series
from src_train.records.truth import select_split
from src_train.reviews import reviews_dir
from src_train.reviews.record import record_verdict
from src_train.train import BEST, CONFIG_FILE, FINAL, LATEST, LOG_FILE, RunFolder, Trainer
from src_train.train.loop import BEST_FALLBACK_KEY
from src_train.train.second_stage import SECOND_STAGE_KEY, SecondStage

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _copy(tiny_synth_dir: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    return data


def _val_uid(data: Path) -> str:
    """The first series (sorted), which validates under every split rule."""
    uid = sorted(LunaFolder(data).series_uids)[0]
    assert split_series([uid, "~later"], 10).val == (uid,)
    return uid


def _near(nodules: list, center: tuple[float, float, float]) -> list:  # type: ignore[type-arg]
    return [n for n in nodules if np.linalg.norm(np.subtract(n.center_xyz_mm, center)) < 0.5]


def _volume_center_xyz(ct: CtVolume) -> tuple[float, float, float]:
    center = tuple(float(s // 2) for s in ct.shape_irc)
    return tuple(float(v) for v in ct.geometry.irc_to_xyz(center))  # type: ignore[return-value]


def test_validation_scores_against_the_reviewed_nodules(
    tiny_synth_dir: Path, tmp_path: Path
) -> None:
    """A rejected annotation is no nodule to find, an added one is: the trainer's truth (what
    validation, "best" and the second stage's labels use) follows the reviews."""
    data = _copy(tiny_synth_dir, tmp_path)
    folder = LunaFolder(data)
    uid = _val_uid(data)
    rejected = folder.nodules(uid)[0]
    added = _volume_center_xyz(folder.load(uid))
    record_verdict(reviews_dir(data), uid, rejected.center_xyz_mm, None, "rejected", "test")
    record_verdict(reviews_dir(data), uid, added, 8.0, "added", "test")

    trainer = Trainer(config_for(data, tmp_path / "cache", tmp_path / "run", epochs=1))
    try:
        trainer.setup()
        scored = trainer.truth.nodules_of([uid])
    finally:
        trainer.close()
    assert not _near(scored, rejected.center_xyz_mm), "a rejected finding is not a nodule"
    assert len(_near(scored, added)) == 1, "a reviewer's addition is a nodule to find"
    assert len(scored) == len(folder.nodules(uid))  # one out, one in


def test_validation_reads_the_annotation_file_the_cache_reads(
    tiny_synth_dir: Path, tmp_path: Path
) -> None:
    """With annotations_with_malignancy.csv present the cache builds masks from it; scoring
    must count the same nodules (here it lacks one of annotations.csv's)."""
    data = _copy(tiny_synth_dir, tmp_path)
    uid = _val_uid(data)
    lines = (data / ANNOTATIONS_FILE).read_text().splitlines()
    dropped = next(i for i, line in enumerate(lines) if line.startswith(uid + ","))
    (data / MALIGNANCY_FILE).write_text("\n".join(lines[:dropped] + lines[dropped + 1 :]) + "\n")

    trainer = Trainer(config_for(data, tmp_path / "cache", tmp_path / "run", epochs=1))
    try:
        trainer.setup()
        assert trainer.truth.annotations_path == data / MALIGNANCY_FILE
        expected = [n for n in LunaFolder(data).nodules(uid) if n.is_nodule]
        assert len(trainer.truth.nodules_of([uid])) == len(expected)
        assert len(expected) == sum(line.startswith(uid + ",") for line in lines) - 1
    finally:
        trainer.close()


def test_three_splits_best_always_written_and_resume_refused_after_reviews_change(
    tiny_synth_dir: Path, tmp_path: Path
) -> None:
    """config.json and every checkpoint hold disjoint train/val/test series covering the
    folder; a run where no epoch qualifies as best still writes checkpoint_best.pt (saying
    why) so ``--split val|test`` work on it; a review after the start refuses --resume."""
    data = _copy(tiny_synth_dir, tmp_path)
    run = tmp_path / "run"
    # no tiny model reaches voxel precision 1: no epoch qualifies as best
    cfg = config_for(data, tmp_path / "cache", run, epochs=1, best_min_precision=1.0)
    result = Trainer(cfg).fit()

    uids = LunaFolder(data).series_uids
    config = json.loads((run / CONFIG_FILE).read_text())
    sets = [set(config[f"{name}_series"]) for name in ("train", "val", "test")]
    assert all(sets) and sorted(uids) == sorted(u for s in sets for u in s)
    assert sum(len(s) for s in sets) == len(uids)
    for name in (BEST, FINAL, LATEST):
        stored = load_checkpoint(run / name).extra[CONTRACT_KEY]
        assert set(stored["test_series"]) == sets[2], name
    log_text = (run / LOG_FILE).read_text()
    assert "selection set (validation) holds only 1 series" in log_text
    assert "test set holds only 1 series" in log_text

    assert result.best_epoch is None
    best = load_checkpoint(run / BEST)
    assert best.epoch == 1 and "no validated epoch qualified" in best.extra[BEST_FALLBACK_KEY]
    contract = contract_of_checkpoint(best)
    assert select_split(uids, contract, "test", run / BEST).series == sorted(sets[2])
    chosen = select_split(uids, contract, "val", run / BEST)
    assert chosen.series == sorted(sets[1]) and "selection set" in (chosen.warning or "")

    uid = sorted(sets[1])[0]
    nodule = LunaFolder(data).nodules(uid)[0]
    record_verdict(reviews_dir(data), uid, nodule.center_xyz_mm, None, "rejected", "test")
    with pytest.raises(ConfigError, match=r"reviews .*changed since the run") as info:
        Trainer(dataclasses.replace(cfg, epochs=2, resume=True)).fit()
    assert isinstance(info.value, LunaSegError)  # the CLI prints it as one line, exit 2


def test_a_run_from_before_the_test_split_resumes_on_its_two_way_split(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    cfg = config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8)
    Trainer(cfg).fit()
    new = load_checkpoint(run / LATEST).extra[CONTRACT_KEY]
    old = {k: v for k, v in new.items() if k != "test_series"}
    old.update(version=1, train_series=sorted(new["train_series"] + new["test_series"]))
    old["data"] = {k: v for k, v in new["data"].items() if k != "reviews_sha1"}
    RunFolder(run).add_to_checkpoint(LATEST, CONTRACT_KEY, old)

    with caplog.at_level("WARNING", logger="src_train"):
        result = Trainer(dataclasses.replace(cfg, epochs=2, resume=True)).fit()
    assert result.epoch == 2
    assert "started before LunaSeg kept a test set" in caplog.text
    contract = contract_of_checkpoint(load_checkpoint(run / FINAL))
    assert contract is not None and not contract.test_series
    assert sorted(contract.train_series) == old["train_series"]
    with pytest.raises(ConfigError, match=r"no test series.*--split val"):
        select_split(LunaFolder(tiny_synth_dir).series_uids, contract, "test", run / FINAL)


class _FirstEpochBest(Trainer):
    """Epoch 1 is "best" whatever its metrics (so best and final hold different networks)."""

    def best_key_of(self, val: dict[str, float]) -> tuple[float, ...] | None:
        return (1.0,) if self.best_key is None else None


def test_each_checkpoint_carries_the_ranker_of_its_own_segmenter_or_says_none(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranker = fixed_ranker()
    fitted_for: list[int] = []

    def fake_fit(*args: object, **kwargs: object) -> SecondStage:
        fitted_for.append(load_checkpoint(run / BEST).epoch)
        metrics = {"cpm": 0.5, "nodule_recall": 1.0, "fp_per_scan": 1.0}
        return SecondStage(ranker, metrics, RankerExamples())

    monkeypatch.setattr("src_train.train.trainer.fit_second_stage", fake_fit)
    run = tmp_path / "run"
    cfg = config_for(tiny_synth_dir, cache_dir, run, epochs=2, epoch_samples=8, ranker="features")
    result = _FirstEpochBest(cfg).fit()
    assert result.best_epoch == 1 and fitted_for == [1]

    best = load_checkpoint(run / BEST).extra
    assert RANKER_KEY in best and best[SECOND_STAGE_KEY]["fitted_for_epoch"] == 1
    for name in (FINAL, LATEST):
        extra = load_checkpoint(run / name).extra
        assert RANKER_KEY not in extra, f"{name} holds epoch 2's network, not epoch 1's"
        assert "carries no ranker" in extra[SECOND_STAGE_KEY]["note"]
    assert f"{FINAL} carries no ranker" in (run / LOG_FILE).read_text()


class _NeverBest(Trainer):
    """No epoch reaches the precision floor: ``best_metrics`` stays empty."""

    def best_key_of(self, val: dict[str, float]) -> tuple[float, ...] | None:
        return None


def test_second_stage_line_scores_the_segmenter_when_no_epoch_was_best(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a one-epoch segmenter finds no training nodule to fit on: fit a fixed ranker instead
    ranker = fixed_ranker()
    monkeypatch.setattr("src_train.train.second_stage.fit_ranker", lambda *a, **k: ranker)
    run = tmp_path / "run"
    cfg = config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8, ranker="features")
    result = _NeverBest(cfg).fit()
    assert result.best_epoch is None and not result.best_metrics
    lines = [ln for ln in (run / LOG_FILE).read_text().splitlines() if "second stage (" in ln]
    assert lines, "the second stage was not fitted on the tiny folder"
    assert "segmenter alone: CPM nan" not in lines[0]
    assert "segmenter alone: CPM 0." in lines[0] or "segmenter alone: CPM 1." in lines[0]
