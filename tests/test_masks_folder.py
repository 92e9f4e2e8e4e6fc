"""Masks for a data folder (write_masks, lunaseg mask): files, guards, Dice printed."""

from __future__ import annotations

import numpy as np
import pytest

from src_train import masks
from src_train.masks import (
    build_masks,
)
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
            masks.write_masks(folder, target, overwrite=True)
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
        [f"{uid}_mask.mhd", f"{uid}_mask.zraw", masks.MASK_TABLE]
    )
    ct = folder.load(uid)
    written = load_ct(out / f"{uid}_mask.mhd")
    assert written.geometry == ct.geometry
    assert "ElementType = MET_UCHAR" in (out / f"{uid}_mask.mhd").read_text()  # uint8
    assert set(np.unique(written.hu).tolist()) <= {0, 1}
    rows = (out / masks.MASK_TABLE).read_text().splitlines()[1:]
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
    tiny_synth_dir, tmp_path, capsys
) -> None:
    import shutil

    from src_train.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data, ignore=shutil.ignore_patterns("truth"))
    absent = ["9.9.1", "9.9.2"]
    with (data / "annotations.csv").open("a", encoding="utf-8") as handle:
        handle.writelines(f"{uid},0,0,0,5\n" for uid in absent)
    assert main(["mask", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "2 annotated series not on disk, skipped: 9.9.1, 9.9.2" in printed
    assert "Dice" not in printed  # no truth/ here
    assert (data / "masks" / masks.MASK_TABLE).is_file()  # the default --out
    assert not any("9.9." in p.name for p in (data / "masks").iterdir())
