"""GUI tests of the training widget: a tiny job in a child process, cancel, resume, bad input."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import dock

pytestmark = pytest.mark.gui

JOB_TIMEOUT_MS = 120_000
#: A job run to its end on a busy 2-core machine.
WHOLE_JOB_TIMEOUT_MS = 480_000


@pytest.fixture
def widget(viewer):
    return dock(viewer, "Training")


def _tiny_job(widget, data: Path, run: Path) -> None:
    widget.data_dir.value = str(data)
    widget.run_dir.value = str(run)
    widget.epochs.value = 50
    widget.epoch_samples.value = 8
    widget.batch_size.value = 4
    widget.device.value = "cpu"
    widget.workers.value = 0


def test_folder_without_annotations_is_refused(widget, tmp_path: Path) -> None:
    (tmp_path / "subset0").mkdir()
    _tiny_job(widget, tmp_path, tmp_path / "run")
    widget.start_button.click()
    assert not widget.running
    assert "annotations.csv" in widget.status.text()


def test_cancel_keeps_a_loadable_checkpoint_but_publishes_only_a_validated_best(
    widget, viewer, qtbot, tmp_path, tiny_synth_dir
):
    """Cancelled before any validated epoch passed the precision floor: checkpoint_latest.pt
    is kept for --resume, but the inference widget keeps the demo model."""
    from napari_lunaseg._session import session_for
    from src_train.commands.infer_folder import DEMO_CHECKPOINT
    from src_train.model import load_model

    inference = dock(viewer, "Inference")
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)  # training writes its cache into the data folder
    run = tmp_path / "run"
    _tiny_job(widget, data, run)
    widget.best_min_precision.value = 1.0  # no epoch of a tiny model marks voxels that well
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        widget.start_button.click()
    assert widget.running and widget.cancel_button.isEnabled()
    # napari's public worker API, no private napari call warning on every start
    assert not [w for w in caught if "napari_lunaseg" in w.filename], caught
    # the running job is a napari task: what napari's close dialog lists before closing
    # (read from napari's task manager, a private attribute, by this test only)
    tasks = viewer.window._task_status_manager
    qtbot.waitUntil(lambda: bool(tasks.get_status()), timeout=JOB_TIMEOUT_MS)
    # Live progress: wait for the first finished epoch, then cancel between batches.
    qtbot.waitUntil(lambda: bool(widget.epochs_seen), timeout=JOB_TIMEOUT_MS)
    assert widget.table.rowCount() >= 1 and widget.table.item(0, 1).text()
    assert widget.table.item(0, 2).text(), "epoch 1 is validated: its CPM is shown"
    assert "tensorboard" in widget.tensorboard.text()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    # stopped by Cancel's SIGTERM after saving: 143 as the shells expect, and a clean cancel
    assert widget.exit_code == 143, widget.status.text()
    assert widget.status.text().startswith("Training cancelled")
    assert widget.progress.value() < widget.progress.maximum()  # not 100 % after Cancel
    qtbot.waitUntil(lambda: not tasks.get_status(), timeout=JOB_TIMEOUT_MS)  # no task left
    assert any(e.get("kind") == "stopped" for e in widget.events)
    load_model(run / "checkpoint_latest.pt")  # a loadable checkpoint was kept
    assert not (run / "checkpoint_best.pt").exists()
    assert widget.best_checkpoint is None and session_for(viewer).best_checkpoint is None
    assert Path(str(inference.checkpoint.value)) == Path(DEMO_CHECKPOINT)
    assert "keeps its checkpoint" in widget.status.text()


def test_a_validated_best_checkpoint_is_published(widget, viewer, qtbot, tmp_path, tiny_synth_dir):
    from napari_lunaseg._session import session_for
    from src_train.model import load_checkpoint

    inference = dock(viewer, "Inference")
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    run = tmp_path / "run"
    _tiny_job(widget, data, run)
    widget.epochs.value = 1
    widget.best_min_precision.value = 0.0
    widget.start_button.click()
    # a whole (one-epoch) job: cache, training, validation on a whole series
    qtbot.waitUntil(lambda: not widget.running, timeout=WHOLE_JOB_TIMEOUT_MS)
    assert widget.exit_code == 0, widget.status.text()
    best = run / "checkpoint_best.pt"
    assert widget.best_checkpoint == best and "val/cpm" in load_checkpoint(best).metrics
    assert session_for(viewer).best_checkpoint == best
    assert Path(str(inference.checkpoint.value)) == best


def test_resume_continues_and_closing_napari_stops_the_job_cleanly(
    widget, viewer, qtbot, tmp_path, tiny_synth_dir
):
    from src_train.model import load_model
    from src_train.train import TrainConfig, Trainer

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    run = tmp_path / "run"
    first = TrainConfig(
        data_dir=str(data), run_dir=str(run), epochs=1, epoch_samples=8, batch_size=4,
        num_workers=0, device="cpu", tensorboard=False,
    )  # fmt: skip
    Trainer(first).fit()
    _tiny_job(widget, data, run)
    widget.resume_button.click()
    assert "--resume" in widget.process.arguments()
    qtbot.waitUntil(lambda: _first_batch(widget) is not None, timeout=JOB_TIMEOUT_MS)
    assert int(_first_batch(widget)["epoch"]) == 2  # the run's numbering goes on
    pid = widget.process.processId()
    viewer.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child is gone...
    # ...after a clean stop: it reported "stopped" (SIGTERM, checkpoint saved) and exited 143.
    assert [e.get("kind") for e in widget.events][-2:] == ["stopped", "end"]
    assert widget.exit_code == 143
    load_model(run / "checkpoint_latest.pt")


def _first_batch(widget) -> dict | None:
    return next((e for e in widget.events if e.get("kind") == "batch"), None)


def test_a_crashed_job_is_reported_and_napari_lives_on(widget, qtbot, tmp_path, tiny_synth_dir):
    import signal

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    _tiny_job(widget, data, tmp_path / "run")
    widget.start_button.click()
    qtbot.waitUntil(lambda: bool(widget.events), timeout=JOB_TIMEOUT_MS)
    os.kill(widget.process.processId(), signal.SIGKILL)  # e.g. the OOM killer
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    assert "crashed" in widget.status.text()
    assert widget.start_button.isEnabled()  # ready for another try


def test_the_command_line_parses_back_to_the_form_through_the_clis_own_parser(
    widget, tmp_path: Path
) -> None:
    """The widget's flags come from TrainConfig's option metadata: the CLI's parser reads
    every form value back, defaults included (none typed by hand in the widget)."""
    from src_train.cli import build_parser
    from src_train.options import options_from_args
    from src_train.train import TrainConfig

    defaults = TrainConfig()
    assert widget.epochs.value == defaults.epochs and widget.loss.value == defaults.loss
    assert widget.ranker.value == defaults.ranker
    assert widget.negative_fraction.tooltip.startswith(
        TrainConfig.__dataclass_fields__["negative_fraction"].metadata["lunaseg_option"]["help"]
    )
    _tiny_job(widget, tmp_path / "data", tmp_path / "run")
    unset = build_parser().parse_args(widget.command()[2:])
    assert options_from_args(TrainConfig, unset, data_dir="d").ranker_points is None
    widget.ranker_points.value = str(tmp_path / "more")
    widget.loss.value = next(c for c in widget.loss.choices if c != defaults.loss)
    widget.augment["flip"].value = not widget.augment["flip"].value
    widget.overwrite.value = True
    command = widget.command()
    args = build_parser().parse_args(command[2:])
    config = options_from_args(TrainConfig, args, data_dir=str(tmp_path / "data"))
    assert config.run_dir == str(tmp_path / "run") and config.epochs == 50
    assert (config.epoch_samples, config.batch_size, config.num_workers) == (8, 4, 0)
    assert config.loss == widget.loss.value and config.device == "cpu" and config.overwrite
    assert config.negative_fraction == pytest.approx(widget.negative_fraction.value)
    assert config.ranker_points == str(tmp_path / "more")
    chosen = {name for name, box in widget.augment.items() if box.value}
    assert set(config.augment_config().enabled) == chosen
    resumed = build_parser().parse_args(widget.command(resume=True)[2:])
    assert resumed.resume and not getattr(resumed, "overwrite", False)
