"""lunaseg infer over a data set: a kill and a rerun, parts, a bad series, a full disk, refusals.

Every run here uses the tiny synthetic folder (4 series) and an untrained U-Net. Runs whose
results are compared exactly pin how the model runs (one thread, NCHW, batch 4): the tuner
otherwise picks the memory format by timing, and channels-last moves about one voxel per
100 000 by one float16 step. The SIGKILL test runs the CLI, where the format is tuned, so it
compares candidates within that rounding (:data:`COORD_TOL_MM`, :data:`PROB_TOL`).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from models import checkpoint_file

from src_train.atomic import atomic_write
from src_train.cli import main
from src_train.commands.infer_folder import InferRunOptions, infer_to_folder
from src_train.errors import ConfigError, OutputExistsError
from src_train.infer import InferenceOptions, InferEvent
from src_train.infer import outputs as outputs_module
from src_train.infer import records as records_module
from src_train.infer.records import complete_record, record_path
from src_train.luna import LunaFolder
from src_train.records.infer_files import RUN_FILE

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: Candidates of two runs whose memory format the tuner chose may differ by float16 rounding.
COORD_TOL_MM = 0.05
PROB_TOL = 2e-3
#: Seconds the SIGKILL test waits for the first record before giving up.
FIRST_RECORD_TIMEOUT_S = 240.0


def pinned(**fields: object) -> InferRunOptions:
    """Run options with every execution choice fixed, so two runs give the same bits."""
    inference = InferenceOptions(device="cpu", batch_size=4, num_threads=1, channels_last=False)
    return InferRunOptions(inference=inference, **fields)  # type: ignore[arg-type]


def candidate_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def same_candidates(a: Path, b: Path) -> None:
    """Same series, same number of candidates, positions and scores within float16 rounding."""
    rows_a, rows_b = candidate_rows(a), candidate_rows(b)
    assert [r["seriesuid"] for r in rows_a] == [r["seriesuid"] for r in rows_b]

    def key(r: dict[str, str]) -> tuple[str, float, float, float]:
        return (r["seriesuid"], float(r["coordX"]), float(r["coordY"]), float(r["coordZ"]))

    for ra, rb in zip(sorted(rows_a, key=key), sorted(rows_b, key=key), strict=True):
        assert ra["seriesuid"] == rb["seriesuid"]
        for col in ("coordX", "coordY", "coordZ"):
            assert abs(float(ra[col]) - float(rb[col])) <= COORD_TOL_MM, (ra, rb)
        assert abs(float(ra["probability"]) - float(rb["probability"])) <= PROB_TOL, (ra, rb)
        assert ra["voxel_count"] == rb["voxel_count"], (ra, rb)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint_file(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def reference(tiny_synth_dir: Path, ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run with pinned settings; its output folder."""
    out = tmp_path_factory.mktemp("reference") / "out"
    summary = infer_to_folder(tiny_synth_dir, out, pinned(checkpoint=str(ckpt)))
    assert summary.complete and summary.ok and len(summary.series) == 4
    return out


def test_a_run_killed_after_its_first_series_resumes_without_recomputing_it(
    tiny_synth_dir: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uids = LunaFolder(tiny_synth_dir).series_uids
    args = ["infer", str(tiny_synth_dir), "--checkpoint", str(ckpt), "--device", "cpu"]
    args += ["--batch-size", "4"]
    uninterrupted = tmp_path / "uninterrupted"
    assert main([*args, "--out", str(uninterrupted)]) == 0
    capsys.readouterr()

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "src_train.cli", *args, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + FIRST_RECORD_TIMEOUT_S
    try:
        while not any(record_path(out, uid).exists() for uid in uids):
            assert proc.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "no series finished in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [uid for uid in uids if record_path(out, uid).exists()]
    assert done and len(done) < len(uids)
    assert not (out / "candidates.csv").exists() and not (out / "seriesuids.csv").exists()
    stamps = {p: p.stat().st_mtime_ns for uid in done for p in out.glob(f"{uid}*")}

    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(done)} already complete (skipped), {len(uids) - len(done)} to run" in printed
    assert f"{len(uids) - len(done)} series computed, {len(done)} skipped" in printed
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "finished series not rewritten"
    assert (out / "seriesuids.csv").read_text().split() == uids
    same_candidates(out / "candidates.csv", uninterrupted / "candidates.csv")

    # A third run has nothing to do and writes the same tables.
    before = (out / "candidates.csv").read_bytes()
    assert main([*args, "--out", str(out)]) == 0
    assert "0 series computed, 4 skipped" in capsys.readouterr().out
    assert (out / "candidates.csv").read_bytes() == before


def test_two_parts_at_once_give_exactly_the_candidates_of_one_run(
    tiny_synth_dir: Path, ckpt: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "parts"
    results: dict[int, object] = {}
    events: dict[int, list[InferEvent]] = {0: [], 1: []}

    def run_part(part: int) -> None:
        try:
            results[part] = infer_to_folder(
                tiny_synth_dir,
                out,
                pinned(checkpoint=str(ckpt), num_parts=2, part_id=part),
                on_event=events[part].append,
            )
        except BaseException as exc:  # reported by the main thread
            results[part] = exc

    threads = [threading.Thread(target=run_part, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summaries = [results[0], results[1]]
    for s in summaries:
        assert not isinstance(s, BaseException), s
    uids = LunaFolder(tiny_synth_dir).series_uids
    computed = [[r.series_uid for r in s.series] for s in summaries]  # type: ignore[attr-defined]
    assert computed == [uids[0::2], uids[1::2]]  # round robin over the sorted series
    assert any(s.complete for s in summaries)  # type: ignore[attr-defined]
    assert (out / "candidates.csv").read_bytes() == (reference / "candidates.csv").read_bytes()
    assert (out / "seriesuids.csv").read_bytes() == (reference / "seriesuids.csv").read_bytes()
    for part in (0, 1):
        kinds = [e.kind for e in events[part]]
        assert kinds == ["start", "series", "series", "end"]
        assert [e.done for e in events[part]] == [0, 1, 2, 2]
        assert all(
            e.total == 2 and e.run_total == 4 and e.part == f"{part + 1}/2" for e in events[part]
        )
        last = events[part][-2]
        assert last.series_per_minute > 0 and last.eta_s == 0.0
        assert events[part][-1].run_done >= 2


def test_a_corrupt_series_is_reported_and_the_others_are_written(
    tiny_synth_dir: Path,
    ckpt: Path,
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_dir, data)
    folder = LunaFolder(data)
    uids = folder.series_uids
    bad = uids[1]
    raw = folder.series_path(bad).with_suffix(".raw")
    good_bytes = raw.read_bytes()
    raw.write_bytes(good_bytes[: len(good_bytes) // 3])  # a truncated download
    out = tmp_path / "out"
    args = ["infer", str(data), "--out", str(out), "--checkpoint", str(ckpt), "--device", "cpu"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert f"failed: {bad}: SeriesReadError" in captured.err and raw.name in captured.err
    assert f"FAILED {bad}" in captured.out
    for uid in uids:
        assert record_path(out, uid).exists() == (uid != bad)
    assert not list(out.glob(f"{bad}_*")), "nothing of the failed series is left"
    assert not (out / "candidates.csv").exists(), "the tables are complete or absent"
    assert bad in json.loads((out / f"{bad}.failed.json").read_text())["series_uid"]

    raw.write_bytes(good_bytes)  # fixed: the rerun computes only that series
    assert main(args) == 0
    assert "1 series computed, 3 skipped" in capsys.readouterr().out
    assert not (out / f"{bad}.failed.json").exists()
    assert (out / "seriesuids.csv").read_text().split() == uids


def test_a_full_disk_fails_the_series_cleanly_and_a_resume_trusts_nothing_partial(
    tiny_synth_dir: Path,
    ckpt: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uids = LunaFolder(tiny_synth_dir).series_uids
    out = tmp_path / "out"
    real_save = outputs_module.save_volume
    calls = {"n": 0}

    def save_until_full(array, geometry, path, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:  # series 2: prob written, then the mask hits a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(array, geometry, path, **kwargs)

    monkeypatch.setattr(outputs_module, "save_volume", save_until_full)
    summary = infer_to_folder(tiny_synth_dir, out, pinned(checkpoint=str(ckpt)))
    assert [f.series_uid for f in summary.failures] == [uids[1]]
    assert "No space left on device" in summary.failures[0].reason
    assert summary.not_attempted == uids[2:], "a full disk stops the run"
    assert [r.series_uid for r in summary.series] == uids[:1]
    assert not list(out.glob(f"{uids[1]}_*")) and not record_path(out, uids[1]).exists()
    assert not (out / "candidates.csv").exists()

    # The record itself hits the full disk half-way: the atomic writer leaves nothing.
    real_write = records_module.write_text_atomic

    def half_then_full(path, text, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path).name.endswith(".json") and Path(path).name != RUN_FILE:
            with atomic_write(path, "w", overwrite=True) as fh:
                fh.write(text[: len(text) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, text, **kwargs)

    monkeypatch.setattr(outputs_module, "save_volume", real_save)
    monkeypatch.setattr(records_module, "write_text_atomic", half_then_full)
    again = infer_to_folder(tiny_synth_dir, out, pinned(checkpoint=str(ckpt)))
    assert [f.series_uid for f in again.failures] == [uids[1]] and again.not_attempted == uids[2:]
    assert not record_path(out, uids[1]).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file is left"

    monkeypatch.setattr(records_module, "write_text_atomic", real_write)
    final = infer_to_folder(tiny_synth_dir, out, pinned(checkpoint=str(ckpt)))
    assert final.ok and final.complete and [r.series_uid for r in final.series] == uids[1:]
    assert (out / "candidates.csv").read_bytes() == (reference / "candidates.csv").read_bytes()


def test_a_run_with_other_settings_is_refused_naming_each_difference(
    tiny_synth_dir: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    infer_to_folder(tiny_synth_dir, out, pinned(checkpoint=str(ckpt), limit=1))
    other_ckpt = checkpoint_file(tmp_path, "other.pt")
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    started: list[object] = []
    other = InferenceOptions(device="cpu", threshold=0.7, crop_to_body=False)
    with pytest.raises(OutputExistsError) as info:
        infer_to_folder(
            tiny_synth_dir,
            out,
            InferRunOptions(checkpoint=str(other_ckpt), limit=1, inference=other),
            on_start=started.append,
        )
    message = str(info.value)
    for needle in ("checkpoint_sha1", "inference.threshold: recorded 0.5, now 0.7"):
        assert needle in message
    assert "inference.crop_to_body: recorded true, now false" in message
    assert "batch_size" not in message, "how the model runs is not a difference"
    assert not started and {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # The CLI says it in one line; --overwrite recomputes under the new settings.
    args = ["infer", str(tiny_synth_dir), "--out", str(out), "--limit", "1", "--device", "cpu"]
    assert main([*args, "--checkpoint", str(other_ckpt)]) == 2
    assert "checkpoint_sha1: recorded" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(other_ckpt), "--overwrite"]) == 0
    assert "1 series computed, 0 skipped" in capsys.readouterr().out
    recorded = json.loads((out / RUN_FILE).read_text())
    uid = LunaFolder(tiny_synth_dir).series_uids[0]
    assert complete_record(out, uid, recorded["settings_key"]) is not None

    # Same settings, another selection: a single process takes it (tables describe it) ...
    assert (
        main([*args[:-4], "--limit", "2", "--device", "cpu", "--checkpoint", str(other_ckpt)]) == 0
    )
    assert "series selection changed" in capsys.readouterr().out
    assert len((out / "seriesuids.csv").read_text().split()) == 2
    # ... but a part of a split run must use the recorded selection.
    with pytest.raises(OutputExistsError, match="every part must select the same series"):
        infer_to_folder(
            tiny_synth_dir, out, pinned(checkpoint=str(other_ckpt), num_parts=2, part_id=0)
        )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--num-parts", "2", "--part-id", "2"], "--part-id 2 is outside 0..1"),
        (["--num-parts", "3", "--part-id", "-1"], "--part-id -1 is outside 0..2"),
        (["--num-parts", "0", "--part-id", "0"], "--num-parts must be at least 1"),
        (["--part-id", "1"], "--part-id needs --num-parts"),
    ],
)
def test_a_bad_part_is_a_clear_error_before_anything_is_written(
    tiny_synth_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(tiny_synth_dir), "--out", str(out), *extra]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_progress_json_prints_one_event_per_line(
    tiny_synth_dir: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["infer", str(tiny_synth_dir), "--out", str(out), "--checkpoint", str(ckpt)]
    assert main([*args, "--device", "cpu", "--limit", "2", "--progress-json"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert [e["kind"] for e in events] == ["start", "series", "series", "end"]
    assert [(e["done"], e["total"], e["run_done"]) for e in events] == [
        (0, 2, 0),
        (1, 2, 1),
        (2, 2, 2),
        (2, 2, 2),
    ]
    assert events[0]["series_per_minute"] is None and events[1]["series_per_minute"] > 0
    assert events[1]["eta_s"] > 0 and events[2]["eta_s"] == 0
    assert "series/min, ETA" in captured.err  # people's lines go to stderr


def test_an_unreadable_run_file_is_refused(tiny_synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_FILE).write_text("{not json")
    with pytest.raises(OutputExistsError, match=r"run\.json is unreadable"):
        infer_to_folder(tiny_synth_dir, out, pinned(limit=1))


def test_torchrun_parts_must_agree_with_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from src_train.infer import resolve_part

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_part(None, None).part_id == 2
    with pytest.raises(ConfigError, match="contradict torchrun"):
        resolve_part(2, 0)


def test_mirror_is_recorded_only_when_asked_for(
    tiny_synth_dir: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder written before --mirror existed has no such setting and still resumes; asking
    for mirroring on it is a difference named in one line."""
    out = tmp_path / "out"
    infer_to_folder(tiny_synth_dir, out, pinned(checkpoint=str(ckpt), limit=1))
    recorded = json.loads((out / RUN_FILE).read_text())
    assert "mirror" not in recorded["settings"]["inference"]
    args = ["infer", str(tiny_synth_dir), "--out", str(out), "--limit", "1", "--device", "cpu"]
    assert main([*args, "--checkpoint", str(ckpt)]) == 0
    assert "0 series computed, 1 skipped" in capsys.readouterr().out
    assert main([*args, "--checkpoint", str(ckpt), "--mirror"]) == 2
    assert "inference.mirror: recorded (none), now true" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(ckpt), "--mirror", "--overwrite"]) == 0
    assert json.loads((out / RUN_FILE).read_text())["settings"]["inference"]["mirror"] is True
