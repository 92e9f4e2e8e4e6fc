"""The volumes one series leaves in a run's output folder, in the CT's geometry.

``<uid>_prob.mhd`` (uint8 ``round(p * 255)``), ``<uid>_pred.mhd`` (the mask, uint8 0/1) and,
with ground truth, ``<uid>_error.mhd`` (1 TP, 2 FN, 3 FP against the masks generated from the
annotations). Each is written atomically (:func:`src_train.ct.save_volume`); whether the
series is complete is its record's business (:mod:`.records`), written after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src_train.anatomy import SCAN_CHUNK_SLICES
from src_train.ct import CtVolume, save_volume
from src_train.infer.ground_truth import TruthDefinition, ground_truth_mask
from src_train.luna import LunaFolder
from src_train.metrics import error_volume, voxel_metrics
from src_train.records.infer_files import (
    ERROR_SUFFIX,
    PRED_SUFFIX,
    PROB_SUFFIX,
    series_file_name,
)
from src_train.reviews import ReviewedFolder

#: Probability volumes are written as uint8: ``round(prob * PROB_FILE_SCALE)``.
PROB_FILE_SCALE = 255


def prob_to_uint8(prob: np.ndarray) -> np.ndarray:
    """Probabilities to uint8 ``round(p * 255)`` for files (SimpleITK cannot write float16)."""
    out = np.empty(prob.shape, dtype=np.uint8)
    for z0 in range(0, prob.shape[0], SCAN_CHUNK_SLICES):
        part = prob[z0 : z0 + SCAN_CHUNK_SLICES].astype(np.float32) * PROB_FILE_SCALE
        np.rint(part, out=part)
        out[z0 : z0 + SCAN_CHUNK_SLICES] = part
    return out


@dataclass
class SeriesOutputs:
    """Files ``lunaseg infer`` writes for one series in ``out_dir``."""

    prob: Path
    pred: Path
    error: Path
    extra: list[Path] = field(default_factory=list)

    @classmethod
    def for_series(cls, out_dir: Path, series_uid: str) -> SeriesOutputs:
        """``<uid>_prob.mhd``, ``<uid>_pred.mhd``, ``<uid>_error.mhd`` in ``out_dir``."""
        return cls(
            prob=out_dir / series_file_name(series_uid, PROB_SUFFIX),
            pred=out_dir / series_file_name(series_uid, PRED_SUFFIX),
            error=out_dir / series_file_name(series_uid, ERROR_SUFFIX),
        )

    def existing(self) -> list[Path]:
        """The ones already on disk (headers and their data files)."""
        paths = [self.prob, self.pred, self.error, *self.extra]
        found = []
        for p in paths:
            for candidate in (p, p.with_suffix(".raw"), p.with_suffix(".zraw")):
                if candidate.exists():
                    found.append(candidate)
        return found


def write_series_volumes(
    ct: CtVolume,
    prob: np.ndarray,
    mask: np.ndarray,
    files: SeriesOutputs,
    truth: LunaFolder | None,
    definition: TruthDefinition | None = None,
) -> dict[str, float] | None:
    """Write one series' volumes (replacing leftovers); with ``truth``, its error volume and
    voxel metrics against masks made ``definition``'s way (the checkpoint's; default: the
    reference method at -700 HU); a :class:`ReviewedFolder` (``--reviewed``) gives the
    reviewed voxels, as the training cache makes them."""
    save_volume(prob_to_uint8(prob), ct.geometry, files.prob, compress=True, overwrite=True)
    save_volume(mask.view(np.uint8), ct.geometry, files.pred, compress=True, overwrite=True)
    if truth is None:
        return None
    definition = definition or TruthDefinition()
    if isinstance(truth, ReviewedFolder):  # the reviewed voxels, corrections included
        annotated = LunaFolder.nodules(truth, ct.series_uid)
        truth_mask = ground_truth_mask(ct, annotated, definition, truth.book)
    else:
        truth_mask = ground_truth_mask(ct, truth.nodules(ct.series_uid), definition)
    errors = error_volume(mask, truth_mask)
    save_volume(errors, ct.geometry, files.error, compress=True, overwrite=True)
    return voxel_metrics(mask, truth_mask)


def discard_volumes(files: SeriesOutputs) -> None:
    """Remove a series' volumes (of a failed series: nothing of it is trusted)."""
    for path in files.existing():
        path.unlink(missing_ok=True)
