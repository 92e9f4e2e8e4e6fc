"""The reviewed ground truth: verdicts applied to masks voxel for voxel, label volumes checked
against the CT, corrections and undo, progress, export, and scoring against reviewed nodules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_luna import SPECS, record_mask, sphere, write_tiny_luna

from src_train.ct import Geometry, save_volume
from src_train.evaluate.review_requests import false_positive_requests, missed_nodule_requests
from src_train.luna import LunaFolder, Nodule, TrueNodule
from src_train.masks import SeriesTruth, build_masks, mask_nodule
from src_train.reviews import (
    REVIEWS_CSV,
    ReviewBook,
    apply_book,
    labels_file_name,
    load_labels,
    read_reviews,
    record_correction,
    record_verdict,
    review_progress,
    reviewed_annotation_rows,
    reviews_dir,
    undo,
    verdict_effects,
)
from src_train.reviews.apply import ReviewedSeries
from src_train.reviews.summary import ReviewProgress, SeriesProgress


@pytest.fixture
def luna(tmp_path: Path) -> LunaFolder:
    write_tiny_luna(tmp_path / "luna", SPECS)
    return LunaFolder(tmp_path / "luna")


def test_each_verdict_changes_the_mask_as_defined(luna: LunaFolder) -> None:
    uid = "1.1"  # flipped direction matrix: world and array axes disagree
    ct = luna.load(uid)
    first, second = luna.nodules(uid)
    folder = reviews_dir(luna.root)
    record_verdict(folder, uid, first.center_xyz_mm, 6.0, "accepted", "ann")
    record_verdict(folder, uid, second.center_xyz_mm, 6.0, "rejected", "ann", "at the edge")
    added_irc = (8, 30, 10)
    added_xyz = tuple(ct.geometry.irc_to_xyz(added_irc))
    record_verdict(folder, uid, added_xyz, 5.0, "added", "bob")

    reviewed = apply_book(ReviewBook.for_folder(luna), ct, luna.nodules(uid))
    added = Nodule(uid, added_xyz, 5.0)  # type: ignore[arg-type]
    expected = record_mask(mask_nodule(ct, first), ct.shape_irc) | record_mask(
        mask_nodule(ct, added), ct.shape_irc
    )
    np.testing.assert_array_equal(reviewed.mask, expected)
    assert [n.status for n in reviewed.nodules] == ["accepted", "rejected", "added"]
    assert [n.kept for n in reviewed.nodules] == [True, False, True]
    assert dict(reviewed.applied) == {"accepted": 1, "rejected": 1, "added": 1}
    assert [r["review"] for r in reviewed.table_rows()] == ["accepted", "rejected", "added"]
    assert reviewed.table_rows()[1]["voxel_count"] == 0 and not reviewed.problems


def test_a_correction_is_exactly_its_label_voxels_and_keeps_its_label(luna: LunaFolder) -> None:
    uid = "1.1"
    ct = luna.load(uid)
    first, second = luna.nodules(uid)
    folder = reviews_dir(luna.root)
    painted = sphere(ct.shape_irc, (5, 20, 22), 2)  # smaller than the grown nodule
    entry, _ = record_correction(folder, ct.geometry, uid, first.center_xyz_mm, 6.0, painted, "a")
    assert entry.row.label == 1
    labels = load_labels(folder / labels_file_name(uid), ct.geometry)
    assert labels is not None and labels.dtype == np.uint16
    np.testing.assert_array_equal(labels == 1, painted)

    other = sphere(ct.shape_irc, (1, 6, 38), 1)
    record_correction(folder, ct.geometry, uid, second.center_xyz_mm, 6.0, other, "a")
    again = sphere(ct.shape_irc, (5, 21, 22), 2)  # corrected again: same label, new voxels
    entry, _ = record_correction(folder, ct.geometry, uid, first.center_xyz_mm, 6.0, again, "b")
    assert entry.row.label == 1
    labels = load_labels(folder / labels_file_name(uid), ct.geometry)
    np.testing.assert_array_equal(labels == 1, again)
    np.testing.assert_array_equal(labels == 2, other & ~again)

    reviewed = apply_book(ReviewBook.for_folder(luna), ct, luna.nodules(uid))
    np.testing.assert_array_equal(reviewed.mask, again | other)
    assert reviewed.applied["corrected"] == 2
    assert reviewed.nodules[0].record.method == "review"  # type: ignore[union-attr]


def test_undo_restores_the_previous_row_and_voxels_history_kept(luna: LunaFolder) -> None:
    uid = "1.3"
    ct = luna.load(uid)
    (nodule,) = luna.nodules(uid)
    folder = reviews_dir(luna.root)
    path = folder / labels_file_name(uid)
    first = sphere(ct.shape_irc, (4, 24, 24), 2)
    record_correction(folder, ct.geometry, uid, nodule.center_xyz_mm, 6.0, first, "a")
    second = sphere(ct.shape_irc, (4, 25, 25), 3)
    entry, _ = record_correction(folder, ct.geometry, uid, nodule.center_xyz_mm, 6.0, second, "a")
    undo(folder, entry)
    np.testing.assert_array_equal(load_labels(path, ct.geometry) == 1, first)
    accept, _ = record_verdict(folder, uid, nodule.center_xyz_mm, 6.0, "accepted", "b")
    undo(folder, accept)  # back to the first correction
    rows = read_reviews(folder / REVIEWS_CSV).rows
    assert [r.status for r in rows] == [*["corrected"] * 3, "accepted", "corrected"]
    reviewed = apply_book(ReviewBook.for_folder(luna), ct, [nodule])
    np.testing.assert_array_equal(reviewed.mask, first)

    added_xyz = tuple(ct.geometry.irc_to_xyz((2, 10, 10)))
    entry, _ = record_verdict(folder, uid, added_xyz, 4.0, "added", "b")
    undo(folder, entry)  # an undone addition is no nodule: unreviewed, nothing grown
    assert read_reviews(folder / REVIEWS_CSV).rows[-1].status == "undone"
    assert len(apply_book(ReviewBook.for_folder(luna), ct, [nodule]).nodules) == 1


def test_a_label_volume_in_another_geometry_is_refused_for_its_series_only(
    luna: LunaFolder,
) -> None:
    folder = reviews_dir(luna.root)
    ct = luna.load("1.2")
    (nodule,) = luna.nodules("1.2")
    record_correction(
        folder,
        ct.geometry,
        "1.2",
        nodule.center_xyz_mm,
        6.0,
        sphere(ct.shape_irc, (8, 35, 30), 2),
        "a",
    )
    record_verdict(folder, "1.3", luna.nodules("1.3")[0].center_xyz_mm, 6.0, "rejected", "a")
    moved = Geometry(ct.shape_irc, (0.0, 0.0, 0.0), ct.geometry.spacing_xyz_mm)
    labels = load_labels(folder / labels_file_name("1.2"), ct.geometry)
    save_volume(labels, moved, folder / labels_file_name("1.2"), overwrite=True)  # type: ignore[arg-type]

    book = ReviewBook.for_folder(luna)
    reviewed = apply_book(book, ct, [nodule])
    plain, _ = build_masks(ct, [nodule])
    np.testing.assert_array_equal(reviewed.mask, plain)  # nothing applied for that series
    (problem,) = reviewed.problems
    assert labels_file_name("1.2") in problem and "does not match its CT" in problem
    assert not reviewed.applied
    other = apply_book(book, luna.load("1.3"), luna.nodules("1.3"))
    assert other.applied == {"rejected": 1} and not other.mask.any()


def test_rows_of_absent_series_or_without_annotation_are_reported_not_applied(
    luna: LunaFolder,
) -> None:
    folder = reviews_dir(luna.root)
    folder.mkdir()
    x, y, z = luna.nodules("1.1")[0].center_xyz_mm
    (folder / REVIEWS_CSV).write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm,status,label,reviewer,time_utc,note\n"
        f"9.9,{x},{y},{z},6,rejected,,a,t,\n"  # line 2: series not on disk
        f"1.1,{x + 5},{y},{z},6,rejected,,a,t,\n"  # line 3: no annotation there
        f"1.1,{x},{y},{z},6,rejected,,a,t,\n"  # line 4: applied
    )
    book = ReviewBook.for_folder(luna)
    (absent,) = book.problems
    assert absent.startswith(f"{folder / REVIEWS_CSV}, line 2: series 9.9 is not on disk")
    reviewed = apply_book(book, luna.load("1.1"), luna.nodules("1.1"))
    (orphan,) = reviewed.problems
    assert ", line 3: no annotation of series 1.1 within 0.5 mm" in orphan
    assert [n.status for n in reviewed.nodules] == ["rejected", ""]


def test_progress_counts_each_nodule_once_with_its_latest_verdict(luna: LunaFolder) -> None:
    folder = reviews_dir(luna.root)
    a, b = luna.nodules("1.1")
    record_verdict(folder, "1.1", a.center_xyz_mm, 6.0, "rejected", "ann")
    record_verdict(folder, "1.1", a.center_xyz_mm, 6.0, "accepted", "bob")  # supersedes
    record_verdict(folder, "1.1", b.center_xyz_mm, 6.0, "rejected", "ann")
    record_verdict(folder, "1.2", (1.0, 2.0, 3.0), 4.0, "added", "ann")
    entry, _ = record_verdict(folder, "1.3", (1.0, 2.0, 3.0), 4.0, "added", "ann")
    undo(folder, entry)
    progress = review_progress(ReviewBook.for_folder(luna), luna.nodules_by_series)
    assert [(s.series_uid, s.nodules, s.reviewed) for s in progress.series] == [
        ("1.1", 2, 2),
        ("1.2", 2, 1),
        ("1.3", 1, 0),
    ]
    assert progress.line() == "3 / 5 reviewed, 1 rejected, 0 corrected, 1 added"
    assert progress.by_reviewer == {"bob": {"accepted": 1}, "ann": {"rejected": 1, "added": 1}}
    assert [s.series_uid for s in progress.unreviewed_series] == ["1.2", "1.3"]
    rows = reviewed_annotation_rows(ReviewBook.for_folder(luna), luna.nodules_by_series)
    assert [(r["seriesuid"], r["review"]) for r in rows] == [
        ("1.1", "accepted"),
        ("1.2", ""),
        ("1.2", "added"),
        ("1.3", ""),
    ]
    assert rows[2]["diameter_mm"] == 4.0 and rows[2]["coordX"] == 1.0


def test_the_progress_line_groups_thousands() -> None:
    series = [SeriesProgress("a", 1186, 37)]
    progress = ReviewProgress(series, by_status={"rejected": 3, "corrected": 5, "added": 2})  # type: ignore[arg-type]
    assert progress.line() == "37 / 1,186 reviewed, 3 rejected, 5 corrected, 2 added"


def test_verdict_effects_say_whether_the_review_helped(luna: LunaFolder) -> None:
    uid = "1.3"
    ct = luna.load(uid)
    (nodule,) = luna.nodules(uid)
    truth_labels = np.zeros(ct.shape_irc, dtype=np.uint8)
    true_shape = sphere(ct.shape_irc, (4, 24, 24), 2.5)
    truth_labels[true_shape] = 1
    true_nodule = TrueNodule(uid, 1, nodule.center_xyz_mm, 6.0, "solid", 1.0)
    _, generated = build_masks(ct, [nodule])
    before = generated[0]
    folder = reviews_dir(luna.root)
    record_correction(folder, ct.geometry, uid, nodule.center_xyz_mm, 6.0, true_shape, "a")
    reviewed = apply_book(ReviewBook.for_folder(luna), ct, [nodule])
    truth = SeriesTruth.from_labels(uid, truth_labels, [nodule], [true_nodule])
    (effect,) = verdict_effects(reviewed, generated, truth)
    own = record_mask(before, ct.shape_irc)
    expected_before = 2 * (own & true_shape).sum() / (own.sum() + true_shape.sum())
    assert effect.true_label == 1 and effect.dice_reviewed == pytest.approx(1.0)
    assert effect.dice_generated == pytest.approx(expected_before) and effect.change > 0  # type: ignore[operator]

    record_verdict(folder, uid, nodule.center_xyz_mm, 6.0, "rejected", "a")
    reviewed = apply_book(ReviewBook.for_folder(luna), ct, [nodule])
    (effect,) = verdict_effects(reviewed, generated, truth)
    assert effect.dice_reviewed == 0.0 and effect.change == pytest.approx(-expected_before)


def test_model_results_become_requests_by_the_luna16_hit_rule() -> None:
    nodules = [Nodule("s", (0.0, 0.0, 0.0), 10.0), Nodule("s", (50.0, 0.0, 0.0), 4.0)]
    centers = [(4.9, 0.0, 0.0), (52.0, 0.0, 0.0), (30.0, 0.0, 0.0)]  # hit, miss (r=2), miss
    requests = false_positive_requests("s", centers, [3.0, 2.5, 7.0], nodules)
    assert requests[0] is None
    assert [r.center_xyz_mm for r in requests[1:]] == [(52.0, 0.0, 0.0), (30.0, 0.0, 0.0)]  # type: ignore[union-attr]
    assert {r.kind for r in requests[1:]} == {"added"} and requests[2].diameter_mm == 7.0  # type: ignore[union-attr]
    (missed,) = missed_nodule_requests("s", centers, nodules)
    assert missed.kind == "check" and missed.center_xyz_mm == (50.0, 0.0, 0.0)


def test_apply_without_book_is_the_plain_mask(luna: LunaFolder) -> None:
    ct = luna.load("1.1")
    reviewed: ReviewedSeries = apply_book(None, ct, luna.nodules("1.1"))
    plain, records = build_masks(ct, luna.nodules("1.1"))
    np.testing.assert_array_equal(reviewed.mask, plain)
    assert [r.voxel_count for r in reviewed.records] == [r.voxel_count for r in records]
