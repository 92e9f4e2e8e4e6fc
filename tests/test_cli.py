"""``lunaseg`` as a whole: one-line errors, ``--debug`` tracebacks, ``view`` without a display."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from src_train.cli import build_parser, main
from src_train.errors import LunaSegError, SeriesNotFoundError

REPO = Path(__file__).resolve().parents[1]


def test_error_is_one_line_without_debug(tmp_path: Path, capsys) -> None:
    absent = tmp_path / "absent"
    assert main(["mask", str(absent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lunaseg mask: error: Data folder ") and str(absent) in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    with pytest.raises(SeriesNotFoundError, match="does not exist") as info:
        main(["--debug", "mask", str(absent)])
    # The exception propagates from the core, so Python prints where it was raised.
    assert info.traceback[-1].path.parts[-2:] == ("luna", "folder.py")


def test_global_options_and_threshold_alias(tmp_path: Path, monkeypatch) -> None:
    seen: list[dict] = []
    monkeypatch.setattr("src_train.cli.data._run_mask", lambda args: seen.append(vars(args)) or 0)
    assert main(["--debug", "-v", "mask", str(tmp_path), "--threshold", "-600"]) == 0
    assert main(["mask", str(tmp_path), "--threshold-hu", "-650", "--series", "a", "b"]) == 0
    first, second = seen
    # --debug stays in main (train turns its whole namespace into a TrainConfig).
    assert "debug" not in first and first["verbose"] is True
    assert first["threshold_hu"] == -600.0 and first["series"] is None
    assert second["threshold_hu"] == -650.0 and second["series"] == ["a", "b"]


@pytest.fixture
def no_display(monkeypatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)


def test_view_without_display_is_an_error_not_a_core_dump(
    no_display, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    assert main(["view", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lunaseg view: error: No display") and err.count("\n") == 1
    assert "xvfb-run -a lunaseg view" in err and "lunaseg mask" in err
    assert not data.exists()  # checked before the synthetic data set is written


@pytest.mark.parametrize(
    "variable, value",
    [("DISPLAY", ":99"), ("WAYLAND_DISPLAY", "wayland-0"), ("QT_QPA_PLATFORM", "offscreen")],
)
def test_view_with_a_display_gets_past_the_check(
    no_display, monkeypatch, tmp_path: Path, variable: str, value: str
) -> None:
    from napari_lunaseg._cli import check_display

    monkeypatch.setenv(variable, value)
    check_display()  # no error
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.delenv(variable)
    check_display()  # other systems: Qt finds their display itself
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(LunaSegError, match="No display"):
        check_display()


def test_train_defaults_are_the_demo_checkpoint_s_recipe(capsys) -> None:
    """Issue 24 item 5: the defaults were the reference recipe the README warns against."""
    import json
    import shlex

    from src_train.options import options_from_args
    from src_train.train import TrainConfig

    demo = json.loads((REPO / "src_train" / "assets" / "demo_unet.json").read_text())
    words = shlex.split(demo["training_command"])
    flags = words[words.index("--run-dir") + 2 :]
    for data_flag in ("--seed", "--ranker-points"):  # a seed and a folder, not recipe values
        if data_flag in flags:
            at = flags.index(data_flag)
            del flags[at : at + 2]
    defaults = TrainConfig()
    parsed = build_parser().parse_args(["train", "d", *flags])
    with_flags = options_from_args(TrainConfig, parsed, data_dir="d")
    assert replace(with_flags, data_dir=defaults.data_dir) == defaults
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "reference chapter's recipe" in text and "--loss dice-fn" in text


def test_messages_of_a_newcomer_s_first_hour(tmp_path: Path, capsys, monkeypatch) -> None:
    """Issue 24 item 9: a folder given as --checkpoint, the interrupted line, bootstrap progress
    in a log file, mask-report's help and review on a folder without annotations."""
    from src_train.cli import inference as cli_inference

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_best.pt").write_bytes(b"")
    assert (
        main(["infer", str(tmp_path), "--out", str(tmp_path / "o"), "--checkpoint", str(run)]) == 2
    )
    err = capsys.readouterr().err
    assert "is a folder, not a checkpoint file" in err and "checkpoint_best.pt" in err
    assert "does not exist" not in err

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_inference, "run_infer", interrupted)
    assert main(["infer", str(tmp_path), "--out", str(tmp_path / "o")]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err

    ann = tmp_path / "annotations.csv"
    ann.write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        + "".join(f"s{i},0,0,0,8\n" for i in range(3))
    )
    cands = tmp_path / "candidates.csv"
    cands.write_text(
        "seriesuid,coordX,coordY,coordZ,probability\n"
        + "".join(f"s{i},0,0,0,0.9\ns{i},50,0,0,0.4\n" for i in range(3))
    )
    argv = ["eval", "--annotations", str(ann), "--candidates", str(cands), "--bootstrap", "50"]
    assert main(argv) == 0  # stdout is captured, not a terminal: no progress records
    assert "\r" not in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main(["mask-report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "loses most against grow" in text and "worst nodule next to grow" not in text

    empty = tmp_path / "empty"
    (empty / "subset0").mkdir(parents=True)
    assert main(["review", str(empty)]) == 2
    assert "nothing to review" in capsys.readouterr().err
    assert not (empty / "reviews").exists()


def test_a_long_job_says_how_long_it_will_take_after_its_first_epoch() -> None:
    """Issue 24 item 7: compare's defaults took ~10 hours on a laptop and nothing said so."""
    from src_train.cli.estimate import EpochClock, human_duration
    from src_train.train.events import ProgressEvent

    clock = EpochClock(lambda e: e == 1 or e % 5 == 0 or e == 20)
    events = [
        ProgressEvent("batch", epoch=1, epochs=20, time=100.0),
        ProgressEvent("batch", epoch=1, epochs=20, time=105.0),
        ProgressEvent("validation", epoch=1, epochs=20, time=110.0),
        ProgressEvent("epoch", epoch=1, epochs=20, time=115.0),
    ]
    lines = [clock.estimate(e, runs_after=2) for e in events]
    assert lines[:3] == [None, None, None]
    # 19 epochs x 10 s training + 4 validations (5, 10, 15, 20) x 5 s, then 2 whole runs of
    # 20 x 10 s + 5 x 5 s: 210 + 450 = 660 s
    assert "training 10.0 s, validation 5.0 s" in lines[3]
    assert "about 11 min more" in lines[3] and "2 more run(s)" in lines[3]
    assert clock.estimate(ProgressEvent("epoch", epoch=2, epochs=20, time=130.0)) is None
    assert human_duration(36_000) == "10 h 0 min" and human_duration(42) == "42 s"
    quiet = EpochClock(lambda e: True)  # a trainer without validation events: one figure
    quiet.estimate(ProgressEvent("batch", epoch=1, epochs=3, time=0.0))
    line = quiet.estimate(ProgressEvent("epoch", epoch=1, epochs=3, time=6.0))
    assert line is not None and "validation" not in line and "about 12 s more" in line


def test_a_dice_loss_trains_with_the_default_small_nodule_weight() -> None:
    """The demo recipe's small-nodule weight is for BCE: --loss dice alone must not be refused,
    while an explicit weight for a Dice loss still is."""
    from src_train.errors import ConfigError
    from src_train.train import TrainConfig

    for loss in ("dice", "dice-fn"):
        assert TrainConfig(loss=loss).loss_config().small_nodule_px == 0.0
        with pytest.raises(ConfigError, match="no voxel weights"):
            TrainConfig(loss=loss, small_nodule_px=30.0).loss_config()
    assert TrainConfig().loss_config().small_nodule_px == 60.0


def test_view_opens_a_2d_image_set_instead_of_refusing_it(tmp_path: Path) -> None:
    """Issue 24 item 9: 'lunaseg view' on a 2-D image folder refused although the plugin
    reads 2-D sets; a LUNA16 folder still opens its most-annotated series."""
    from napari_lunaseg._cli import view_target

    assert (
        main(["synth2d", str(tmp_path / "set"), "--images", "3", "--rows", "32", "--cols", "32"])
        == 0
    )
    assert view_target(tmp_path / "set") == tmp_path / "set"
    with pytest.raises(LunaSegError):
        view_target(tmp_path / "nothing here")
