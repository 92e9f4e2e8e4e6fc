"""Atomic writes: the old file or the new one, never a partial file or a stray temporary."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from src_train.atomic import atomic_write, staged_folder, write_text_atomic
from src_train.errors import OutputExistsError, OutputWriteError


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "table.csv", "old\n")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_bytes_text_and_refusal_to_overwrite(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "deep" / "a.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "deep" / "a.bin").read_bytes() == b"\x00\x01"
    path = write_text_atomic(tmp_path / "b.txt", "µ\r\n")
    assert path.read_bytes() == "µ\r\n".encode()  # UTF-8, line ends as given
    with pytest.raises(OutputExistsError, match=r"b\.txt"):
        write_text_atomic(path, "x")
    assert write_text_atomic(path, "x", overwrite=True).read_text() == "x"


def test_new_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "c.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_an_unwritable_place_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputWriteError, match=r"afile.*writable folder"):
        write_text_atomic(tmp_path / "afile" / "out.csv", "x")


def _tree(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_a_staged_folder_appears_whole_and_replaces_the_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "results" / "masks"
    with staged_folder(out) as stage:
        (stage / "a_mask.mhd").write_text("1")
        (stage / "nodules.csv").write_text("a")
        assert not out.exists()  # nothing visible until the block ends
    assert _tree(out) == {"a_mask.mhd": "1", "nodules.csv": "a"}
    inode = out.stat().st_ino
    with staged_folder(out, overwrite=True) as stage:
        (stage / "b_mask.mhd").write_text("2")
        (stage / "nodules.csv").write_text("b")
    # one run, not two mixed: a's mask is gone with a's table
    assert _tree(out) == {"b_mask.mhd": "2", "nodules.csv": "b"}
    assert out.stat().st_ino == inode  # the same folder (links and open shells keep working)
    assert sorted(p.name for p in out.parent.iterdir()) == ["masks"]  # no temporary left


def test_a_failed_run_leaves_no_folder_and_keeps_the_earlier_one(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError), staged_folder(out) as stage:
        (stage / "half.csv").write_text("x")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []  # not even the parents it created
    earlier = tmp_path / "earlier"
    with staged_folder(earlier) as stage:
        (stage / "t.csv").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_folder(earlier, overwrite=True) as stage:
        (stage / "t.csv").write_text("new")
        raise KeyboardInterrupt
    assert _tree(earlier) == {"t.csv": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["earlier"]


def test_a_used_or_foreign_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with staged_folder(out) as stage:  # an empty folder is used
        (stage / "r.csv").write_text("1")
    used = pytest.raises(OutputExistsError, match=r"already holds the output \(1 file.*--overwrite")
    with used, staged_folder(out):
        pass
    (out / "thesis.docx").write_text("mine")
    foreign = pytest.raises(OutputExistsError, match=r"thesis\.docx.*left alone")
    with foreign, staged_folder(out, overwrite=True, owns=lambda name: name.endswith(".csv")):
        pass
    assert _tree(out) == {"r.csv": "1", "thesis.docx": "mine"}
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputExistsError, match="is a file"), staged_folder(tmp_path / "afile"):
        pass
