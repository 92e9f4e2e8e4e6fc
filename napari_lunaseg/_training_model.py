"""The Training widget's job, without Qt or napari (tests drive it headless).

:class:`TrainingJob` holds what one ``lunaseg train`` child process said and did: its command
line (generated from :class:`~src_train.train.TrainConfig`'s option metadata, as the CLI's
parser is), the progress events it printed (``--progress-json``), the epochs table, the tail
of its stderr, and at the end what happened (finished, cancelled, stopped, failed) and the
validated best checkpoint it hands over to the Inference widget. The widget
(:mod:`napari_lunaseg._training`) runs the process and shows this.
"""

from __future__ import annotations

import json
import logging
import signal
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src_train.images2d.folder import looks_like_image_set
from src_train.luna import has_annotations
from src_train.options import option_args
from src_train.records import metric_keys
from src_train.records.truth import SPLIT_LABELS
from src_train.train import BEST, TrainConfig

log = logging.getLogger(__name__)

#: Lines of the child's stderr kept for error messages.
STDERR_TAIL_LINES = 20
#: How the validation series are named (the core's label: the set "best" is chosen on).
SELECTION_SET = SPLIT_LABELS["val"]
_SELECTION = SELECTION_SET.split()[0]
EPOCH_HEADERS = (
    "epoch",
    "loss",
    f"{_SELECTION} CPM",
    f"{_SELECTION} nodule recall",
    f"{_SELECTION} FP/scan",
    f"{_SELECTION} voxel precision",
    "samples/s",
)
#: Header tooltips: what the validation columns were measured on.
EPOCH_HEADER_TIPS = {
    header: f"on the {SELECTION_SET}: the series the run chooses its best epoch on"
    for header in EPOCH_HEADERS[2:6]
}
#: Metrics of the epoch table after its first two columns (``metrics.jsonl`` names).
VAL_COLUMNS = tuple(
    metric_keys.val_key(name)
    for name in (
        metric_keys.CPM,
        metric_keys.NODULE_RECALL,
        metric_keys.FP_PER_SCAN,
        metric_keys.VOXEL_PRECISION,
    )
)
#: Exit status of a job stopped by a signal, after saving its checkpoint: 128 + the signal.
STOPPED_EXIT_CODES = {128 + signal.SIGTERM: "SIGTERM", 128 + signal.SIGINT: "SIGINT"}
#: What the status line says while the trainer prepares, validates or fits the ranker.
PHASES = {
    "cache": "preparing the cache",
    "validation": "validating epoch {epoch} on the whole series of the " + SELECTION_SET,
    "ranker": "fitting the candidate ranker",
}


def train_command(
    data_dir: str | Path, values: Mapping[str, Any], *, resume: bool = False
) -> list[str]:
    """Arguments of ``python -m src_train.cli train DATA_DIR ...`` (after the executable):
    ``values`` are :class:`TrainConfig` field values; the flags come from its option metadata,
    as the CLI's parser does. Resuming never starts over (``overwrite`` off)."""
    options = {
        **values,
        "resume": resume,
        "overwrite": bool(values.get("overwrite")) and not resume,
    }
    train = ["-m", "src_train.cli", "train", str(data_dir)]
    return [*train, *option_args(TrainConfig, options), "--progress-json"]


def check_inputs(data_dir: str, run_dir: str, *, resume: bool) -> str | None:
    """Why training cannot start with these folders (one line for the user), or None."""
    data = Path(data_dir) if data_dir else None
    if data is None or not data.is_dir():
        return f"Data folder {data} does not exist: choose a LUNA16-layout folder."
    if not looks_like_image_set(data) and not has_annotations(data):
        return (
            f"{data} has no annotations.csv: training needs a LUNA16-layout folder with "
            "annotations (run 'lunaseg synth' for a synthetic one)."
        )
    if not run_dir:
        return "Choose a run folder for checkpoints and TensorBoard logs."
    if resume and not Path(run_dir).is_dir():
        return f"Nothing to resume: run folder {run_dir} does not exist."
    return None


def _fmt(value: Any) -> str:
    return "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


@dataclass
class Shown:
    """What one progress event changes on screen (None: leave it as it is)."""

    status: str | None = None
    #: Progress bar (done, total).
    progress: tuple[int, int] | None = None
    table_changed: bool = False


@dataclass
class Outcome:
    """How a job ended: ``kind`` is finished, cancelled, stopped or failed; ``message`` the
    status line; ``checkpoint`` the validated best checkpoint it wrote (None: none)."""

    kind: str
    message: str
    checkpoint: Path | None

    @property
    def failed(self) -> bool:
        """True when the job crashed or exited with an error."""
        return self.kind == "failed"


class TrainingJob:
    """One training child's events, epochs, stderr tail and end (see the module docstring)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.epochs_seen: list[dict[str, Any]] = []
        self.best_checkpoint: Path | None = None
        self.exit_code: int | None = None
        self.cancelled = False
        self.stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._buffer = b""

    def reset(self) -> None:
        """Forget the previous job (a new one starts)."""
        self.events.clear()
        self.epochs_seen.clear()
        self.best_checkpoint = None
        self.exit_code = None
        self.cancelled = False
        self.stderr.clear()
        self._buffer = b""

    # -- the child's output ------------------------------------------------------------------
    def read_stdout(self, data: bytes) -> list[Shown]:
        """Take a chunk of the child's stdout; each complete JSON line is a progress event
        (other lines go to the debug log). Returns what each event changes."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        shown = []
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.debug("train: %s", line)
                continue
            if isinstance(event, dict):
                shown.append(self.handle_event(event))
        return shown

    def read_stderr(self, text: str) -> None:
        """Keep the last lines of the child's stderr (for the failure message)."""
        self.stderr.extend(line for line in text.splitlines() if line.strip())

    def handle_event(self, event: dict[str, Any]) -> Shown:
        """Take one progress event (``ProgressEvent.to_json`` of the trainer)."""
        self.events.append(event)
        kind = str(event.get("kind", ""))
        epoch, epochs = int(event.get("epoch") or 0), int(event.get("epochs") or 0)
        batch, batches = int(event.get("batch") or 0), int(event.get("batches") or 0)
        if kind == "batch" and epochs and batches:
            total = epochs * batches
            loss = (event.get("metrics") or {}).get("loss")
            status = (
                f"epoch {epoch}/{epochs}, batch {batch}/{batches}: loss {loss:.4f}"
                if loss is not None
                else None
            )
            return Shown(status, (min((epoch - 1) * batches + batch, total), total))
        if kind in PHASES and batches:
            return Shown(f"{PHASES[kind].format(epoch=epoch)}: {batch}/{batches}")
        if kind == "checkpoint" and event.get("path"):
            path = Path(str(event["path"]))
            if path.name == BEST:
                self.best_checkpoint = path
        elif kind == "epoch":
            self.epochs_seen.append(event)
            return Shown(self.epoch_text(event), table_changed=True)
        return Shown()

    # -- the epochs table --------------------------------------------------------------------
    @staticmethod
    def epoch_row(event: Mapping[str, Any]) -> list[str]:
        """One row of the epochs table (columns :data:`EPOCH_HEADERS`)."""
        metrics = event.get("metrics") or {}
        return [
            str(event.get("epoch", "")),
            _fmt(metrics.get(metric_keys.train_key(metric_keys.LOSS))),
            *(_fmt(metrics.get(name)) for name in VAL_COLUMNS),
            _fmt(event.get("samples_per_s")),
        ]

    def table_rows(self) -> list[list[str]]:
        """The epochs table: one row per epoch the job finished."""
        return [self.epoch_row(e) for e in self.epochs_seen]

    def epoch_text(self, event: Mapping[str, Any]) -> str:
        """The status line after an epoch: loss, and the validation figures when validated."""
        row = self.epoch_row(event)
        text = f"epoch {row[0]}/{event.get('epochs', '?')}: loss {row[1]}"
        if row[2]:
            text += f"; {SELECTION_SET}: CPM {row[2]}, nodule recall {row[3]}, {row[4]} FP/scan"
        return text

    # -- the end -----------------------------------------------------------------------------
    def find_best_checkpoint(self) -> Path | None:
        """The run's validated best checkpoint when this job wrote one, else None.

        Only ``checkpoint_best.pt`` is ever published: it holds a validated epoch that passed
        the run's detection criterion. ``checkpoint_latest.pt`` (written on cancel, possibly
        mid-epoch and unvalidated) never replaces the inference widget's checkpoint, nor does
        a best checkpoint an older run left in the folder.
        """
        for event in reversed(self.events):
            if event.get("kind") == "checkpoint" and event.get("path"):
                path = Path(str(event["path"]))
                if path.name == BEST and path.is_file():
                    return path
        return None

    def finish(self, exit_code: int, crashed: bool) -> Outcome:
        """The job exited with ``exit_code`` (``crashed``: killed by the system): what
        happened, the line to show and the checkpoint to hand over."""
        self.exit_code = int(exit_code)
        finished = not crashed and exit_code == 0
        # stopped between batches by a signal (Cancel's SIGTERM), its checkpoint saved
        stopped = not crashed and exit_code in STOPPED_EXIT_CODES
        checkpoint = self.find_best_checkpoint()
        if checkpoint is not None:
            self.best_checkpoint = checkpoint
        if not (finished or stopped or self.cancelled):
            tail = "\n".join(list(self.stderr)[-3:])
            reason = "crashed" if crashed else f"exited with code {exit_code}"
            return Outcome("failed", f"Training {reason}. {tail}".strip(), checkpoint)
        if finished:
            kind, verb = "finished", "finished"
        elif self.cancelled:
            kind, verb = "cancelled", "cancelled"
        else:
            kind, verb = "stopped", f"stopped by {STOPPED_EXIT_CODES.get(exit_code, 'a signal')}"
        if checkpoint is not None:
            message = (
                f"Training {verb}. Best validated checkpoint: {checkpoint} (now the "
                "inference widget's choice)."
            )
        else:
            message = (
                f"Training {verb} without a validated best checkpoint (none yet, or no "
                "validated epoch marked few enough voxels): the inference widget keeps its "
                "checkpoint. Resume to train on."
            )
        return Outcome(kind, message, checkpoint)
