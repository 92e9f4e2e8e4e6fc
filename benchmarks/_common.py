"""Helpers the benchmark scripts share: what CPU and load a figure was measured on, the
reference forward passes every speed-up is compared with, a timed command, and how the
detection reports group a synthetic folder's nodules (kind, protocol, slice-thickness band).

The scripts run as ``python benchmarks/NAME.py`` (this folder is on ``sys.path`` then) and
import these as ``from _common import ...``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from src_train.context import context_stack
from src_train.evaluate import Candidate, counted_marks
from src_train.infer.operating_point import FALSE_POSITIVE, candidate_outcomes
from src_train.luna import LunaFolder
from src_train.records.truth import ScoringTruth
from src_train.synth import MARKER_FILE

#: Batch of the reference forward passes (fp32, NCHW, whole slices).
REFERENCE_BATCH = 8
#: The CPU flags that decide the fast paths (AVX2 / AVX-512 kernels, bf16 support).
FAST_PATH_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and flags from ``/proc/cpuinfo`` (``"?"`` and none elsewhere)."""
    model, flags = "?", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return model, flags


def flags_text(flags: set[str], names: Sequence[str]) -> str:
    """``"avx2=yes avx512f=no ..."`` for ``names``."""
    return " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in names)


def cpu_kind(names: Sequence[str] = FAST_PATH_FLAGS) -> str:
    """``"<model>, <n> logical CPUs, avx2=yes ..."``: the CPU a figure was measured on."""
    model, flags = cpu_model_and_flags()
    return f"{model}, {os.cpu_count()} logical CPUs, {flags_text(flags, names)}"


def load_1min() -> float:
    """The one-minute load average."""
    return os.getloadavg()[0]


def load_text() -> str:
    """The 1-, 5- and 15-minute load averages, ``"5.90 4.20 3.10"``."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_forward(
    model: torch.nn.Module, hu: np.ndarray, n_slices: int, *, keep_probs: bool = False
) -> tuple[float, np.ndarray | None]:
    """The reference: seconds of the model's forward passes alone over the first ``n_slices``
    slices of ``hu`` ``(index, row, col)``, batch :data:`REFERENCE_BATCH`, on the model's
    device, after one untimed warm-up pass (the inputs are stacked outside the timed region);
    and, with ``keep_probs``, the probabilities ``(n_slices, row, col)``."""
    device = next(model.parameters()).device
    total = 0.0
    probs = []
    with torch.inference_mode():
        model(torch.from_numpy(context_stack(hu, np.arange(1))).to(device))  # warm-up
        for start in range(0, n_slices, REFERENCE_BATCH):
            batch = np.arange(start, min(start + REFERENCE_BATCH, n_slices))
            x = torch.from_numpy(context_stack(hu, batch)).to(device)
            _sync(device)
            t0 = time.perf_counter()
            logits = model(x)
            _sync(device)
            total += time.perf_counter() - t0
            if keep_probs:
                probs.append(torch.sigmoid(logits[:, 0]).cpu().numpy())
    return total, (np.concatenate(probs) if keep_probs else None)


def run_timed(cmd: list[str]) -> float:
    """Wall seconds of ``cmd`` in a fresh process (this checkout first on ``PYTHONPATH``);
    exits with its output when it fails."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - t0


#: Slice-spacing bands (mm, lower bound inclusive) of the per-thickness recall.
SLICE_BANDS_MM = ((0.0, 1.25), (1.25, 2.0), (2.0, math.inf))


def band_label(value: float, bands: Sequence[tuple[float, float]], unit: str = " mm") -> str:
    """``"1.25-2 mm"`` (or ``">= 2 mm"`` for the open last band): the band ``value`` is in
    (``unit`` follows the bounds; ``""`` for a share)."""
    for lo, hi in bands:
        if lo <= value < hi:
            return f"{lo:g}-{hi:g}{unit}" if math.isfinite(hi) else f">= {lo:g}{unit}"
    return "?"


#: A nodule's identity: series UID and center (mm, rounded).
NoduleKey = tuple[str, tuple[float, ...]]


def nodule_key(uid: str, center_xyz_mm: Sequence[float]) -> NoduleKey:
    """A nodule's identity across the annotation and truth tables (center rounded to 0.01 mm)."""
    return uid, tuple(round(float(v), 2) for v in center_xyz_mm)


def nodule_kinds(folder: LunaFolder, uids: Sequence[str]) -> dict[NoduleKey, str]:
    """Each true nodule's kind (``truth/nodules.csv``) under :func:`nodule_key`."""
    return {
        nodule_key(uid, n.center_xyz_mm): n.kind for uid in uids for n in folder.true_nodules(uid)
    }


def scan_protocols(folder: LunaFolder) -> dict[str, dict]:
    """Each scan's drawn protocol (family, slice spacing, ...) as ``lunaseg synth`` recorded it
    in its marker file, without reading a volume; empty for a folder it did not write or one
    from before protocol families."""
    try:
        marker = json.loads((folder.root / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    protocols = marker.get("protocols") if isinstance(marker, dict) else None
    return protocols if isinstance(protocols, dict) else {}


def false_positive_probabilities(
    marks: Sequence[Candidate], truth: ScoringTruth, uids: Sequence[str]
) -> np.ndarray:
    """Probabilities of the marks LUNA16 counts as false positives (per-scan cap, excluded
    findings ignored), all scans together."""
    by_scan: dict[str, list[Candidate]] = defaultdict(list)
    for mark in marks:
        by_scan[mark.series_uid].append(mark)
    out: list[float] = []
    for uid in uids:
        scan = by_scan.get(uid, [])
        probs = np.asarray([m.probability for m in scan], dtype=np.float64)
        keep = counted_marks(probs)
        counted = [mark for mark, kept in zip(scan, keep, strict=True) if kept]
        excluded = [f for f in truth.excluded if f.series_uid == uid]
        outcomes = candidate_outcomes(counted, truth.nodules.get(uid, []), excluded)
        out.extend(
            m.probability for m, o in zip(counted, outcomes, strict=True) if o == FALSE_POSITIVE
        )
    return np.asarray(out, dtype=np.float64)


def operating_cut(
    marks: Sequence[Candidate], truth: ScoringTruth, uids: Sequence[str], fp_per_scan: float
) -> tuple[float, int]:
    """The score above which at most ``fp_per_scan`` false positives per scan remain, all scans
    together (-inf when there are fewer false positives than that), and how many remain above
    it (LUNA16's counting, :func:`false_positive_probabilities`)."""
    fp = np.sort(false_positive_probabilities(marks, truth, uids))[::-1]
    allowed = math.floor(fp_per_scan * len(uids))
    cut = float(fp[allowed]) if allowed < len(fp) else -math.inf
    return cut, int((fp > cut).sum())
