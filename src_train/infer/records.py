"""What a run leaves in its output folder so that it survives a kill: settings and records.

``OUT/run.json`` holds the run's settings (checkpoint SHA-1, the inference options that shape
the outputs, the truth definition) and its series, written when the first process starts. A
later run, or another part, with other settings is refused with one line per difference.

``OUT/<uid>.json`` is the record of one finished series: its candidates, how it ran, and the
size and SHA-1 of each file written for it. It is written last and atomically, after the
series' volumes, so a series is complete exactly when its record exists, carries the run's
settings key and its files have the recorded sizes; a kill at any moment leaves at worst an
incomplete series, which the next run recomputes. A series that failed leaves
``OUT/<uid>.failed.json`` with the reason (removed when it later succeeds).

``candidates.csv`` and ``seriesuids.csv`` are assembled from the records, atomically, only when
every series of the run is complete; two parts finishing together write the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src_train.atomic import make_folder, write_text_atomic
from src_train.errors import OutputExistsError, OutputWriteError
from src_train.infer.candidates import write_candidates_csv
from src_train.model import file_sha1
from src_train.records.candidate import UNKNOWN_TRIPLE, CandidateNodule
from src_train.records.infer_files import (
    CANDIDATES_CSV,
    PRED_SUFFIX,
    PROB_SUFFIX,
    RUN_FILE,
    SERIES_LIST_NAME,
)

log = logging.getLogger(__name__)

#: The run's settings file in its output folder.
#: Version of run.json and the series records; bump when their meaning changes.
RECORD_FORMAT = 1
#: A series' record: ``<uid>.json``; a failed series' note: ``<uid>.failed.json``.
RECORD_SUFFIX = ".json"
FAILED_SUFFIX = ".failed.json"
#: Hex digits of the settings key (a SHA-1 prefix; collisions need a deliberate attack).
SETTINGS_KEY_HEX = 16
#: Series named in a message before "and N more".
LISTED = 3


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def settings_key(settings: Mapping[str, Any]) -> str:
    """Short hash of a run's settings; every series record carries it."""
    return hashlib.sha1(_canonical(settings).encode()).hexdigest()[:SETTINGS_KEY_HEX]


def series_digest(uids: Sequence[str]) -> str:
    """Hash of a run's series list (order included)."""
    return hashlib.sha1("\n".join(uids).encode()).hexdigest()[:SETTINGS_KEY_HEX]


_MISSING = object()


def _shown(value: Any) -> str:
    return "(none)" if value is _MISSING else json.dumps(value, sort_keys=True)


def settings_differences(
    recorded: Mapping[str, Any], now: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """``"name: recorded X, now Y"`` for every setting that differs (nested names dotted)."""
    lines = []
    for key in sorted(set(recorded) | set(now)):
        a, b = recorded.get(key, _MISSING), now.get(key, _MISSING)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += settings_differences(a, b, f"{name}.")
        elif a != b:
            lines.append(f"{name}: recorded {_shown(a)}, now {_shown(b)}")
    return lines


@dataclass(frozen=True)
class RunManifest:
    """What ``OUT/run.json`` holds.

    Attributes:
        settings: everything that shapes a series' outputs (compared between runs).
        series_uids: the run's series, in order (every part's).
        checkpoint: path of the checkpoint, as the first process saw it (information only).
        data: the data folder or series, as the first process saw it (information only).
        created: when run.json was first written (ISO 8601, UTC).
    """

    settings: dict[str, Any]
    series_uids: list[str]
    checkpoint: str = ""
    data: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def key(self) -> str:
        """:func:`settings_key` of the settings."""
        return settings_key(self.settings)

    def to_json(self) -> str:
        """The file's text (the series list with its count and hash, for people and checks)."""
        data = dataclasses.asdict(self)
        data["format"] = RECORD_FORMAT
        data["settings_key"] = self.key
        data["series_count"] = len(self.series_uids)
        data["series_sha1"] = series_digest(self.series_uids)
        return json.dumps(data, indent=1)

    @classmethod
    def read(cls, path: Path) -> RunManifest:
        """Read a run.json; an unreadable one is an :class:`OutputExistsError` naming the fix."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                settings=dict(data["settings"]),
                series_uids=[str(u) for u in data["series_uids"]],
                checkpoint=str(data.get("checkpoint", "")),
                data=str(data.get("data", "")),
                created=str(data.get("created", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputExistsError(
                f"{path} is unreadable ({type(exc).__name__}: {exc}); it is not a lunaseg infer "
                "run's settings file. Pick another --out or pass --overwrite to start afresh."
            ) from exc


def _create_exclusive(path: Path, text: str) -> bool:
    """Write ``path`` whole, only if it does not exist yet; False when another process won.

    A complete temporary file is hard-linked to ``path`` (atomic and exclusive); on a file
    system without hard links the file is created exclusively and written at once.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    write_text_atomic(tmp, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network file systems)
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _looks_like_outputs(out: Path) -> list[Path]:
    """Files of an earlier run in ``out`` (volumes, tables) when it has no run.json."""
    found = [*out.glob(f"*{PRED_SUFFIX}"), *out.glob(f"*{PROB_SUFFIX}")]
    found += [out / n for n in (CANDIDATES_CSV, SERIES_LIST_NAME) if (out / n).exists()]
    return sorted(found)


def open_run(
    out: Path, manifest: RunManifest, *, overwrite: bool, split: bool
) -> tuple[RunManifest, list[str]]:
    """Start or join the run in ``out``; returns the manifest in force and notes for the user.

    * no run.json: it is created (exclusively: of two parts starting together one creates it,
      the other joins); outputs of a run without run.json are refused unless ``overwrite``;
    * run.json with other settings: :class:`OutputExistsError` with one line per difference,
      unless ``overwrite`` (then it is replaced);
    * same settings, other series (another ``--series``/``--limit``): a single process takes
      the new list (the tables will describe it); a part of a split run (``split``) is
      refused, since parts must share one list to share it out.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder.")
    path = out / RUN_FILE
    notes: list[str] = []
    make_folder(out, "the output folder")
    if overwrite:
        write_text_atomic(path, manifest.to_json(), overwrite=True)
        return manifest, notes
    if not path.exists():
        clashes = _looks_like_outputs(out)
        if clashes:
            names = ", ".join(str(p) for p in clashes[:LISTED])
            more = f" and {len(clashes) - LISTED} more" if len(clashes) > LISTED else ""
            raise OutputExistsError(
                f"{names}{more} already exist but {out} has no {RUN_FILE} (an older lunaseg or "
                "another tool wrote them); pick another --out or pass --overwrite."
            )
        if _create_exclusive(path, manifest.to_json()):
            return manifest, notes
    recorded = RunManifest.read(path)
    diffs = settings_differences(recorded.settings, manifest.settings)
    if diffs:
        raise OutputExistsError(
            f"{out} holds a run with other settings ({path}): "
            + "; ".join(diffs)
            + ". Use the same settings to resume, another --out, or --overwrite to recompute."
        )
    if recorded.series_uids != manifest.series_uids:
        change = (
            f"{len(recorded.series_uids)} series recorded "
            f"(sha1 {series_digest(recorded.series_uids)}), {len(manifest.series_uids)} now "
            f"(sha1 {series_digest(manifest.series_uids)})"
        )
        if split:
            raise OutputExistsError(
                f"{out} holds a run over other series ({change}); every part must select the "
                "same series (--series/--limit) to share them out. Run the parts with the "
                "recorded selection, or use another --out."
            )
        updated = dataclasses.replace(recorded, series_uids=list(manifest.series_uids))
        write_text_atomic(path, updated.to_json(), overwrite=True)
        notes.append(f"series selection changed: {change}; the tables will describe the new one")
        return updated, notes
    return recorded, notes


# ---------------------------------------------------------------------------------------------
# Series records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesRecord:
    """``OUT/<uid>.json``: one finished series.

    Attributes:
        series_uid: the series.
        settings_key: :attr:`RunManifest.key` of the run that wrote it.
        files: name (in the output folder) -> ``{"bytes": size, "sha1": hex}`` of every file
            written for the series.
        candidates: its candidate nodules, in the run's order (most probable first).
        n_slices: its slices.
        seconds: wall time of inference on it (model and grouping).
        model_seconds: wall time of the model passes alone.
        load_seconds: wall time of reading the series.
        write_seconds: wall time of writing its volumes (and, with truth, making its
            ground-truth mask and error volume).
        execution: how the model ran (``InferenceSettings`` as a dict: device, precision...).
        voxel_metrics: voxel metrics against the generated masks; None without truth.
        part: ``"I/N"`` of the process that wrote it.
        finished: when (ISO 8601, UTC).
        left_out: less probable candidates the detector left out (``max_candidates``).
    """

    series_uid: str
    settings_key: str
    files: dict[str, dict[str, Any]]
    candidates: list[CandidateNodule]
    n_slices: int
    seconds: float
    model_seconds: float = 0.0
    load_seconds: float = 0.0
    write_seconds: float = 0.0
    execution: dict[str, Any] = field(default_factory=dict)
    voxel_metrics: dict[str, float] | None = None
    part: str = "1/1"
    finished: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    left_out: int = 0

    @property
    def components(self) -> int:
        """What the segmenter found in the series: the detector's list and what its
        ``max_candidates`` cut left out."""
        return len(self.candidates) + self.left_out

    def to_json(self) -> str:
        """The record file's text."""
        data = dataclasses.asdict(self)
        data["format"] = RECORD_FORMAT
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> SeriesRecord:
        """Parse a record file (``ValueError``/``KeyError``/``TypeError`` when damaged)."""
        data = json.loads(text)
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"record format {data.get('format')!r}, not {RECORD_FORMAT}")
        return cls(
            series_uid=str(data["series_uid"]),
            settings_key=str(data["settings_key"]),
            files={str(k): dict(v) for k, v in data["files"].items()},
            candidates=[_candidate_from_dict(c) for c in data["candidates"]],
            n_slices=int(data["n_slices"]),
            seconds=float(data["seconds"]),
            model_seconds=float(data.get("model_seconds", 0.0)),
            load_seconds=float(data.get("load_seconds", 0.0)),
            write_seconds=float(data.get("write_seconds", 0.0)),
            execution=dict(data.get("execution") or {}),
            voxel_metrics=data.get("voxel_metrics"),
            part=str(data.get("part", "")),
            finished=str(data.get("finished", "")),
            left_out=int(data.get("left_out", 0)),
        )


def _triple(value: Sequence[Any]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def _triple_or_unknown(data: Mapping[str, Any], name: str) -> tuple[float, float, float]:
    """A stored ``(a, b, c)`` field, or :data:`UNKNOWN_TRIPLE` for records written before it."""
    value = data.get(name)
    return UNKNOWN_TRIPLE if value is None else _triple(value)


def _float_or_nan(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    return math.nan if value is None else float(value)


def _candidate_from_dict(data: Mapping[str, Any]) -> CandidateNodule:
    """The inverse of ``dataclasses.asdict`` on a :class:`CandidateNodule`: every field."""
    return CandidateNodule(
        series_uid=str(data["series_uid"]),
        center_xyz_mm=_triple(data["center_xyz_mm"]),
        center_irc=_triple(data["center_irc"]),
        diameter_mm=float(data["diameter_mm"]),
        voxel_count=int(data["voxel_count"]),
        probability=float(data["probability"]),
        mean_probability=_float_or_nan(data, "mean_probability"),
        max_probability=_float_or_nan(data, "max_probability"),
        peak_irc=_triple_or_unknown(data, "peak_irc"),
        peak_xyz_mm=_triple_or_unknown(data, "peak_xyz_mm"),
        axes_mm=_triple_or_unknown(data, "axes_mm"),
        segmenter_probability=_float_or_nan(data, "segmenter_probability"),
    )


def record_path(out: Path, uid: str) -> Path:
    """``OUT/<uid>.json``."""
    return out / f"{uid}{RECORD_SUFFIX}"


def failure_path(out: Path, uid: str) -> Path:
    """``OUT/<uid>.failed.json``."""
    return out / f"{uid}{FAILED_SUFFIX}"


def describe_files(out: Path, paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Size and SHA-1 of files in ``out`` (for a record), keyed by name."""
    return {p.name: {"bytes": p.stat().st_size, "sha1": file_sha1(p)} for p in paths}


def write_record(out: Path, record: SeriesRecord) -> Path:
    """Write a series' record atomically (after its files) and clear its failure note."""
    path = write_text_atomic(record_path(out, record.series_uid), record.to_json(), overwrite=True)
    failure_path(out, record.series_uid).unlink(missing_ok=True)
    return path


def read_record(out: Path, uid: str) -> SeriesRecord | None:
    """A series' record, or None when it is missing or unreadable."""
    path = record_path(out, uid)
    try:
        return SeriesRecord.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s); the series will be recomputed", path, exc)
        return None


def complete_record(out: Path, uid: str, key: str) -> SeriesRecord | None:
    """The record of a complete series: it carries ``key`` and its files have their sizes."""
    record = read_record(out, uid)
    if record is None or record.settings_key != key or record.series_uid != uid:
        return None
    for name, facts in record.files.items():
        path = out / name
        try:
            if path.stat().st_size != int(facts["bytes"]):
                return None
        except (OSError, KeyError, TypeError, ValueError):
            return None
    return record


class RecordIndex:
    """Which series of a run are complete, re-reading a record only when its file changed.

    Counting over a whole data set after each series costs a ``stat`` per series.
    """

    def __init__(self, out: Path, key: str) -> None:
        self.out = out
        self.key = key
        self._seen: dict[str, tuple[tuple[int, int], bool]] = {}

    def is_complete(self, uid: str) -> bool:
        """Whether ``uid`` has a complete record now."""
        try:
            st = record_path(self.out, uid).stat()
        except FileNotFoundError:
            self._seen.pop(uid, None)
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._seen.get(uid)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ok = complete_record(self.out, uid, self.key) is not None
        self._seen[uid] = (stamp, ok)
        return ok

    def incomplete(self, uids: Iterable[str]) -> list[str]:
        """The series of ``uids`` without a complete record, in order."""
        return [uid for uid in uids if not self.is_complete(uid)]


def write_failure(out: Path, uid: str, reason: str, part: str) -> None:
    """Leave ``OUT/<uid>.failed.json`` (best effort: the disk may be full)."""
    text = json.dumps({"series_uid": uid, "reason": reason, "part": part, "time": time.time()})
    with contextlib.suppress(OSError, OutputWriteError):
        write_text_atomic(failure_path(out, uid), text, overwrite=True)


def read_failures(out: Path, uids: Iterable[str]) -> dict[str, str]:
    """Reasons left by failed series of ``uids`` (any part), by UID."""
    reasons = {}
    for uid in uids:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            reasons[uid] = str(json.loads(failure_path(out, uid).read_text())["reason"])
    return reasons


# ---------------------------------------------------------------------------------------------
# The run's tables
# ---------------------------------------------------------------------------------------------
def remove_tables(candidates_csv: Path, series_list: Path) -> None:
    """Remove the tables (they describe a finished run only)."""
    candidates_csv.unlink(missing_ok=True)
    series_list.unlink(missing_ok=True)


def assemble_tables(
    out: Path, uids: Sequence[str], key: str, candidates_csv: Path, series_list: Path
) -> list[CandidateNodule] | None:
    """Write ``candidates.csv`` and ``seriesuids.csv`` from the records when all are complete.

    Candidates are concatenated in series order, each series' in its own order, so every
    process that assembles writes the same bytes. Returns the candidates, or None (nothing
    written) when a series is not complete.
    """
    records = []
    for uid in uids:
        record = complete_record(out, uid, key)
        if record is None:
            return None
        records.append(record)
    found = [c for r in records for c in r.candidates]
    write_candidates_csv(candidates_csv, found, overwrite=True)
    write_series_list(series_list, uids, overwrite=True)
    return found


def write_series_list(
    path: str | os.PathLike[str], series_uids: Sequence[str], *, overwrite: bool = False
) -> Path:
    """Write one series UID per line (what ``lunaseg eval --series-list`` reads), atomically."""
    return write_text_atomic(path, "".join(f"{uid}\n" for uid in series_uids), overwrite=overwrite)
