"""The names of a training run's metrics, as ``metrics.jsonl``, TensorBoard, the Training
widget and ``lunaseg compare`` read them: one spelling for the trainer that writes a key and
every reader.

A row of ``metrics.jsonl`` holds ``train/<name>`` and, for validated epochs, ``val/<name>``.
Validation's names (detection on whole series, then voxels) are the constants below.
"""

from __future__ import annotations

#: Prefixes of a metrics row: the epoch's training metrics and its validation metrics.
TRAIN_PREFIX = "train/"
VAL_PREFIX = "val/"

#: Mean loss of the epoch's batches.
LOSS = "loss"

#: Validation as detection (LUNA16's rules, :func:`src_train.evaluate.evaluate_froc`).
CPM = "cpm"
NODULE_RECALL = "nodule_recall"
NODULES = "nodules"
FP_PER_SCAN = "fp_per_scan"
CANDIDATES_PER_SCAN = "candidates_per_scan"

#: Validation voxel by voxel over whole series (:func:`src_train.metrics.overlap_scores`).
VOXEL_PRECISION = "voxel_precision"
VOXEL_RECALL = "voxel_recall"
VOXEL_F1 = "voxel_f1"
VOXEL_IOU = "voxel_iou"
VOXEL_TP = "voxel_tp"
VOXEL_FP = "voxel_fp"
VOXEL_FN = "voxel_fn"


def train_key(name: str) -> str:
    """``train/<name>``: a training metric's key in a metrics row."""
    return f"{TRAIN_PREFIX}{name}"


def val_key(name: str) -> str:
    """``val/<name>``: a validation metric's key in a metrics row, e.g. ``val_key(CPM)``."""
    return f"{VAL_PREFIX}{name}"
