"""Training: options, the Trainer, its run folder, events, and where it runs (DDP, AMP).

* :mod:`.config` -- :class:`TrainConfig`, every option (the CLI is generated from it);
* :mod:`.loop` -- :class:`~.loop.TrainingLoop`, the one loop with hooks every trainer subclasses;
* :mod:`.trainer` -- :class:`Trainer`, the CT run (setup, train_epoch, validate, second stage);
* :mod:`.run_data` -- the run's contract (train/validation/test series) and its one truth;
* :mod:`.run_folder` -- the run folder's files, resume and guards;
* :mod:`.events` -- :class:`ProgressEvent` and :class:`TrainResult`;
* :mod:`.runtime` -- distributed processes, device, mixed precision, stop signals.

``python -m src_train.cli train`` (or ``torchrun ... -m src_train.cli train``) runs
``lunaseg train``.
"""

from src_train.train.config import AMP_MODES, DEFAULT_DATA_DIR, ON_OFF_AUTO, TrainConfig
from src_train.train.events import Callback, ProgressEvent, TrainResult
from src_train.train.run_folder import (
    BEST,
    CONFIG_FILE,
    FINAL,
    LATEST,
    LOG_FILE,
    METRICS_FILE,
    TENSORBOARD_DIR,
    RunFolder,
)
from src_train.train.runtime import install_stop_signals, step_settings
from src_train.train.trainer import Trainer

__all__ = [
    "AMP_MODES",
    "BEST",
    "CONFIG_FILE",
    "DEFAULT_DATA_DIR",
    "FINAL",
    "LATEST",
    "LOG_FILE",
    "METRICS_FILE",
    "ON_OFF_AUTO",
    "TENSORBOARD_DIR",
    "Callback",
    "ProgressEvent",
    "RunFolder",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "install_stop_signals",
    "step_settings",
]
