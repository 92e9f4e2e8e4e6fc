"""reviews.csv: tolerant reading (file + line named), latest row per nodule, append-only writes
under a lock that two processes share without losing a row."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from src_train.errors import AnnotationError, OutputWriteError
from src_train.reviews import (
    REVIEW_COLUMNS,
    REVIEWS_CSV,
    Review,
    append_reviews,
    nodule_histories,
    read_reviews,
    record_verdict,
    reviews_lock,
)
from src_train.reviews.files import LOCK_FILE

HEADER = ",".join(REVIEW_COLUMNS)


def test_a_verdict_reads_back_exactly_note_with_comma_quote_and_newline(tmp_path: Path) -> None:
    note = 'vessel, not a nodule\nsecond line with "quotes"'
    record_verdict(tmp_path, "1.2.3", (-12.5, 30.25, -101.0), 6.5, "rejected", " ann ", note)
    (row,) = read_reviews(tmp_path / REVIEWS_CSV).rows
    assert row.series_uid == "1.2.3" and row.center_xyz_mm == (-12.5, 30.25, -101.0)
    assert row.diameter_mm == 6.5 and row.status == "rejected" and row.label == 0
    assert row.reviewer == "ann" and row.note == note and row.line == 2
    assert row.time_utc.endswith("Z") and len(row.time_utc) == len("2024-01-31T12:00:00Z")
    assert (tmp_path / REVIEWS_CSV).read_text().splitlines()[0] == HEADER


def test_bad_rows_are_named_by_file_and_line_and_the_others_still_read(tmp_path: Path) -> None:
    path = tmp_path / REVIEWS_CSV
    path.write_text(
        f"{HEADER}\n"
        "1.1,1,2,3,6,accepted,,ann,t,\n"  # line 2: good
        '1.1,4,5,6,6,accepted,,ann,t,"two\nlines"\n'  # lines 3-4: good, a note over two lines
        "1.1,7,8,9,6,maybe,,ann,t,\n"  # line 5: unknown status
        "1.1,abc,8,9,6,rejected,,ann,t,\n"  # line 6: non-numeric coordinate
        "1.1,7,8,9,6,corrected,,ann,t,\n"  # line 7: a correction without its label
        "1.1,7,8\n"  # line 8: too few fields
        "\n"  # line 9: blank, ignored
        "1.2,10,11,12,,added,,bob,t,\n"  # line 10: good, no diameter
    )
    read = read_reviews(path)
    assert [(r.series_uid, r.line) for r in read.rows] == [("1.1", 2), ("1.1", 3), ("1.2", 10)]
    assert read.rows[1].note == "two\nlines" and read.rows[2].diameter_mm is None
    assert len(read.problems) == 4
    for line, words in zip(
        (5, 6, 7, 8),
        ("status is 'maybe'", "coordX is 'abc'", "needs its label", "3 field(s)"),
        strict=True,
    ):
        problem = next(p for p in read.problems if f", line {line}:" in p)
        assert problem.startswith(f"{path}, line {line}: ") and words in problem


def test_a_header_without_required_columns_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / REVIEWS_CSV
    path.write_text("seriesuid,x,y,z,status\n1.1,1,2,3,accepted\n")
    with pytest.raises(AnnotationError, match=r"reviews\.csv, line 1: header lacks column\(s\) "):
        read_reviews(path)
    before = path.read_bytes()
    with pytest.raises(AnnotationError):
        append_reviews(path, [Review("1.1", (1, 2, 3), None, "accepted", reviewer="a")])
    assert path.read_bytes() == before  # nothing written


def test_latest_row_per_nodule_wins_within_half_a_millimetre() -> None:
    rows = [
        Review("1.1", (10.0, 0.0, 0.0), 6.0, "accepted", line=2),
        Review("1.1", (10.3, 0.0, 0.3), 6.0, "rejected", line=3),  # 0.42 mm away: same nodule
        Review("1.1", (10.0, 0.0, 0.6), 6.0, "accepted", line=4),  # 0.6 mm away: another one
        Review("1.2", (10.0, 0.0, 0.0), 6.0, "accepted", line=5),  # same center, other series
    ]
    histories = nodule_histories(rows)
    first, second = histories["1.1"]
    assert [r.line for r in first.rows] == [2, 3] and first.status == "rejected"
    assert first.center_xyz_mm == (10.0, 0.0, 0.0)  # the first row names the nodule
    assert [r.line for r in second.rows] == [4] and second.status == "accepted"
    assert [h.status for h in histories["1.2"]] == ["accepted"]


def test_appending_keeps_every_existing_byte(tmp_path: Path) -> None:
    path = tmp_path / REVIEWS_CSV
    # a file edited by hand: LF line ends, an extra column, no newline at the end
    old = f"{HEADER},extra\n1.1,1,2,3,6,accepted,,ann,t,hello,x".encode()
    path.write_bytes(old)
    read = append_reviews(path, [Review("1.1", (4, 5, 6), 7.0, "added", reviewer="bob")])
    data = path.read_bytes()
    assert data.startswith(old) and data[len(old) : len(old) + 2] == b"\r\n"
    assert [r.status for r in read.rows] == ["accepted", "added"] and not read.problems
    assert read.rows[1].reviewer == "bob" and read.rows[1].diameter_mm == 7.0


def _append_many(folder: str, who: str, count: int) -> None:
    for k in range(count):
        record_verdict(folder, "1.1", (float(k), 0.0, 0.0), 5.0, "accepted", who, f"{who}{k}")


def test_two_processes_appending_at_once_lose_no_row(tmp_path: Path) -> None:
    count = 25
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_append_many, args=(str(tmp_path), who, count)) for who in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    read = read_reviews(tmp_path / REVIEWS_CSV)
    assert not read.problems and len(read.rows) == 2 * count
    for who in ("a", "b"):  # each process's rows, all there and in its order
        notes = [r.note for r in read.rows if r.reviewer == who]
        assert notes == [f"{who}{k}" for k in range(count)]


def test_a_held_lock_makes_another_writer_wait_then_fail_naming_the_lock(tmp_path: Path) -> None:
    with (
        reviews_lock(tmp_path),
        pytest.raises(OutputWriteError, match=LOCK_FILE.replace(".", r"\.")),
        reviews_lock(tmp_path, timeout_s=0.1),
    ):
        pass  # pragma: no cover - never reached
    with reviews_lock(tmp_path, timeout_s=0.1):  # released: taken at once
        pass
