"""Parts of a run (round robin, torchrun's environment, the GPU of each) and the rate meter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from src_train.errors import ConfigError
from src_train.infer.events import InferEvent, RateMeter, format_seconds
from src_train.infer.parts import Part, device_for_part, resolve_part
from src_train.infer.records import settings_differences

UIDS = [f"1.{i}" for i in range(11)]


@pytest.mark.parametrize("n_parts", [1, 2, 3, 4, 11, 12])
def test_parts_cover_every_series_once_in_round_robin(n_parts: int) -> None:
    shares = [Part(i, n_parts).take(UIDS) for i in range(n_parts)]
    assert sorted(u for share in shares for u in share) == sorted(UIDS)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    assert shares[0][:2] == UIDS[0 : 2 * n_parts : n_parts][:2]


def test_part_from_options_or_torchrun_environment() -> None:
    assert resolve_part(None, None, env={}) == Part(0, 1)
    assert resolve_part(3, 1, env={}) == Part(1, 3)
    torchrun = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert resolve_part(None, None, env=torchrun) == Part(5, 8, local_rank=1)
    assert resolve_part(8, 5, env=torchrun) == Part(5, 8, local_rank=1)  # agreeing options
    assert resolve_part(None, None, env={"RANK": "0", "WORLD_SIZE": "1"}) == Part(0, 1)
    with pytest.raises(ConfigError, match="contradict torchrun's WORLD_SIZE=8 RANK=5"):
        resolve_part(2, 1, env=torchrun)
    with pytest.raises(ConfigError, match="not an integer"):
        resolve_part(None, None, env={"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="--num-parts needs --part-id"):
        resolve_part(2, None, env={})


def test_each_torchrun_process_gets_its_own_gpu() -> None:
    rank3 = Part(3, 4, local_rank=3)
    assert device_for_part("auto", rank3, cuda_available=True) == "cuda:3"
    assert device_for_part("cuda", rank3, cuda_available=True) == "cuda:3"
    assert device_for_part("cuda:0", rank3, cuda_available=True) == "cuda:0"  # asked for
    assert device_for_part("cpu", rank3, cuda_available=True) == "cpu"
    assert device_for_part("auto", rank3, cuda_available=False) == "auto"
    assert device_for_part("auto", Part(1, 2), cuda_available=True) == "auto"  # not torchrun


def test_rate_and_time_left_count_only_computed_series() -> None:
    now = [100.0]
    meter = RateMeter(total=10, done=4, clock=lambda: now[0])  # 4 skipped
    assert math.isnan(meter.series_per_minute) and math.isnan(meter.eta_s)
    now[0] += 30.0
    meter.series_done()
    now[0] += 30.0
    meter.series_failed()
    assert meter.series_per_minute == pytest.approx(2.0)  # 2 series in 60 s
    assert meter.eta_s == pytest.approx(4 * 30.0)  # 10 - 5 done - 1 failed, 30 s each
    event = InferEvent(
        "series",
        part="2/4",
        done=5,
        total=10,
        failed=1,
        run_done=17,
        run_total=40,
        series_per_minute=meter.series_per_minute,
        eta_s=meter.eta_s,
    )
    assert event.progress_text() == (
        "[5/10 of part 2/4, 17/40 in all, 1 failed] 2.0 series/min, ETA 0:02:00"
    )
    assert '"eta_s":120.0' in event.to_json()
    assert '"series_per_minute":null' in InferEvent("start").to_json()
    assert format_seconds(3725.4) == "1:02:05" and format_seconds(math.nan) == "?"


def test_settings_differences_name_each_nested_setting() -> None:
    recorded = {
        "checkpoint_sha1": "aa",
        "inference": {"threshold": 0.5, "crop": True},
        "truth": None,
    }
    now = {
        "checkpoint_sha1": "bb",
        "inference": {"threshold": 0.5, "crop": False},
        "truth": {"x": 1},
    }
    assert settings_differences(recorded, now) == [
        'checkpoint_sha1: recorded "aa", now "bb"',
        "inference.crop: recorded true, now false",
        'truth: recorded null, now {"x": 1}',
    ]
    assert settings_differences(recorded, recorded) == []
    assert settings_differences({"a": {"b": 1}}, {"a": {}}) == ["a.b: recorded 1, now (none)"]


def test_run_json_is_created_once_even_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src_train.infer import records

    target = tmp_path / "run.json"
    assert records._create_exclusive(target, '{"a": 1}')
    assert not records._create_exclusive(target, '{"a": 2}')  # the first one stays

    def no_links(src: object, dst: object) -> None:
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(records.os, "link", no_links)
    other = tmp_path / "other.json"
    assert records._create_exclusive(other, '{"b": 1}')
    assert not records._create_exclusive(other, '{"b": 2}')
    assert target.read_text() == '{"a": 1}' and other.read_text() == '{"b": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "run.json"]


def test_a_record_is_trusted_only_with_its_key_and_file_sizes(tmp_path: Path) -> None:
    from src_train.infer.records import (
        RecordIndex,
        SeriesRecord,
        complete_record,
        describe_files,
        record_path,
        write_record,
    )

    volume = tmp_path / "1.2_pred.zraw"
    volume.write_bytes(b"x" * 100)
    record = SeriesRecord(
        series_uid="1.2",
        settings_key="k1",
        files=describe_files(tmp_path, [volume]),
        candidates=[],
        n_slices=3,
        seconds=1.0,
    )
    write_record(tmp_path, record)
    assert complete_record(tmp_path, "1.2", "k1") == record
    assert complete_record(tmp_path, "1.2", "k2") is None  # another run's settings
    index = RecordIndex(tmp_path, "k1")
    assert index.incomplete(["1.1", "1.2"]) == ["1.1"]
    volume.write_bytes(b"x" * 60)  # truncated behind the record's back
    assert complete_record(tmp_path, "1.2", "k1") is None
    volume.unlink()
    assert complete_record(tmp_path, "1.2", "k1") is None
    record_path(tmp_path, "1.2").write_text("{half a rec")
    assert complete_record(tmp_path, "1.2", "k1") is None
    assert index.incomplete(["1.2"]) == ["1.2"]


def test_a_record_read_back_keeps_every_candidate_field(tmp_path: Path) -> None:
    """Issue 21 defect 5: segmenter_probability, peak and axes came back NaN, so the
    candidates.csv assembled from the records had segmenter_probability nan in every row."""
    import csv

    from src_train.infer.records import SeriesRecord, assemble_tables, write_record
    from src_train.records.candidate import CandidateNodule

    found = CandidateNodule(
        series_uid="1.2",
        center_xyz_mm=(10.0, -20.5, 30.25),
        center_irc=(4.0, 50.5, 60.25),
        diameter_mm=6.5,
        voxel_count=120,
        probability=0.91,
        mean_probability=0.4,
        max_probability=0.8,
        peak_irc=(4.0, 50.0, 60.0),
        peak_xyz_mm=(10.0, -21.0, 30.0),
        axes_mm=(8.0, 6.0, 5.0),
        segmenter_probability=0.8,
    )
    record = SeriesRecord("1.2", "k1", {}, [found], n_slices=9, seconds=1.0)
    write_record(tmp_path, record)
    candidates_csv, series_csv = tmp_path / "candidates.csv", tmp_path / "seriesuids.csv"
    (back,) = assemble_tables(tmp_path, ["1.2"], "k1", candidates_csv, series_csv) or []
    assert back == found
    with candidates_csv.open(newline="") as f:
        (row,) = csv.DictReader(f)
    assert float(row["segmenter_probability"]) == pytest.approx(0.8)
