"""``lunaseg train --ranker-points DIR``: another folder's annotated points teach the second
stage's classifier, without touching the run's split or the segmenter.

The folder here is the tiny data set's generator run for one scan more (same seed): its first
series are the data folder's own (validation and test included) and must be left out; only the
extra series lends its points.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SYNTH_SCANS, TINY_SYNTH_SEED
from training import config_for, fixed_ranker

from src_train.classify import Ranker, RankerExamples
from src_train.errors import ConfigError
from src_train.luna import ANNOTATIONS_FILE, LunaFolder
from src_train.model import load_checkpoint
from src_train.records.contract import DataContract, contract_of_checkpoint
from src_train.records.split import split_series
from src_train.records.truth import scoring_truth, select_split
from src_train.synth import SynthConfig, write_dataset
from src_train.train import BEST, LOG_FILE, Trainer
from src_train.train.run_data import point_series
from src_train.train.second_stage import iter_folder_points

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def points_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data set's generator, one scan further: the data folder's 4 series + 1."""
    out = tmp_path_factory.mktemp("ranker_points") / "more"
    write_dataset(
        out, n_scans=TINY_SYNTH_SCANS + 1, seed=TINY_SYNTH_SEED, config=SynthConfig.tiny()
    )
    return out


def _new_series(tiny_synth_dir: Path, points_dir: Path) -> list[str]:
    known = set(LunaFolder(tiny_synth_dir).series_uids)
    new = [u for u in LunaFolder(points_dir).series_uids if u not in known]
    assert len(new) == 1, "the generator's prefix property this test relies on changed"
    return new


def test_only_series_outside_the_data_folder_lend_their_points(
    tiny_synth_dir: Path, points_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    data = LunaFolder(tiny_synth_dir)
    cfg = config_for(
        tiny_synth_dir, cache_dir, tmp_path / "run", ranker="classifier", ranker_points=points_dir
    )
    uids = point_series(cfg, data)
    assert list(uids) == _new_series(tiny_synth_dir, points_dir)
    split = split_series(data.series_uids, cfg.val_stride)
    assert not set(uids) & set(split.val + split.test + split.train)


def test_a_points_folder_that_cannot_serve_is_refused_before_training(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    def config(points: Path, ranker: str = "combined"):  # type: ignore[no-untyped-def]
        return config_for(
            tiny_synth_dir, cache_dir, tmp_path / "run", ranker=ranker, ranker_points=str(points)
        )

    with pytest.raises(ConfigError, match="--ranker features has none"):
        config(tmp_path, ranker="features")
    with pytest.raises(ConfigError, match=r"--ranker-points .*nope does not exist"):
        point_series(config(tmp_path / "nope"), LunaFolder(tiny_synth_dir))
    with pytest.raises(ConfigError, match="is the data folder itself"):
        point_series(config(tiny_synth_dir), LunaFolder(tiny_synth_dir))
    same = tmp_path / "copy"
    shutil.copytree(tiny_synth_dir, same)
    with pytest.raises(ConfigError, match="holds no series outside"):
        point_series(config(same), LunaFolder(tiny_synth_dir))
    (same / ANNOTATIONS_FILE).unlink()
    with pytest.raises(ConfigError, match=r"has no annotations\.csv"):
        point_series(config(same), LunaFolder(tiny_synth_dir))
    assert not (tmp_path / "run").exists()


def test_folder_points_are_the_series_nodule_centres_and_candidates(points_dir: Path) -> None:
    folder = LunaFolder(points_dir)
    uid = folder.series_uids[0]
    steps = iter_folder_points(folder, [uid])
    seen = []
    try:
        while True:
            seen.append(next(steps))
    except StopIteration as finished:
        examples: RankerExamples = finished.value
    nodules = scoring_truth(folder).nodules[uid]
    candidates = folder.candidates(uid)
    assert len(nodules) >= 1 and len(candidates) > len(nodules)
    expected = [1] * len(nodules) + [int(c.is_nodule) for c in candidates]
    np.testing.assert_array_equal(examples.extra_labels, expected)
    assert examples.extra_series == [uid] * len(expected)
    assert len(examples.candidates) == 0, "no segmenter candidate comes from a points folder"
    assert seen[-1].done == seen[-1].total == 1


def test_a_run_fits_its_second_stage_on_the_points_and_its_checkpoint_says_whose(
    tiny_synth_dir: Path,
    points_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted_on: list[RankerExamples] = []

    def fake_fit(kind: str, examples: RankerExamples, *args: object, **kwargs: object) -> Ranker:
        fitted_on.append(examples)
        return fixed_ranker()

    monkeypatch.setattr("src_train.train.second_stage.fit_ranker", fake_fit)
    run = tmp_path / "run"
    cfg = config_for(
        tiny_synth_dir,
        cache_dir,
        run,
        epochs=1,
        epoch_samples=8,
        ranker="classifier",
        ranker_points=str(points_dir),
    )
    Trainer(cfg).fit()
    (new,) = _new_series(tiny_synth_dir, points_dir)
    assert len(fitted_on) == 1 and new in fitted_on[0].extra_series
    examples = fitted_on[0]
    lent = [s for s in examples.extra_series if s == new]
    folder = LunaFolder(points_dir)
    assert len(lent) == len(scoring_truth(folder).nodules[new]) + len(folder.candidates(new))
    assert "also learns the points of 1 series" in (run / LOG_FILE).read_text()

    contract = contract_of_checkpoint(load_checkpoint(run / BEST))
    assert contract is not None and contract.point_series == (new,)
    chosen = select_split(folder.series_uids, contract, "all", run / BEST)
    assert chosen.warning is not None and "1 of the 5 series lent their annotated points" in (
        chosen.warning
    )
    assert new in chosen.training_series


def test_the_contract_keeps_the_point_series_and_names_a_change() -> None:
    stored = DataContract(("a",), ("b",), point_series=("p1", "p2"))
    assert DataContract.from_dict(stored.to_dict()).point_series == ("p1", "p2")
    assert DataContract.from_dict({**stored.to_dict(), "point_series": None}).point_series == ()
    lines = stored.differences(DataContract(("a",), ("b",)))
    assert lines == [
        "--ranker-points: the run's second stage learns from the points of 2 series of another "
        "folder, now of 0 (another set of series)"
    ]
