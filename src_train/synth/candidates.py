"""The candidates of a synthetic scan (``candidates.csv``): class-1 points near each true nodule
and class-0 look-alikes on vessels and elsewhere in the lungs, as LUNA16's candidate lists
hold them."""

from __future__ import annotations

import numpy as np

from src_train.ct import Geometry
from src_train.luna import Nodule, TrueNodule
from src_train.synth.config import SynthConfig
from src_train.synth.primitives import random_unit, xyz_tuple
from src_train.synth.vessels import Vessel

#: Candidates of class 0 keep this far (mm) beyond a nodule's radius.
CANDIDATE_GAP_MM = 5.0


def draw_candidates(
    rng: np.random.Generator,
    cfg: SynthConfig,
    series_uid: str,
    geometry: Geometry,
    lung: np.ndarray,
    nodules: list[TrueNodule],
    vessels: list[Vessel],
) -> list[Nodule]:
    """Class-1 points near each true nodule and class-0 look-alikes (vessels, pleura, lung)."""
    spacing = np.asarray(geometry.spacing_irc_mm)
    out = []
    for nodule in nodules:
        jitter = random_unit(rng) * rng.uniform(0, min(2.0, 0.2 * nodule.diameter_mm))
        center = xyz_tuple(np.asarray(nodule.center_xyz_mm) + jitter)
        out.append(Nodule(series_uid, center, None, True))
    n_false = int(
        rng.integers(
            cfg.false_candidates_per_scan_range[0], cfg.false_candidates_per_scan_range[1] + 1
        )
    )
    centers_irc = [np.asarray(geometry.xyz_to_irc(n.center_xyz_mm)) for n in nodules]
    keep_out = [n.diameter_mm / 2 + CANDIDATE_GAP_MM for n in nodules]
    shape = np.array(lung.shape)
    tries = 0
    while sum(not c.is_nodule for c in out) < n_false and tries < 50 * max(n_false, 1):
        tries += 1
        source = rng.random()
        if source < 0.5 and vessels:
            vessel = vessels[int(rng.integers(len(vessels)))]
            point_mm = vessel.start_mm + rng.random() * (vessel.end_mm - vessel.start_mm)
            irc = np.round(point_mm / spacing)
        else:
            irc = np.floor(rng.random(3) * shape)
        idx = tuple(int(v) for v in np.clip(irc, 0, shape - 1))
        if not lung[idx]:
            continue
        if any(
            np.linalg.norm((irc - c) * spacing) < gap
            for c, gap in zip(centers_irc, keep_out, strict=True)
        ):
            continue
        center = xyz_tuple(geometry.irc_to_xyz(np.asarray(idx, dtype=float)))
        out.append(Nodule(series_uid, center, None, False))
    order = rng.permutation(len(out))
    return [out[i] for i in order]
