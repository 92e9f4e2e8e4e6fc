"""Atomic writes: the old file or the new one, never a partial file or a stray temporary."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from src_train.atomic import atomic_write, write_text_atomic
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
