"""What a training run tells the outside world: progress events and its result."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ProgressEvent:
    """What a callback receives.

    Attributes:
        kind: ``"cache"`` (preparing series), ``"batch"``, ``"validation"`` (a validation
            batch), ``"epoch"`` (an epoch ended: ``metrics`` has ``train/...`` and maybe
            ``val/...``), ``"checkpoint"`` (``path``, ``sha1``), ``"ranker"`` (fitting the
            second stage after the last epoch), ``"stopped"``, ``"end"``.
        epoch, epochs: current epoch (1-based) and the last one.
        batch, batches: position within the epoch (or validation, or cache build).
        samples_seen: training samples seen so far (all processes).
        samples_per_s: training throughput over the current epoch so far.
        metrics: numbers for this event (batch: ``loss``; epoch: prefixed metrics).
        message: a human-readable line.
        path, sha1: the checkpoint written (``"checkpoint"`` events).
        time: wall-clock time, seconds since the epoch.
    """

    kind: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    samples_seen: int = 0
    samples_per_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    path: str | None = None
    sha1: str | None = None
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        """One line of JSON (NaN/inf become null)."""
        data = asdict(self)
        data["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return json.dumps(data, separators=(",", ":"))


Callback = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        run_dir: the run folder.
        epoch: last completed epoch.
        samples_seen: training samples seen (all processes).
        stopped: True when a stop request ended the run early.
        best_epoch, best_metrics: the validation epoch kept as ``checkpoint_best.pt``.
        last_metrics: metrics of the last completed epoch (``train/...``, ``val/...``).
        history: every epoch's metrics, in order.
        ranked_metrics: validation metrics of the best epoch's candidates re-ranked by the
            second stage (``--ranker``); empty without one.
    """

    run_dir: Path
    epoch: int
    samples_seen: int
    stopped: bool
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    ranked_metrics: dict[str, float] = field(default_factory=dict)
