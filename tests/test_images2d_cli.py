"""``lunaseg synth2d`` and ``lunaseg compare``: options generated from the dataclasses, comma
lists as the issue writes them, progress lines, Ctrl-C as a clean stop, one-line errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from src_train.cli import build_parser, main
from src_train.images2d.compare import ComparisonResult
from src_train.images2d.folder import find_pairs
from src_train.images2d.options import CompareOptions
from src_train.options import options_from_args

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_compare_options_come_from_the_dataclass() -> None:
    args = build_parser().parse_args(
        [
            "compare",
            "DATA",
            "--models",
            "unet,segnet:8",
            "--losses",
            "bce,dice,focal",
            "--epochs",
            "7",
            "--split",
            "60,20,20",
            "--out",
            "OUT",
        ]
    )
    options = options_from_args(CompareOptions, args, data=args.data)
    assert options.models == ("unet", "segnet:8") and options.losses == ("bce", "dice", "focal")
    assert (options.epochs, options.split, options.out) == (7, (60, 20, 20), "OUT")
    assert options.size == CompareOptions(data="DATA").size  # not given: the dataclass default
    assert options.data == str(Path("DATA").resolve())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--losses", "bce,hinge"], "invalid choice 'hinge'"),
        (["--split", "100,50"], "expected 3 values"),
        (["--epochs", "ten"], "invalid int value"),
    ],
)
def test_bad_command_lines_are_refused_by_the_parser(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "DATA", *argv])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("folder", ["empty", "ct"])
def test_bad_folders_are_one_line_errors(tmp_path: Path, folder: str, capsys) -> None:
    data = tmp_path / folder
    data.mkdir()
    if folder == "ct":
        (data / "scan.nii.gz").write_bytes(b"")
    code = main(["compare", str(data), "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    expected = "holds no images" if folder == "empty" else "holds CT series"
    assert err.startswith("lunaseg compare: error: ") and expected in err


def test_synth2d_writes_a_set_compare_reads(tmp_path: Path, capsys) -> None:
    out = tmp_path / "set"
    argv = ["synth2d", str(out), "--images", "5", "--rows", "32", "--cols", "40"]
    assert main([*argv, "--layout", "flat"]) == 0
    text = capsys.readouterr().out
    assert "wrote 5 images with masks" in text and f"lunaseg compare {out}" in text
    paired = find_pairs(out)
    assert paired.layout == "names" and len(paired.pairs) == 5
    assert main(argv) == 2  # a used folder without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0  # PH2 layout this time
    assert find_pairs(out).layout == "ph2"


def test_ctrl_c_is_a_stop_request(tmp_path: Path, monkeypatch, capsys) -> None:
    """SIGINT during the comparison sets its should_stop; the command says how to resume."""
    seen: dict[str, bool] = {}

    def fake_comparison(options, callbacks, should_stop, command_line):  # type: ignore[no-untyped-def]
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        seen["stop"] = should_stop()
        return ComparisonResult(Path(options.out), [], stopped=True)

    monkeypatch.setattr("src_train.images2d.compare.run_comparison", fake_comparison)
    before = signal.getsignal(signal.SIGINT)
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "o")]) == 130
    assert seen["stop"] is True
    assert "--resume" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is before, "the handler is restored"


@pytest.mark.slow
def test_compare_prints_progress_and_json_events(tmp_path: Path, capsys) -> None:
    data = tmp_path / "set"
    assert main(["synth2d", str(data), "--images", "9", "--rows", "32", "--cols", "32"]) == 0
    capsys.readouterr()
    argv = ["compare", str(data), "--out", str(tmp_path / "out"), "--models", "unet:4"]
    argv += ["--losses", "bce,dice", "--epochs", "1", "--size", "16", "--depth", "2"]
    assert main([*argv, "--device", "cpu", "--progress-json"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds.count("epoch") == 2 and kinds.count("compare/scored") == 2
    assert "checkpoint" in kinds and kinds[-1] == "compare/end"
    assert all("train/loss" in e["metrics"] for e in events if e["kind"] == "epoch")
    lines = captured.err.splitlines()
    assert "[1/2] unet-4_bce_s0: training" in lines and "ranking by validation IoU:" in lines
    assert any(line.startswith("estimate: epoch 1 took") for line in lines)
    assert any(line.startswith("report: ") for line in lines)
