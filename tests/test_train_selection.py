"""Choosing "best", the epoch's sample order and the hard-negative pool: hand-made answers."""

from __future__ import annotations

import pytest

from src_train.train.sampling import HARD_MIN_PIXELS, EpochSampler, HardNegativePool
from src_train.train.validation import DEFAULT_BEST_MIN_PRECISION, best_key, choose_best


def _row(epoch: int, cpm: float, recall: float, precision: float) -> dict[str, float]:
    return {
        "epoch": float(epoch),
        "train/loss": 1.0,
        "val/cpm": cpm,
        "val/nodule_recall": recall,
        "val/voxel_precision": precision,
        "val/voxel_f1": 2 * precision * recall / (precision + recall),
    }


def test_best_never_picks_an_epoch_that_marks_the_body() -> None:
    """Epoch 1 marks most of the body: every nodule found, the highest CPM of the run (few
    marks rank high by chance), voxel precision 0.02. It is never "best"."""
    history = [
        _row(1, cpm=0.9, recall=1.0, precision=0.02),
        {"epoch": 2.0, "train/loss": 0.8},  # not validated
        _row(5, cpm=0.6, recall=0.8, precision=0.25),
        _row(10, cpm=0.7, recall=0.8, precision=0.19),
        _row(15, cpm=0.6, recall=0.9, precision=0.35),
    ]
    assert choose_best(history, DEFAULT_BEST_MIN_PRECISION) == 15  # CPM tie: more recall
    assert choose_best(history, 0.0) == 1
    assert choose_best(history[:2], DEFAULT_BEST_MIN_PRECISION) is None
    assert best_key({"cpm": 0.9, "voxel_precision": 0.1}, 0.2) is None


def test_best_ties_keep_the_earliest_epoch() -> None:
    history = [_row(5, 0.5, 0.5, 0.5), _row(10, 0.5, 0.5, 0.5)]
    assert choose_best(history, 0.2) == 5


@pytest.mark.parametrize(("world", "start"), [(1, 0), (1, 2), (3, 0), (3, 1)])
def test_epoch_sampler_shares_and_resumes(world: int, start: int) -> None:
    n, batch = 20, 3
    shares = [EpochSampler(n, batch, rank, world).indices() for rank in range(world)]
    assert sorted({i for share in shares for i in share}) == list(range(n))
    assert len({len(share) for share in shares}) == 1, "every process takes as many steps"
    for rank in range(world):
        sampler = EpochSampler(n, batch, rank, world, start_batch=start)
        whole = shares[rank]
        assert (
            list(sampler) == whole[start * batch :] and len(sampler) == len(whole) - start * batch
        )
        assert sampler.batch_indices(start) == whole[start * batch : (start + 1) * batch]


def test_hard_negative_pool_merges_decays_and_round_trips() -> None:
    pool = HardNegativePool(size=2)
    pool.record((0, 5, 10, 10), HARD_MIN_PIXELS - 1)  # too little to count
    pool.record((0, 5, 10, 10), 40)
    pool.record((0, 5, 12, 14), 60)  # same place (within a merge cell): the heavier stays
    pool.record((1, 2, 100, 100), 20)
    pool.end_epoch(found_elsewhere=[((2, 0, 0, 0), 30)])
    assert pool.locations == [(0, 5, 12, 14), (2, 0, 0, 0)]
    assert pool.found == []
    pool.end_epoch()  # nothing new: old spots decay but stay in order
    assert [w for _, w in pool.spots] == [30.0, 15.0]
    pool.record((3, 3, 3, 3), 20)
    copy = HardNegativePool.from_state(pool.state())
    assert copy.spots == pool.spots and copy.found == pool.found
    pool.end_epoch()
    assert pool.locations == [(3, 3, 3, 3), (0, 5, 12, 14)]


def test_cosine_learning_rate_falls_to_zero_over_the_epochs() -> None:
    from src_train.train import TrainConfig

    constant = TrainConfig(lr=0.01, epochs=4, lr_schedule="constant")
    assert [constant.lr_at(e) for e in (1, 4)] == [0.01, 0.01]
    cosine = TrainConfig(lr=0.01, epochs=4, lr_schedule="cosine")
    # epoch e starts at progress (e - 1) / epochs: 1, cos 45 deg, half, cos 135 deg
    expected = [0.01, 0.005 * (1 + 2**-0.5), 0.005, 0.005 * (1 - 2**-0.5)]
    assert [cosine.lr_at(e) for e in (1, 2, 3, 4)] == pytest.approx(expected)
