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

import logging
import os
import sys
import threading
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
from napari_lunaseg._training_model import (
    EPOCH_HEADER_TIPS,
    EPOCH_HEADERS,
    Shown,
    TrainingJob,
    check_inputs,
    train_command,
)
from napari_lunaseg._viewer_utils import (
    fill_table,
    make_progress_bar,
    make_table,
    make_wrapping_label,
)
from src_train import DEFAULT_DATA_DIR
from src_train.augment import AUGMENTATIONS
from src_train.images2d.folder import looks_like_image_set
from src_train.options import option_choices, option_help
from src_train.train import TENSORBOARD_DIR, TrainConfig

log = logging.getLogger(__name__)

#: How long closing the viewer waits for a cancelled job to save and exit, ms.
STOP_WAIT_MS = 30_000
#: How often the job's watcher wakes up while the job runs, s.
WATCH_INTERVAL_S = 0.5


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
        #: The job's state (events, epochs, the checkpoint handed over), no Qt.
        self.job = TrainingJob()
        self._task: TrainingTask | None = None
        self._job_done = threading.Event()

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
        for column, tip in EPOCH_HEADER_TIPS.items():
            self.table.horizontalHeaderItem(EPOCH_HEADERS.index(column)).setToolTip(tip)

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
        self.ranker_points = FileEdit(label="ranker points", mode="d", value=None, nullable=True)
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
            ("ranker_points", self.ranker_points),
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
                self.ranker_points,
                self.best_min_precision,
                augment_row,
                self.device,
                self.workers,
                self.overwrite,
            ]
        )
        return form

    # -- the job's state, as tests and the 2-D job read it -------------------------------------
    @property
    def events(self) -> list[dict[str, Any]]:
        """The progress events of the current job."""
        return self.job.events

    @property
    def epochs_seen(self) -> list[dict[str, Any]]:
        """Its finished epochs."""
        return self.job.epochs_seen

    @property
    def best_checkpoint(self) -> Path | None:
        """The validated best checkpoint it wrote (None: none yet)."""
        return self.job.best_checkpoint

    @property
    def exit_code(self) -> int | None:
        """Its exit status (None while it runs)."""
        return self.job.exit_code

    # -- command -----------------------------------------------------------------------------
    def form_values(self) -> dict[str, Any]:
        """The form as :class:`TrainConfig` field values."""
        augment = [name for name, box in self.augment.items() if box.value]
        return {
            "run_dir": str(self.run_dir.value),
            "model": str(self.model.value),
            "loss": str(self.loss.value),
            "epochs": int(self.epochs.value),
            "epoch_samples": int(self.epoch_samples.value),
            "batch_size": int(self.batch_size.value),
            "negative_fraction": float(self.negative_fraction.value),
            "ranker": str(self.ranker.value),
            "ranker_points": None
            if self.ranker_points.value is None
            else str(self.ranker_points.value),
            "best_min_precision": float(self.best_min_precision.value),
            "augment": ",".join(augment) if augment else "none",
            "device": str(self.device.value),
            "num_workers": int(self.workers.value),
            "overwrite": bool(self.overwrite.value),
        }

    def command(self, *, resume: bool = False) -> list[str]:
        """Arguments of the child process (after the Python executable)."""
        if looks_like_image_set(str(self.data_dir.value)):  # 2-D images: lunaseg compare
            return image_set_command(self, resume=resume)
        return train_command(str(self.data_dir.value), self.form_values(), resume=resume)

    @property
    def running(self) -> bool:
        """True while the child process runs."""
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    # -- start / cancel ----------------------------------------------------------------------
    def start(self, *, resume: bool = False) -> QProcess | None:
        """Start (or resume) training in a child process; None when inputs are bad."""
        if self.running:
            show_info("Training is already running; cancel it first.")
            return None
        problem = check_inputs(str(self.data_dir.value), str(self.run_dir.value), resume=resume)
        if problem:
            self.status.setText(problem)
            show_error(problem)
            return None
        self.job.reset()
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
            self.job.cancelled = True
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
        for shown in self.job.read_stdout(bytes(self.process.readAllStandardOutput())):
            self._show(shown)

    def _read_stderr(self) -> None:
        if self.process is not None:
            self.job.read_stderr(
                bytes(self.process.readAllStandardError()).decode(errors="replace")
            )

    def handle_event(self, event: dict[str, Any]) -> None:
        """Show one progress event of the child (``ProgressEvent.to_json`` of the trainer)."""
        self._show(self.job.handle_event(event))

    def _show(self, shown: Shown) -> None:
        if shown.progress is not None:
            done, total = shown.progress
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        if shown.table_changed:
            fill_table(self.table, self.job.table_rows())
        if shown.status is not None:
            self.status.setText(shown.status)

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
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        outcome = self.job.finish(int(exit_code), crashed)
        self._set_running(False)
        self._show_progress_end(outcome.kind == "finished")
        if outcome.checkpoint is not None:
            session_for(self.viewer).set_checkpoint(outcome.checkpoint)
        self.status.setText(outcome.message)
        if outcome.failed:
            show_error(outcome.message)

    def _show_progress_end(self, finished: bool) -> None:
        """Full when every epoch ran; otherwise the bar keeps what was done (a cancelled run
        is not 100 %)."""
        if finished:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
        elif self.progress.maximum() == 0:  # still busy-indicating: nothing was trained
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
