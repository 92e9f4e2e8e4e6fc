"""A tiny training setup shared by the training tests (small model, short epochs, CPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from src_train.classify import Ranker
from src_train.classify.features import FEATURE_NAMES, LogisticModel
from src_train.model import load_checkpoint
from src_train.train import (
    ProgressEvent,
    TrainConfig,
    Trainer,
    TrainResult,
)
from src_train.train.config import REFERENCE_RECIPE

REPO = Path(__file__).resolve().parents[1]


# A tiny model and short epochs: the whole module must stay fast on a busy 2-core machine.
# The recipe is pinned (the reference one: no second stage, 10 epochs) so that the tests do not
# follow the defaults, which are the demo detector's recipe.
TINY = {
    **REFERENCE_RECIPE,
    "epochs": 10,
    "ranker_series": 8,
    "filters": 4,
    "depth": 2,
    "epoch_samples": 16,
    "batch_size": 8,
    "val_batch_size": 8,
    "num_workers": 0,
    "device": "cpu",
    "amp": "off",
    "lr": 0.01,
    "tensorboard": False,
    # tiny models mark much more than nodules: let any validated epoch be "best" here
    "best_min_precision": 0.0,
}


def config_for(data: Path, cache: Path, run: Path, **overrides: object) -> TrainConfig:
    options: dict[str, object] = dict(TINY)
    options.update(data_dir=str(data), cache_dir=str(cache), run_dir=str(run))
    options.update(overrides)
    return TrainConfig(**options)  # type: ignore[arg-type]


def fixed_ranker() -> Ranker:
    """A features ranker with set weights: the second stage without fitting one."""
    return Ranker(
        "features",
        logistic=LogisticModel(
            mean=[0.0] * len(FEATURE_NAMES),
            std=[1.0] * len(FEATURE_NAMES),
            weights=[0.1] * len(FEATURE_NAMES),
        ),
    )


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


def fit_stopping_when(
    cfg: TrainConfig, stop_when: Callable[[ProgressEvent], bool]
) -> tuple[Trainer, TrainResult, list[ProgressEvent]]:
    """Fit ``cfg``, requesting a stop on every event for which ``stop_when`` is true.

    Returns the trainer, its result and every event it sent, in order.
    """
    events: list[ProgressEvent] = []
    trainer: Trainer

    def stop_if(event: ProgressEvent) -> None:
        events.append(event)
        if stop_when(event):
            trainer.request_stop()

    trainer = Trainer(cfg, callbacks=[stop_if])
    return trainer, trainer.fit(), events
