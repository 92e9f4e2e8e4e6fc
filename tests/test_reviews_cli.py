"""The reviewed ground truth downstream: lunaseg mask / review, the training cache, scoring."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tiny_luna import SPECS, record_mask, sphere, write_tiny_luna

from src_train.cache import SeriesCache
from src_train.cli import main
from src_train.ct import load_ct
from src_train.luna import LunaFolder, Nodule
from src_train.masks import build_masks, mask_nodule
from src_train.reviews import (
    EXPORT_CSV,
    REVIEWS_CSV,
    ReviewBook,
    labels_file_name,
    record_correction,
    record_verdict,
    reviews_dir,
)


@pytest.fixture
def luna(tmp_path: Path) -> LunaFolder:
    write_tiny_luna(tmp_path / "luna", SPECS)
    return LunaFolder(tmp_path / "luna")


def _review_all(luna: LunaFolder) -> dict[str, np.ndarray]:
    """One verdict of each kind; returns the masks they define, computed by hand."""
    folder = reviews_dir(luna.root)
    expected = {}
    ct = luna.load("1.1")
    a, b = luna.nodules("1.1")
    painted = sphere(ct.shape_irc, (5, 20, 22), 2) | sphere(ct.shape_irc, (5, 24, 22), 1)
    record_correction(folder, ct.geometry, "1.1", a.center_xyz_mm, 6.0, painted, "ann")
    record_verdict(folder, "1.1", b.center_xyz_mm, 6.0, "rejected", "ann", "edge artefact")
    expected["1.1"] = painted
    ct = luna.load("1.2")
    (c,) = luna.nodules("1.2")
    record_verdict(folder, "1.2", c.center_xyz_mm, 6.0, "accepted", "bob")
    spot = tuple(float(v) for v in ct.geometry.irc_to_xyz((3, 50, 20)))
    record_verdict(folder, "1.2", spot, 4.0, "added", "bob")
    expected["1.2"] = record_mask(mask_nodule(ct, c), ct.shape_irc) | record_mask(
        mask_nodule(ct, Nodule("1.2", spot, 4.0)),  # type: ignore[arg-type]
        ct.shape_irc,
    )
    ct = luna.load("1.3")
    expected["1.3"], _ = build_masks(ct, luna.nodules("1.3"))  # unreviewed
    return expected


def test_cli_masks_follow_reviews_csv_and_the_label_volume_exactly(
    luna: LunaFolder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _review_all(luna)
    out = tmp_path / "masks"
    assert main(["mask", str(luna.root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 accepted, 1 rejected, 1 corrected, 1 added" in printed
    for uid, mask in expected.items():
        written = load_ct(out / f"{uid}_mask.mhd").hu.astype(bool)
        np.testing.assert_array_equal(written, mask, err_msg=uid)
    with (out / "nodules.csv").open() as handle:
        reviews = [(r["seriesuid"], r["review"], r["voxel_count"]) for r in csv.DictReader(handle)]
    assert [r[:2] for r in reviews] == [
        ("1.1", "corrected"),
        ("1.1", "rejected"),
        ("1.2", "accepted"),
        ("1.2", "added"),
        ("1.3", ""),
    ]
    assert reviews[0][2] == str(int(expected["1.1"].sum())) and reviews[1][2] == "0"

    assert main(["mask", str(luna.root), "--out", str(out), "--overwrite", "--no-reviews"]) == 0
    assert "reviews ignored (--no-reviews)" in capsys.readouterr().out
    for uid in expected:
        plain, _ = build_masks(luna.load(uid), luna.nodules(uid))
        np.testing.assert_array_equal(load_ct(out / f"{uid}_mask.mhd").hu.astype(bool), plain)


def test_cli_bad_review_rows_are_named_and_the_others_applied(
    luna: LunaFolder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = reviews_dir(luna.root)
    record_verdict(folder, "1.3", luna.nodules("1.3")[0].center_xyz_mm, 6.0, "rejected", "a")
    with (folder / REVIEWS_CSV).open("a") as handle:
        handle.write("1.1,1,2,3,6,perhaps,,a,t,\r\n")  # line 3
        handle.write("1.1,x,2,3,6,rejected,,a,t,\r\n")  # line 4
        handle.write("7.7,1,2,3,6,rejected,,a,t,\r\n")  # line 5: series not on disk
    out = tmp_path / "masks"
    csv_path = folder / REVIEWS_CSV
    # issue 21 "Bad input": a command stops at an unreadable row (exit 2, one line naming it)
    for command in (["mask", str(luna.root), "--out", str(out)], ["review", str(luna.root)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"{csv_path}, line 3: status is 'perhaps'" in err and "1 more bad row" in err
    assert not out.exists()
    # the viewer's lenient reading names every skipped row and applies the others
    book = ReviewBook.for_folder(luna)
    for line, words in ((3, "status is 'perhaps'"), (4, "coordX is 'x'"), (5, "series 7.7")):
        assert any(f"{csv_path}, line {line}: {words}" in p for p in book.problems)
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:2] + lines[4:]) + "\n")  # bad rows 3 and 4 deleted
    assert main(["mask", str(luna.root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{csv_path}, line 3: series 7.7" in printed  # not on disk: named, not fatal
    assert "reviews applied" in printed and "1 rejected" in printed
    assert not load_ct(out / "1.3_mask.mhd").hu.any()  # the good row is applied


def test_cli_label_volume_in_another_geometry_is_refused_with_a_message(
    luna: LunaFolder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _review_all(luna)
    path = reviews_dir(luna.root) / labels_file_name("1.1")
    text = path.read_text().splitlines()  # the header of a volume in another place
    text = [line if not line.startswith("Offset") else "Offset = 0 0 0" for line in text]
    path.write_text("\n".join(text) + "\n")
    out = tmp_path / "masks"
    assert main(["mask", str(luna.root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{path}: its geometry" in printed and "none of this series' reviews" in printed
    plain, _ = build_masks(luna.load("1.1"), luna.nodules("1.1"))
    np.testing.assert_array_equal(load_ct(out / "1.1_mask.mhd").hu.astype(bool), plain)
    assert load_ct(out / "1.2_mask.mhd").hu.sum() > 0  # other series keep their reviews


def test_cli_review_prints_progress_and_exports_luna16_csv(
    luna: LunaFolder, capsys: pytest.CaptureFixture[str]
) -> None:
    _review_all(luna)
    assert main(["review", str(luna.root)]) == 0
    printed = capsys.readouterr().out
    assert "4 / 5 reviewed, 1 rejected, 1 corrected, 1 added" in printed
    assert "by status: accepted 1, rejected 1, corrected 1, added 1" in printed
    assert "  ann: 2 (rejected 1, corrected 1)" in printed
    assert "  bob: 2 (accepted 1, added 1)" in printed
    assert "series with unreviewed nodules: 1 of 3\n  1.3: 0/1 reviewed" in printed
    export = reviews_dir(luna.root) / EXPORT_CSV
    with export.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["seriesuid"], r["review"]) for r in rows] == [
        ("1.1", "corrected"),
        ("1.2", "accepted"),
        ("1.2", "added"),
        ("1.3", ""),
    ]
    assert list(rows[0])[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert main(["review", str(luna.root)]) == 0  # the default export is refreshed
    assert main(["review", str(luna.root), "--export", str(luna.annotations_path)]) == 2
    assert "is an input of the review" in capsys.readouterr().err


def test_a_changed_review_invalidates_exactly_its_series_in_the_cache(luna: LunaFolder) -> None:
    cache = SeriesCache(luna.root)
    cache.build_all()
    folder = reviews_dir(luna.root)
    a, b = luna.nodules("1.1")
    record_verdict(folder, "1.1", b.center_xyz_mm, 6.0, "rejected", "ann")
    fresh = SeriesCache(luna.root)
    assert [fresh.is_valid(u) for u in ("1.1", "1.2", "1.3")] == [False, True, True]
    meta = fresh.meta("1.1")
    ct = luna.load("1.1")
    _canonical, turn = ct.canonical()  # 1.1 is stored flipped; the cache keeps the canonical
    assert not turn.is_identity
    np.testing.assert_array_equal(
        fresh.arrays("1.1")[1].unpack(),
        turn.to_canonical(record_mask(mask_nodule(ct, a), ct.shape_irc)),
    )
    assert len(meta.nodule_centers_irc) == 1  # training crops no longer visit the rejected one
    assert not SeriesCache(luna.root, reviews=False).is_valid("1.1")

    painted = sphere(ct.shape_irc, (5, 20, 22), 1)
    record_correction(folder, ct.geometry, "1.1", a.center_xyz_mm, 6.0, painted, "ann")
    fresh = SeriesCache(luna.root)
    assert [fresh.is_valid(u) for u in ("1.1", "1.2", "1.3")] == [False, True, True]
    fresh.meta("1.1")
    # the painted voxels (file order, as the viewer saves them) in the cache's canonical order
    np.testing.assert_array_equal(fresh.arrays("1.1")[1].unpack(), turn.to_canonical(painted))
    assert SeriesCache(luna.root).is_valid("1.1")


def test_eval_and_infer_can_score_against_reviewed_nodules(
    luna: LunaFolder, tmp_path: Path
) -> None:
    from src_train.commands.eval_run import EvalOptions, evaluate_run
    from src_train.commands.infer_folder import InferRunOptions

    folder = reviews_dir(luna.root)
    a, b = luna.nodules("1.1")
    record_verdict(folder, "1.1", b.center_xyz_mm, 6.0, "rejected", "ann")
    record_verdict(folder, "1.3", (1.0, 2.0, 3.0), 8.0, "added", "ann")
    candidates = tmp_path / "candidates.csv"
    x, y, z = a.center_xyz_mm
    candidates.write_text(f"seriesuid,coordX,coordY,coordZ,probability\n1.1,{x},{y},{z},0.9\n")
    base = {"annotations": str(luna.annotations_path), "candidates": str(candidates)}
    plain = evaluate_run(EvalOptions(**base)).result
    reviewed = evaluate_run(EvalOptions(**base, reviewed=True))
    assert plain.n_nodules == 4 and plain.n_detected == 1
    assert (
        reviewed.result.n_nodules == 4 and reviewed.result.n_detected == 1
    )  # -1 rejected +1 added
    assert (1.0, 2.0, 3.0) in [n.center_xyz_mm for n in reviewed.result.nodules]
    assert b.center_xyz_mm not in [n.center_xyz_mm for n in reviewed.result.nodules]
    assert any("reviewed nodules" in note for note in reviewed.notes)

    from src_train.commands.infer_folder import choose_scope

    truth = choose_scope(luna.root, InferRunOptions(reviewed=True)).truth
    assert truth is not None and truth.nodules("1.1") == [a]
    assert [n.center_xyz_mm for n in truth.nodules("1.3")][-1] == (1.0, 2.0, 3.0)
