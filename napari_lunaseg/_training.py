"""Training widget: run ``lunaseg train`` as a child process and follow it live.

Why a child process: training is long, uses every core and may crash (out of memory, a CUDA
error); in a separate process none of that can freeze or take down napari. The child is started
with ``python -m src_train.cli train DATA_DIR ... --progress-json`` and prints one JSON object
per line (``ProgressEvent``); the widget reads them through :class:`QProcess` signals on the GUI
thread (no polling thread).

Cancel sends SIGTERM: the trainer stops between batches, writes a loadable
``checkpoint_latest.pt`` and exits; Resume starts the same command with ``--resume``.

The job stopped by Cancel exits with 143 (128 + SIGTERM, as any interrupted ``lunaseg train``):
the widget reports it as cancelled, not failed; it exits 0 only when every epoch is done.

Viewer close (documented behaviour): while a job runs, a napari worker watches it
(:func:`lunaseg_training_is_running`, started with napari's public ``create_worker``); napari
lists running workers as tasks, so closing the window first asks for confirmation; then napari
quits the worker, which sends SIGTERM and waits (up to :data:`STOP_WAIT_MS`) for the child to
save and exit. Closing only the Training dock keeps the
job running in the background until the viewer closes; if the widget itself is destroyed, the
same clean stop happens. Checkpoints are written to a temporary file and renamed into place, so
nothing is ever half-written; the run can be resumed later from the CLI or here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, SpinBox
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QProcess, QProcessEnvironment, Qt
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_lunaseg._images2d import image_set_command
from napari_lunaseg._session import session_for
from napari_lunaseg._viewer_utils import (
    fill_table,
    make_progress_bar,
    make_table,
    make_wrapping_label,
)
from src_train import DEFAULT_DATA_DIR
from src_train.augment import AUGMENTATIONS
from src_train.images2d.folder import looks_like_image_set
from src_train.luna import has_annotations
from src_train.options import option_args, option_choices, option_help
from src_train.records import metric_keys
from src_train.train import BEST, TENSORBOARD_DIR, TrainConfig

log = logging.getLogger(__name__)

#: How long closing the viewer waits for a cancelled job to save and exit, ms.
STOP_WAIT_MS = 30_000
#: Lines of the child's stderr kept for error messages.
STDERR_TAIL_LINES = 20
EPOCH_HEADERS = (
    "epoch",
    "loss",
    "val CPM",
    "val nodule recall",
    "val FP/scan",
    "val voxel precision",
    "samples/s",
)
#: Metrics of the epoch table after its first two columns (``metrics.jsonl`` names).
_VAL_COLUMNS = tuple(
    metric_keys.val_key(name)
    for name in (
        metric_keys.CPM,
        metric_keys.NODULE_RECALL,
        metric_keys.FP_PER_SCAN,
        metric_keys.VOXEL_PRECISION,
    )
)
#: How often the job's watcher wakes up while the job runs, s.
WATCH_INTERVAL_S = 0.5
#: Exit status of a job stopped by a signal, after saving its checkpoint: 128 + the signal.
STOPPED_EXIT_CODES = {128 + signal.SIGTERM: "SIGTERM", 128 + signal.SIGINT: "SIGINT"}


def lunaseg_training_is_running(done: threading.Event) -> Iterator[None]:
    """A napari worker that lives while a training job runs (until ``done`` is set).

    napari lists running workers as tasks: closing the window then asks for confirmation and
    quits them (:class:`TrainingTask` stops the job cleanly first).
    """
    while not done.wait(WATCH_INTERVAL_S):
        yield


class TrainingTask(GeneratorWorker):
    """The watcher's worker; quitting it (napari does when the window closes) first stops the
    job: SIGTERM, then up to :data:`STOP_WAIT_MS` for it to save its checkpoint and exit."""

    stop_job: Callable[[], None] | None = None

    def quit(self) -> None:
        stop, self.stop_job = self.stop_job, None
        if stop is not None:
            stop()
        super().quit()


def _stop_orphan(process: QProcess, timeout_ms: int = STOP_WAIT_MS) -> None:
    """Stop a child whose widget was destroyed: SIGTERM (checkpoint saved), kill if it hangs."""
    try:
        if process.state() == QProcess.ProcessState.NotRunning:
            return
    except RuntimeError:  # the QProcess itself is already gone (interpreter shutdown)
        return
    process.terminate()
    if not process.waitForFinished(timeout_ms):
        log.warning("training did not stop within %d ms; killing it", timeout_ms)
        process.kill()
        process.waitForFinished(timeout_ms)


def default_data_dir() -> str:
    """The synthetic data folder ``lunaseg view`` writes, when it exists."""
    path = Path.cwd() / DEFAULT_DATA_DIR
    return str(path) if path.is_dir() else ""


class TrainingWidget(QWidget):
    """Data, run folder, model, loss, epochs, batch size, augmentation, device; Start/Cancel."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.process: QProcess | None = None
        self.events: list[dict[str, Any]] = []
        self.epochs_seen: list[dict[str, Any]] = []
        self.best_checkpoint: Path | None = None
        self.exit_code: int | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._buffer = b""
        self._task: TrainingTask | None = None
        self._job_done = threading.Event()
        self._cancelled = False

        form = self._make_form()

        self.start_button = QPushButton("Start")
        self.resume_button = QPushButton("Resume")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = make_progress_bar()
        self.status = make_wrapping_label()
        self.tensorboard = make_wrapping_label()
        self.tensorboard.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = make_table(EPOCH_HEADERS)

        buttons = QHBoxLayout()
        for button in (self.start_button, self.resume_button, self.cancel_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(form.native)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.tensorboard)
        layout.addWidget(self.table, stretch=1)

        self.start_button.clicked.connect(lambda: self.start(resume=False))
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.cancel_button.clicked.connect(self.cancel)

    def _make_form(self) -> Container:
        """The form: one widget per ``lunaseg train`` option it offers, TrainConfig's
        defaults, choices and help texts (as tooltips)."""
        self.data_dir = FileEdit(label="data folder", mode="d", value=default_data_dir())
        self.run_dir = FileEdit(
            label="run folder", mode="d", value=str(Path.cwd() / "runs" / "napari")
        )
        defaults = TrainConfig()
        self.model = ComboBox(
            label="model", choices=option_choices(TrainConfig, "model"), value=defaults.model
        )
        self.loss = ComboBox(
            label="loss", choices=option_choices(TrainConfig, "loss"), value=defaults.loss
        )
        self.epochs = SpinBox(label="epochs", min=1, max=10_000, value=defaults.epochs)
        self.epoch_samples = SpinBox(
            label="samples / epoch", min=1, max=10_000_000, value=defaults.epoch_samples
        )
        self.batch_size = SpinBox(label="batch size", min=1, max=1024, value=defaults.batch_size)
        self.workers = SpinBox(label="loader workers", min=0, max=64, value=defaults.num_workers)
        self.negative_fraction = FloatSpinBox(
            label="negative crops",
            min=0.0,
            max=0.9,
            step=0.05,
            value=defaults.negative_fraction,
        )
        self.ranker = ComboBox(
            label="ranker", choices=option_choices(TrainConfig, "ranker"), value=defaults.ranker
        )
        self.best_min_precision = FloatSpinBox(
            label="best: min voxel precision",
            min=0.0,
            max=1.0,
            step=0.05,
            value=defaults.best_min_precision,
        )
        self.overwrite = CheckBox(text="start over if the run folder holds a run", value=False)
        enabled = set(defaults.augment_config().enabled)
        self.augment = {name: CheckBox(text=name, value=name in enabled) for name in AUGMENTATIONS}
        self.device = ComboBox(
            label="device", choices=["auto", "cuda", "cpu"], value=defaults.device
        )
        # tooltips are the CLI's --help lines (one text for both)
        helps = option_help(TrainConfig)
        for field, widget in (
            ("run_dir", self.run_dir),
            ("model", self.model),
            ("loss", self.loss),
            ("epochs", self.epochs),
            ("epoch_samples", self.epoch_samples),
            ("batch_size", self.batch_size),
            ("negative_fraction", self.negative_fraction),
            ("ranker", self.ranker),
            ("best_min_precision", self.best_min_precision),
            ("device", self.device),
            ("num_workers", self.workers),
            ("overwrite", self.overwrite),
        ):
            widget.tooltip = helps[field]
        augment_row = Container(widgets=list(self.augment.values()), layout="horizontal")
        augment_row.label = "augment"
        form = Container(
            widgets=[
                self.data_dir,
                self.run_dir,
                self.model,
                self.loss,
                self.epochs,
                self.epoch_samples,
                self.batch_size,
                self.negative_fraction,
                self.ranker,
                self.best_min_precision,
                augment_row,
                self.device,
                self.workers,
                self.overwrite,
            ]
        )
        return form

    # -- command -----------------------------------------------------------------------------
    def command(self, *, resume: bool = False) -> list[str]:
        """Arguments of the child process (after the Python executable)."""
        if looks_like_image_set(str(self.data_dir.value)):  # 2-D images: lunaseg compare
            return image_set_command(self, resume=resume)
        augment = [name for name, box in self.augment.items() if box.value]
        values: dict[str, Any] = {
            "run_dir": str(self.run_dir.value),
            "model": str(self.model.value),
            "loss": str(self.loss.value),
            "epochs": int(self.epochs.value),
            "epoch_samples": int(self.epoch_samples.value),
            "batch_size": int(self.batch_size.value),
            "negative_fraction": float(self.negative_fraction.value),
            "ranker": str(self.ranker.value),
            "best_min_precision": float(self.best_min_precision.value),
            "augment": ",".join(augment) if augment else "none",
            "device": str(self.device.value),
            "num_workers": int(self.workers.value),
            "resume": resume,
            "overwrite": bool(self.overwrite.value) and not resume,
        }
        # the flags come from TrainConfig's option metadata, as the CLI's parser does
        train = ["-m", "src_train.cli", "train", str(self.data_dir.value)]
        return [*train, *option_args(TrainConfig, values), "--progress-json"]

    @property
    def running(self) -> bool:
        """True while the child process runs."""
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def _check_inputs(self, resume: bool) -> str | None:
        data = Path(str(self.data_dir.value)) if str(self.data_dir.value) else None
        if data is None or not data.is_dir():
            return f"Data folder {data} does not exist: choose a LUNA16-layout folder."
        if not looks_like_image_set(data) and not has_annotations(data):
            return (
                f"{data} has no annotations.csv: training needs a LUNA16-layout folder with "
                "annotations (run 'lunaseg synth' for a synthetic one)."
            )
        if not str(self.run_dir.value):
            return "Choose a run folder for checkpoints and TensorBoard logs."
        if resume and not Path(str(self.run_dir.value)).is_dir():
            return f"Nothing to resume: run folder {self.run_dir.value} does not exist."
        return None

    # -- start / cancel ----------------------------------------------------------------------
    def start(self, *, resume: bool = False) -> QProcess | None:
        """Start (or resume) training in a child process; None when inputs are bad."""
        if self.running:
            show_info("Training is already running; cancel it first.")
            return None
        problem = self._check_inputs(resume)
        if problem:
            self.status.setText(problem)
            show_error(problem)
            return None
        self.events.clear()
        self.epochs_seen.clear()
        self.best_checkpoint = None
        self._stderr.clear()
        self._buffer = b""
        self._cancelled = False
        self.exit_code = None
        fill_table(self.table, [])
        # No Qt parent: a QProcess deleted with its parent would SIGKILL the child. If this
        # widget goes away (dock closed, viewer closed), _stop_orphan stops it cleanly instead.
        process = QProcess()
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(env)
        process.setWorkingDirectory(os.getcwd())
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_process_error)
        self.process = process
        done = self._job_done = threading.Event()
        self.destroyed.connect(lambda *_: (_stop_orphan(process), done.set()))
        run_dir = Path(str(self.run_dir.value))
        self.tensorboard.setText(f"TensorBoard: tensorboard --logdir {run_dir / TENSORBOARD_DIR}")
        self.status.setText(("resuming" if resume else "starting") + f" training in {run_dir}…")
        self.progress.setRange(0, 0)
        self._set_running(True)
        process.start(sys.executable, self.command(resume=resume))
        self._watch_job()
        return process

    def cancel(self) -> None:
        """Ask the child to stop between batches and save a checkpoint (SIGTERM)."""
        if self.running and self.process is not None:
            self._cancelled = True
            self.status.setText("cancelling: the job saves a checkpoint and stops…")
            self.process.terminate()

    def stop_and_wait(self, timeout_ms: int = STOP_WAIT_MS) -> None:
        """Cancel and block until the child exits (used when the viewer closes)."""
        if not self.running or self.process is None:
            return
        self.cancel()
        if not self.process.waitForFinished(timeout_ms):
            log.warning("training did not stop within %d ms; killing it", timeout_ms)
            self.process.kill()
            self.process.waitForFinished(timeout_ms)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    # -- napari task (close confirmation + stop on close) -------------------------------------
    def _watch_job(self) -> None:
        """Start the job's watcher worker (napari's public worker API: a running task)."""
        task = create_worker(
            lunaseg_training_is_running, self._job_done, _worker_class=TrainingTask
        )
        task.stop_job = self.stop_and_wait
        self._task = task
        task.start()

    # -- child output ------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        if self.process is None:
            return
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
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
                self.handle_event(event)

    def _read_stderr(self) -> None:
        if self.process is None:
            return
        text = bytes(self.process.readAllStandardError()).decode(errors="replace")
        for line in text.splitlines():
            if line.strip():
                self._stderr.append(line)

    def handle_event(self, event: dict[str, Any]) -> None:
        """Show one progress event of the child (``ProgressEvent.to_json`` of the trainer)."""
        self.events.append(event)
        kind = str(event.get("kind", ""))
        epoch, epochs = int(event.get("epoch") or 0), int(event.get("epochs") or 0)
        batch, batches = int(event.get("batch") or 0), int(event.get("batches") or 0)
        if kind == "batch" and epochs and batches:
            total = epochs * batches
            self.progress.setRange(0, total)
            self.progress.setValue(min((epoch - 1) * batches + batch, total))
            loss = (event.get("metrics") or {}).get("loss")
            if loss is not None:
                self.status.setText(
                    f"epoch {epoch}/{epochs}, batch {batch}/{batches}: loss {loss:.4f}"
                )
        elif kind in ("cache", "validation", "ranker") and batches:
            what = {
                "cache": "preparing the cache",
                "validation": f"validating epoch {epoch} (whole series)",
                "ranker": "fitting the candidate ranker",
            }[kind]
            self.status.setText(f"{what}: {batch}/{batches}")
        elif kind == "checkpoint" and event.get("path"):
            path = Path(str(event["path"]))
            if path.name == BEST:
                self.best_checkpoint = path
        elif kind == "epoch":
            self.epochs_seen.append(event)
            fill_table(self.table, [self._epoch_row(e) for e in self.epochs_seen])
            self.status.setText(self._epoch_text(event))

    @staticmethod
    def _fmt(value: Any) -> str:
        return "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))

    def _epoch_row(self, event: dict[str, Any]) -> list[str]:
        metrics = event.get("metrics") or {}
        return [
            str(event.get("epoch", "")),
            self._fmt(metrics.get(metric_keys.train_key(metric_keys.LOSS))),
            *(self._fmt(metrics.get(name)) for name in _VAL_COLUMNS),
            self._fmt(event.get("samples_per_s")),
        ]

    def _epoch_text(self, event: dict[str, Any]) -> str:
        row = self._epoch_row(event)
        text = f"epoch {row[0]}/{event.get('epochs', '?')}: loss {row[1]}"
        if row[2]:
            text += f", val CPM {row[2]}, nodule recall {row[3]}, {row[4]} FP/scan"
        return text

    # -- end of the job ----------------------------------------------------------------------
    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            message = f"Could not start training: {sys.executable} failed to start."
            self.status.setText(message)
            show_error(message)

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        self._read_stderr()
        self._job_done.set()  # the watcher ends: napari no longer lists a running task
        if self._task is not None:
            self._task.stop_job = None
            self._task = None
        self.exit_code = int(exit_code)
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        self._set_running(False)
        finished = not crashed and exit_code == 0
        # stopped between batches by a signal (Cancel's SIGTERM), its checkpoint saved
        stopped = not crashed and exit_code in STOPPED_EXIT_CODES
        self._show_progress_end(finished)
        checkpoint = self._find_best_checkpoint()
        if checkpoint is not None:
            self.best_checkpoint = checkpoint
            session_for(self.viewer).set_checkpoint(checkpoint)
        if finished or stopped or self._cancelled:
            if finished:
                verb = "finished"
            elif self._cancelled:
                verb = "cancelled"
            else:
                verb = f"stopped by {STOPPED_EXIT_CODES.get(exit_code, 'a signal')}"
            if checkpoint is not None:
                self.status.setText(
                    f"Training {verb}. Best validated checkpoint: {checkpoint} (now the "
                    "inference widget's choice)."
                )
            else:
                self.status.setText(
                    f"Training {verb} without a validated best checkpoint (none yet, or no "
                    "validated epoch marked few enough voxels): the inference widget keeps its "
                    "checkpoint. Resume to train on."
                )
        else:
            tail = "\n".join(list(self._stderr)[-3:])
            reason = "crashed" if crashed else f"exited with code {exit_code}"
            message = f"Training {reason}. {tail}".strip()
            self.status.setText(message)
            show_error(message)

    def _show_progress_end(self, finished: bool) -> None:
        """Full when every epoch ran; otherwise the bar keeps what was done (a cancelled run
        is not 100 %)."""
        if finished:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
        elif self.progress.maximum() == 0:  # still busy-indicating: nothing was trained
            self.progress.setRange(0, 1)
            self.progress.setValue(0)

    def _find_best_checkpoint(self) -> Path | None:
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
