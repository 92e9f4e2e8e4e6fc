"""A training run's folder, in the nnU-Net manner::

    RUN_DIR/config.json             the TrainConfig, model config, device, series split
    RUN_DIR/train.log               the log of the run
    RUN_DIR/metrics.jsonl           one JSON object per epoch (train and validation metrics)
    RUN_DIR/checkpoint_latest.pt    after every epoch and on a stop request
    RUN_DIR/checkpoint_best.pt      the best validated epoch
    RUN_DIR/checkpoint_final.pt     when the last epoch is done
    RUN_DIR/tensorboard/            scalars and CT images with TP green / FN orange / FP red

:class:`RunFolder` knows these names and guards them: a used folder is never silently reused,
an unreadable ``checkpoint_latest.pt`` names the run's checkpoints that can stand in for it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from src_train.atomic import atomic_write, write_text_atomic
from src_train.errors import CheckpointError, ConfigError, OutputExistsError
from src_train.model import Checkpoint, ModelConfig, load_checkpoint

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.jsonl"
LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
FINAL = "checkpoint_final.pt"
TENSORBOARD_DIR = "tensorboard"

#: Files that mark a run folder as used (a new run there needs --overwrite).
RUN_OUTPUTS = (LATEST, BEST, FINAL, METRICS_FILE)

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunFolder:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def latest(self) -> Path:
        """``checkpoint_latest.pt``."""
        return self.path / LATEST

    @property
    def best(self) -> Path:
        """``checkpoint_best.pt``."""
        return self.path / BEST

    @property
    def tensorboard(self) -> Path:
        """The TensorBoard log folder."""
        return self.path / TENSORBOARD_DIR

    def check(self, *, resume: bool, overwrite: bool) -> None:
        """Refuse a resume without a latest checkpoint, and a new run in a used folder."""
        if resume and not self.latest.is_file():
            raise ConfigError(
                f"Cannot resume: {self.latest} does not exist. Start without --resume or point "
                "--run-dir at an earlier run."
            )
        held = [name for name in RUN_OUTPUTS if (self.path / name).exists()]
        if not resume and held and not overwrite:
            raise OutputExistsError(
                f"{self.path} already holds a run ({', '.join(held)}). Use --resume to "
                "continue it, --overwrite to start over, or another --run-dir."
            )

    def clear(self) -> None:
        """Remove an earlier run's outputs (``--overwrite``)."""
        for name in (*RUN_OUTPUTS, LOG_FILE):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)

    def open_log(self) -> logging.Handler:
        """A handler writing the ``src_train`` log to ``train.log`` (at INFO at least)."""
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.path / LOG_FILE)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        core = logging.getLogger("src_train")
        core.addHandler(handler)
        if core.getEffectiveLevel() > logging.INFO:
            core.setLevel(logging.INFO)
        return handler

    def load_latest(self, expected: ModelConfig) -> Checkpoint:
        """``checkpoint_latest.pt``, checked against the model the options describe.

        A missing, corrupt or foreign file raises :class:`CheckpointError` naming the run's
        other checkpoints that can stand in for it; another model raises :class:`ConfigError`.
        """
        try:
            ckpt = load_checkpoint(self.latest, map_location="cpu", advice="")
        except CheckpointError as exc:
            raise CheckpointError(
                f"Cannot resume: {str(exc).rstrip()} {self._resume_alternatives()}"
            ) from exc
        if ckpt.model_config != expected:
            raise ConfigError(
                f"{self.latest} holds a model {ckpt.model_config}, but the options ask for "
                f"{expected}. Resume with the run's model options."
            )
        return ckpt

    def _resume_alternatives(self) -> str:
        """What to do when ``checkpoint_latest.pt`` is unusable: the readable best/final
        checkpoints of the run folder (with their epochs), else starting over."""
        usable = []
        for name in (FINAL, BEST):
            path = self.path / name
            if not path.is_file():
                continue
            try:
                epoch = load_checkpoint(path, map_location="cpu").epoch
            except CheckpointError:
                log.warning("%s is unreadable too", path)
                continue
            usable.append(f"{name} (epoch {epoch})")
        if not usable:
            return (
                f"{self.path} holds no readable {FINAL} or {BEST} to resume from: use "
                "--overwrite to start this run over, or another --run-dir."
            )
        return (
            f"To resume from an earlier state of this run, copy {' or '.join(usable)} in "
            f"{self.path} to {LATEST}; or use --overwrite to start the run over."
        )

    def add_to_checkpoint(self, name: str, key: str, value: Any) -> None:
        """Store ``value`` under ``extra[key]`` of the run's checkpoint ``name`` (atomically;
        weights and everything else unchanged), e.g. the ranker fitted after training."""
        path = self.path / name
        payload = torch.load(path, map_location="cpu", weights_only=True)
        payload.setdefault("extra", {})[key] = value
        with atomic_write(path, "wb") as fh:
            torch.save(payload, fh)

    def write_config(self, data: dict[str, Any]) -> None:
        """``config.json``, atomically."""
        write_text_atomic(self.path / CONFIG_FILE, json.dumps(data, indent=1), overwrite=True)

    def read_config(self) -> dict[str, Any] | None:
        """``config.json`` as written by :meth:`write_config`; None when absent or unreadable."""
        try:
            data = json.loads((self.path / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_metrics(self, rows: Sequence[dict[str, float]]) -> None:
        """``metrics.jsonl`` = ``rows`` (e.g. a resumed history), atomically."""
        text = "".join(json.dumps(row) + "\n" for row in rows)
        write_text_atomic(self.path / METRICS_FILE, text, overwrite=True)

    def append_metrics(self, row: dict[str, float]) -> None:
        """Add one epoch's row to ``metrics.jsonl``."""
        with open(self.path / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(row) + "\n")
