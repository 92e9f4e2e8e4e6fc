"""A synthetic data set on disk, in LUNA16 layout: write it (scans, true shapes, the CSV files
and a marker file saying which seed and config made it) and recognise one written before, so
that the same command twice writes nothing and another data set is never mixed in."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from src_train.atomic import check_generated_folder, make_folder, write_text_atomic
from src_train.ct import save_volume
from src_train.errors import CancelledError, ConfigError
from src_train.luna import (
    ANNOTATIONS_FILE,
    MALIGNANCY_FILE,
    TRUTH_DIR,
    TRUTH_TABLE,
    LunaFolder,
)
from src_train.progress import Progress, ShouldStop
from src_train.synth.config import SynthConfig, scan_seed, synthetic_series_uid
from src_train.synth.scan import SynthScan, generate_scan

log = logging.getLogger(__name__)

#: Marker file written by :func:`write_dataset` (the config and seed that made the folder).
MARKER_FILE = "lunaseg-synth.json"

#: Scans and seed of the synthetic default data set (``lunaseg synth`` and ``lunaseg view``
#: write the same one, so either can follow the other).
DEFAULT_SCANS = 8
DEFAULT_SEED = 0

#: The candidates file it writes (:data:`~src_train.luna.CANDIDATES_FILES`: the names read).
CANDIDATES_FILE = "candidates.csv"


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _mm(value: float) -> str:
    return f"{value:.6f}"


def _read_marker(out: Path) -> dict[str, Any] | None:
    """The :data:`MARKER_FILE` of a folder, or None when absent or unreadable."""
    try:
        marker = json.loads((out / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _marker_identity(n_scans: int, seed: int, cfg: SynthConfig) -> dict[str, Any]:
    """What makes a data set: the fields of the marker that :func:`same_dataset` compares
    (as JSON reads them back: tuples become lists)."""
    identity: dict[str, Any] = json.loads(
        json.dumps({"seed": seed, "n_scans": n_scans, "config": asdict(cfg)})
    )
    return identity


def same_dataset(
    out_dir: str | os.PathLike[str],
    n_scans: int = DEFAULT_SCANS,
    seed: int = DEFAULT_SEED,
    config: SynthConfig | None = None,
) -> bool:
    """True when ``out_dir`` already holds, complete, the data set :func:`write_dataset` would
    write with these arguments (its marker says so and every scan, truth volume and CSV file is
    there). Writing it again would change nothing."""
    out = Path(out_dir)
    marker = _read_marker(out)
    if marker is None or not marker.get("complete"):
        return False
    config = config or SynthConfig()
    wanted = _marker_identity(n_scans, seed, config)
    if any(marker.get(key) != value for key, value in wanted.items()):
        return False
    uids = [synthetic_series_uid(seed, index, config.protocol) for index in range(n_scans)]
    files = [out / ANNOTATIONS_FILE, out / CANDIDATES_FILE, out / TRUTH_DIR / TRUTH_TABLE]
    files += [out / "subset0" / f"{uid}.mhd" for uid in uids]
    files += [out / TRUTH_DIR / f"{uid}.mhd" for uid in uids]
    return all(path.is_file() for path in files)


def describe_dataset(out_dir: str | os.PathLike[str]) -> str | None:
    """``"8 scans, seed 0"`` for a folder :func:`write_dataset` wrote, else None."""
    marker = _read_marker(Path(out_dir))
    if marker is None:
        return None
    state = "" if marker.get("complete") else ", incomplete"
    return f"{marker.get('n_scans')} scans, seed {marker.get('seed')}{state}"


def _luna_like(entry: Path) -> bool:
    """True for an entry that looks like LUNA16 data (even a partial download without its CSV
    files): a folder holding it is refused, its files would be mixed with synthetic ones."""
    return entry.name in (ANNOTATIONS_FILE, MALIGNANCY_FILE, CANDIDATES_FILE, TRUTH_DIR) or (
        entry.is_dir() and entry.name.startswith("subset")
    )


def _prepare_output(out: Path, overwrite: bool) -> None:
    replace = check_generated_folder(
        out,
        overwrite=overwrite,
        marker=MARKER_FILE,
        command="lunaseg synth",
        what="synthetic data set",
        foreign=_luna_like,
        earlier=describe_dataset(out),
    )
    if not replace:
        return
    for child in out.iterdir():
        if child.is_dir() and (child.name.startswith("subset") or child.name == TRUTH_DIR):
            shutil.rmtree(child)
        elif child.name in (ANNOTATIONS_FILE, CANDIDATES_FILE, MARKER_FILE):
            child.unlink()


def _save_scan(out: Path, uid: str, scan: SynthScan, compress_ct: bool) -> None:
    """Write a scan's CT (``subset0/``) and its label volume (``truth/``), same geometry."""
    geometry = scan.ct.geometry
    save_volume(
        scan.ct.hu,
        geometry,
        out / "subset0" / f"{uid}.mhd",
        compress=compress_ct,
        overwrite=True,
    )
    save_volume(scan.truth, geometry, out / TRUTH_DIR / f"{uid}.mhd", compress=True, overwrite=True)


def _add_rows(
    uid: str,
    scan: SynthScan,
    annotation_rows: list[list[object]],
    truth_rows: list[list[object]],
    candidate_rows: list[list[object]],
) -> None:
    """Append a scan's nodules and candidates to the rows of the data set's CSV files."""
    for nodule in scan.nodules:
        x, y, z = nodule.center_xyz_mm
        annotation_rows.append([uid, _mm(x), _mm(y), _mm(z), _mm(nodule.diameter_mm)])
        truth_rows.append(
            [
                uid,
                nodule.label,
                _mm(x),
                _mm(y),
                _mm(z),
                _mm(nodule.diameter_mm),
                nodule.kind,
                f"{nodule.volume_mm3:.3f}",
            ]
        )
    for cand in scan.candidates:
        x, y, z = cand.center_xyz_mm
        candidate_rows.append([uid, _mm(x), _mm(y), _mm(z), int(cand.is_nodule)])


def _write_tables(
    out: Path,
    annotation_rows: list[list[object]],
    candidate_rows: list[list[object]],
    truth_rows: list[list[object]],
) -> None:
    """Write ``truth/true_nodules.csv``, ``candidates.csv`` and ``annotations.csv``
    (atomically, once every scan is written)."""
    write_text_atomic(
        out / TRUTH_DIR / TRUTH_TABLE,
        _csv_text(
            [
                "seriesuid",
                "label",
                "coordX",
                "coordY",
                "coordZ",
                "diameter_mm",
                "kind",
                "volume_mm3",
            ],
            truth_rows,
        ),
        overwrite=True,
    )
    write_text_atomic(
        out / CANDIDATES_FILE,
        _csv_text(["seriesuid", "coordX", "coordY", "coordZ", "class"], candidate_rows),
        overwrite=True,
    )
    write_text_atomic(
        out / ANNOTATIONS_FILE,
        _csv_text(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], annotation_rows),
        overwrite=True,
    )


def write_dataset(
    out_dir: str | os.PathLike[str],
    n_scans: int = DEFAULT_SCANS,
    seed: int = DEFAULT_SEED,
    config: SynthConfig | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    should_stop: ShouldStop | None = None,
) -> LunaFolder:
    """Write a synthetic data set in LUNA16 layout and return it as a :class:`LunaFolder`.

    Layout: ``subset0/<uid>.mhd`` (+ ``.raw``, int16 HU), ``annotations.csv``,
    ``candidates.csv``, ``truth/<uid>.mhd`` (+ ``.zraw``, uint8 labels, same geometry),
    ``truth/true_nodules.csv`` and ``lunaseg-synth.json`` (seed, config and each scan's drawn
    protocol under ``protocols``). The CSV files are
    written last, atomically. Deterministic for ``seed``.

    Args:
        out_dir: target folder; created if needed.
        n_scans: number of scans (>= 1).
        seed: random seed of the whole data set.
        config: ranges (default :class:`SynthConfig`).
        progress: called as ``progress(done, total, message)`` after each scan.
        overwrite: replace an earlier synthetic data set in ``out_dir``. A non-empty folder is
            otherwise refused with :class:`OutputExistsError` (unless it already holds this
            very data set, see :func:`same_dataset`: then nothing is written), and a LUNA16
            folder not written by this function is always refused.
        should_stop: checked between scans; when it returns True, :class:`CancelledError`.
    """
    if n_scans < 1:
        raise ConfigError(f"n_scans must be at least 1; got {n_scans}.")
    cfg = config or SynthConfig()
    out = Path(out_dir)
    if not overwrite and same_dataset(out, n_scans, seed, cfg):
        log.info("%s already holds this synthetic data set; nothing to write", out)
        return LunaFolder(out)
    _prepare_output(out, overwrite)
    make_folder(out, "the data folder")
    marker = {
        "generator": "lunaseg synth",
        "seed": seed,
        "n_scans": n_scans,
        "complete": False,
        "config": asdict(cfg),
    }
    write_text_atomic(out / MARKER_FILE, json.dumps(marker, indent=2), overwrite=True)

    annotation_rows: list[list[object]] = []
    candidate_rows: list[list[object]] = []
    truth_rows: list[list[object]] = []
    protocols: dict[str, dict[str, Any]] = {}
    kind_offset = 0
    started = time.perf_counter()
    for index in range(n_scans):
        if should_stop is not None and should_stop():
            raise CancelledError(f"Synthetic data set in {out} stopped after {index} scan(s).")
        uid = synthetic_series_uid(seed, index, cfg.protocol)
        scan = generate_scan(uid, scan_seed(seed, index), cfg, kind_offset=kind_offset)
        kind_offset += len(scan.nodules)
        if scan.protocol is not None:
            protocols[uid] = asdict(scan.protocol)
        _save_scan(out, uid, scan, cfg.compress_ct)
        _add_rows(uid, scan, annotation_rows, truth_rows, candidate_rows)
        message = f"scan {index + 1}/{n_scans}: {uid} ({len(scan.nodules)} nodules)"
        log.info(message)
        if progress is not None:
            progress(index + 1, n_scans, message)

    _write_tables(out, annotation_rows, candidate_rows, truth_rows)
    marker.update(
        complete=True,
        seconds=round(time.perf_counter() - started, 2),
        nodules=len(annotation_rows),
        protocols=protocols,
    )
    write_text_atomic(out / MARKER_FILE, json.dumps(marker, indent=2), overwrite=True)
    return LunaFolder(out)
