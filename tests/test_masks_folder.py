"""Masks for a data folder (write_masks, lunaseg mask): files, guards, Dice printed."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from src_train.commands import mask_folder
from src_train.masks import build_masks
from src_train.metrics import dice


def test_write_masks_never_writes_into_the_data_folders(tiny_synth_dir, tmp_path) -> None:
    import shutil

    from src_train.errors import OutputExistsError
    from src_train.luna import TRUTH_DIR, TRUTH_TABLE, LunaFolder

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    folder = LunaFolder(data)
    uid = folder.series_uids[0]
    ct_bytes = (data / "subset0" / f"{uid}.raw").read_bytes()
    table = (data / TRUTH_DIR / TRUTH_TABLE).read_text()
    for target in (
        data / "subset0",
        data / "truth",
        data / "truth" / "." / "",
        data / "subset0" / "m",
    ):
        with pytest.raises(OutputExistsError, match="Choose another folder"):
            mask_folder.write_masks(folder, target, overwrite=True)
    assert (data / "subset0" / f"{uid}.raw").read_bytes() == ct_bytes
    assert (data / TRUTH_DIR / TRUTH_TABLE).read_text() == table


def test_cli_mask_bad_threshold_and_data_folder_are_one_line_errors(
    tiny_synth_dir, tmp_path, capsys
) -> None:
    from src_train.cli import main

    out = tmp_path / "m"
    for option in ("--threshold-hu", "--threshold"):  # the option and its older name
        assert main(["mask", str(tiny_synth_dir), "--out", str(out), option, "nan"]) == 2
        assert "not a finite number of HU" in capsys.readouterr().err and not out.exists()
    subset = str(tiny_synth_dir / "subset0")
    assert main(["mask", str(tiny_synth_dir), "--out", subset, "--overwrite"]) == 2
    assert "Choose another folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    report_out = str(tmp_path / "afile" / "report")
    assert main(["mask-report", str(tiny_synth_dir), "--out", report_out, "--methods", "grow"]) == 2
    assert "Cannot write" in capsys.readouterr().err


def _printed_dice(printed: str, uid: str) -> dict[int, str]:
    """``label -> Dice text`` from the per-nodule lines ``lunaseg mask`` prints for ``uid``."""
    found = {}
    for line in printed.splitlines():
        if line.startswith(f"  {uid} label "):
            label = int(line.split(" label ")[1].split()[0])
            found[label] = line.split("): ")[1].split()[0]
    return found


@pytest.mark.parametrize("method", ["grow", "region"])
def test_cli_mask_series_and_dice_against_truth(tiny_synth_dir, tmp_path, capsys, method) -> None:
    from src_train.cli import main
    from src_train.ct import load_ct
    from src_train.luna import LunaFolder

    folder = LunaFolder(tiny_synth_dir)
    uid = folder.series_uids[1]
    out = tmp_path / "masks"
    args = ["mask", str(tiny_synth_dir), "--out", str(out), "--threshold-hu", "-650"]
    assert main([*args, "--method", method, "--series", uid]) == 0
    printed = capsys.readouterr().out

    # --series: only that series' mask and rows; the mask is the CT's geometry, uint8 0/1.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{uid}_mask.mhd", f"{uid}_mask.zraw", mask_folder.MASK_TABLE]
    )
    ct = folder.load(uid)
    written = load_ct(out / f"{uid}_mask.mhd")
    assert written.geometry == ct.geometry
    assert "ElementType = MET_UCHAR" in (out / f"{uid}_mask.mhd").read_text()  # uint8
    assert set(np.unique(written.hu).tolist()) <= {0, 1}
    rows = (out / mask_folder.MASK_TABLE).read_text().splitlines()[1:]
    assert len(rows) == len(folder.nodules(uid)) and all(r.startswith(f"{uid},") for r in rows)

    # The printed Dice of each true nodule is dice of its own mask vs its true label.
    labels = load_ct(folder.truth_path(uid)).hu
    nodules, truths = folder.nodules(uid), folder.true_nodules(uid)
    assert len(nodules) == len(truths) >= 2  # synthetic annotations are in label order
    _, records = build_masks(ct, nodules, -650, method)
    expected = {}
    for truth, rec in zip(truths, records, strict=True):
        own = np.zeros(ct.shape_irc, dtype=bool)
        own[rec.box_slices] = rec.local_mask
        expected[truth.label] = dice(own, labels == truth.label)
    assert _printed_dice(printed, uid) == {k: f"{v:.3f}" for k, v in expected.items()}
    mean = float(np.mean(list(expected.values())))
    assert f"mean Dice {mean:.3f} over {len(truths)} true nodules ({method})" in printed
    assert 0.3 < mean <= 1.0


def test_cli_mask_unknown_series_is_a_one_line_error(tiny_synth_dir, tmp_path, capsys) -> None:
    from src_train.cli import main

    out = tmp_path / "masks"
    known = sorted(p.stem for p in (tiny_synth_dir / "subset0").glob("*.mhd"))[0]
    argv = ["mask", str(tiny_synth_dir), "--out", str(out), "--series", known, "9.9.9"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("lunaseg mask: error: Series 9.9.9 not found under ")
    assert str(tiny_synth_dir) in line and known not in line
    assert "Traceback" not in captured.err and not out.exists()  # checked before any work


def test_cli_mask_lists_missing_series_and_scores_only_with_truth(
    tiny_synth_dir, tmp_path, capsys, caplog
) -> None:
    import shutil

    from src_train.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data, ignore=shutil.ignore_patterns("truth"))
    absent = ["9.9.1", "9.9.2"]
    with (data / "annotations.csv").open("a", encoding="utf-8") as handle:
        handle.writelines(f"{uid},0,0,0,5\n" for uid in absent)
    with caplog.at_level(logging.WARNING):
        assert main(["mask", str(data)]) == 0
    printed = capsys.readouterr().out
    # named once (the folder's warning), not a second time by the command
    warned = [r.getMessage() for r in caplog.records if "9.9.1" in r.getMessage()]
    assert len(warned) == 1 and "2 of " in warned[0] and "9.9.2" in warned[0]
    assert "9.9.1" not in printed
    assert "Dice" not in printed  # no truth/ here
    assert (data / "masks" / mask_folder.MASK_TABLE).is_file()  # the default --out
    assert not any("9.9." in p.name for p in (data / "masks").iterdir())


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"lunaseg {command}: error: ") and "Traceback" not in captured.err
    return line


def test_cli_mask_refuses_a_folder_without_series_or_annotations_and_creates_nothing(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["mask", str(empty)]) == 2
    assert "holds no series" in _one_error_line(capsys, "mask")
    assert list(empty.iterdir()) == []  # no masks/ left to trip up a later 'lunaseg synth'
    unannotated = tmp_path / "unannotated"
    shutil.copytree(tiny_synth_dir / "subset0", unannotated / "subset0")
    assert main(["mask", str(unannotated)]) == 2
    assert "no annotations.csv" in _one_error_line(capsys, "mask")
    assert sorted(p.name for p in unannotated.iterdir()) == ["subset0"]
    assert main(["synth", str(empty), "--tiny", "--scans", "1"]) == 0  # the folder is still free


def test_cli_mask_overwrite_makes_the_folder_one_run(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.cli import main
    from src_train.luna import LunaFolder

    uids = LunaFolder(tiny_synth_dir).series_uids
    out = tmp_path / "masks"
    assert main(["mask", str(tiny_synth_dir), "--out", str(out), "--method", "grow"]) == 0
    assert len(list(out.glob("*_mask.mhd"))) == len(uids)
    argv = ["mask", str(tiny_synth_dir), "--out", str(out), "--series", uids[1], "--overwrite"]
    assert main(argv) == 0
    # the table and the masks beside it come from the same run: only uids[1]
    assert [p.name for p in out.glob("*_mask.mhd")] == [mask_folder.mask_file_name(uids[1])]
    rows = (out / mask_folder.MASK_TABLE).read_text().splitlines()[1:]
    assert rows and all(row.startswith(f"{uids[1]},") for row in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]  # no temporary left
    capsys.readouterr()


def test_a_failed_mask_run_leaves_no_folder_and_keeps_the_earlier_run(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.cli import main
    from src_train.luna import LunaFolder

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    last = LunaFolder(data).series_uids[-1]  # fails after the other series' masks are made
    out = data / "masks"
    assert main(["mask", str(data)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with (data / "annotations.csv").open("a", encoding="utf-8") as handle:
        handle.write(f"{last},9000,9000,9000,5\n")  # a nodule outside its scan
    assert main(["mask", str(data), "--overwrite"]) == 2
    assert "outside" in _one_error_line(capsys, "mask")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier run, whole
    fresh = tmp_path / "fresh"
    assert main(["mask", str(data), "--out", str(fresh)]) == 2
    capsys.readouterr()
    assert not fresh.exists()  # no empty or half-written folder
    assert not [p for p in [*tmp_path.iterdir(), *data.iterdir()] if p.name.startswith(".")]


def test_cli_mask_report_refuses_to_replace_a_report_without_overwrite(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from src_train.cli import main

    out = tmp_path / "report"
    argv = ["mask-report", str(tiny_synth_dir), "--out", str(out), "--methods", "grow"]
    assert main(argv) == 0
    summary = (out / "mask_report_summary.csv").read_text()
    assert main(argv) == 2
    line = _one_error_line(capsys, "mask-report")
    assert "already holds" in line and "--overwrite" in line
    assert main([*argv, "--overwrite", "--threshold-hu", "-500"]) == 0
    assert (out / "mask_report_summary.csv").read_text() != summary  # replaced, not kept
    capsys.readouterr()
    no_truth = tmp_path / "no_truth"
    shutil.copytree(tiny_synth_dir, no_truth, ignore=shutil.ignore_patterns("truth"))
    assert main(["mask-report", str(no_truth)]) == 2
    assert "no series with a true shape" in _one_error_line(capsys, "mask-report")
    assert not (no_truth / "mask-report").exists()


def test_folder_commands_do_the_rest_list_the_failures_and_exit_non_zero(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24 item 8: lunaseg mask stopped the whole folder at the first unreadable series,
    while cache and infer went on; now each does the rest, lists the failures, exits 1."""
    from src_train.cli import main
    from src_train.commands.mask_folder import mask_file_name
    from src_train.luna import LunaFolder

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    uids = LunaFolder(data).series_uids
    broken = uids[0]
    for raw in (data / "subset0").glob(f"{broken}.*raw"):
        raw.write_bytes(raw.read_bytes()[:100])  # truncated: unreadable
    out = tmp_path / "masks"
    for argv, command in (
        (["mask", str(data), "--out", str(out)], "mask"),
        (["cache", str(data), "--workers", "1"], "cache"),
    ):
        assert main(argv) == 1, command
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"lunaseg {command}: failed: {broken}: ")
        assert err[-1].startswith(f"lunaseg {command}: 1 series failed (the others are done)")
    assert sorted(p.name for p in out.glob("*_mask.mhd")) == sorted(
        mask_file_name(uid) for uid in uids[1:]
    )
