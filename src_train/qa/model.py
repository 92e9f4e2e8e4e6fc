"""What a checkpoint says at each annotation: its probability there and the nearest candidate.

A 2-D checkpoint (trained on RGB image sets) cannot look at a CT and is refused with
:class:`CheckpointError`. The detector runs once per series
(:func:`src_train.infer.run_detection`, the same code as ``lunaseg infer``); the probability
volume is in the CT's geometry, ``(index, row, col)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src_train.ct import CtVolume
from src_train.errors import CheckpointError
from src_train.infer import Detector, InferenceOptions, TunerCache, load_detector, run_detection
from src_train.luna import Nodule
from src_train.model import load_checkpoint
from src_train.qa.combine import ModelSignals

#: A checkpoint's ``extra`` key that only 2-D (image-set) training writes.
IMAGE_SET_KEY = "image_size"


def load_ct_detector(path: str | os.PathLike[str], device: str = "cpu") -> Detector:
    """A CT checkpoint as a detector; a 2-D (image-set) one raises :class:`CheckpointError`."""
    ckpt = load_checkpoint(path, map_location="cpu")
    channels = ckpt.model_config.in_channels
    if IMAGE_SET_KEY in ckpt.extra or channels % 2 == 0:
        raise CheckpointError(
            f"{Path(path)} is a 2-D model (trained on an image set, {channels} input channels); "
            "QA needs a CT checkpoint written by 'lunaseg train' (or leave --checkpoint out)."
        )
    return load_detector(path, device)


def _box_max(prob: np.ndarray, center: Sequence[int], half: Sequence[int]) -> float:
    lo = [max(0, c - h) for c, h in zip(center, half, strict=True)]
    hi = [min(n, c + h + 1) for c, h, n in zip(center, half, prob.shape, strict=True)]
    box = prob[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    return float(box.max()) if box.size else 0.0


def model_signals(
    ct: CtVolume,
    nodules: Sequence[Nodule],
    detector: Detector,
    options: InferenceOptions | None = None,
    tuners: TunerCache | None = None,
) -> list[ModelSignals | None]:
    """One :class:`ModelSignals` per nodule of ``ct`` (None for a center outside the scan).

    The probability is the highest inside the box of the annotated radius (at least one voxel)
    around the center; the distance is to the nearest candidate's center, world mm, among
    every candidate (the detector's ``max_candidates`` is lifted).
    """
    options = options or InferenceOptions()
    # Every candidate: a nodule the detector ranks low still counts as seen.
    every = dataclasses.replace(options.candidates, max_candidates=0)
    result = run_detection(
        ct, detector, dataclasses.replace(options, candidates=every), tuners=tuners
    )
    spacing = np.asarray(ct.geometry.spacing_irc_mm)
    centers = np.array([c.center_xyz_mm for c in result.candidates], dtype=np.float64)
    out: list[ModelSignals | None] = []
    for nodule in nodules:
        irc = ct.geometry.xyz_to_irc_index(nodule.center_xyz_mm)
        if not bool(ct.geometry.contains_irc(irc)):
            out.append(None)
            continue
        radius = 0.5 * (nodule.diameter_mm or 0.0)
        half = [max(1, math.ceil(radius / s)) for s in spacing]
        probability = _box_max(result.prob, [int(v) for v in irc], half)
        if len(centers):
            gaps = np.linalg.norm(centers - np.asarray(nodule.center_xyz_mm), axis=1)
            distance = float(gaps.min())
        else:
            distance = math.inf
        out.append(ModelSignals(probability, distance))
    return out
