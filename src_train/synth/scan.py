"""One synthetic scan: its protocol, then the body, vessels, airways and nodules drawn in turn
from one random stream, then the reconstruction kernel with its noise, the HU calibration
offset, int16 storage and the scanner's circular field of view; the true nodules measured on
the labels they left (center of mass, equivalent diameter, volume)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from src_train.ct import CtVolume, Geometry
from src_train.luna import TRUE_NODULE_KINDS, Nodule, TrueNodule
from src_train.synth.airways import airway_tree, draw_airways
from src_train.synth.anatomy import draw_anatomy, draw_geometry
from src_train.synth.body import draw_body
from src_train.synth.candidates import draw_candidates
from src_train.synth.config import SynthConfig, scan_protocol
from src_train.synth.nodule_placement import place_nodules
from src_train.synth.nodule_shape import NoduleSpec, draw_nodule
from src_train.synth.primitives import xyz_tuple
from src_train.synth.protocols import ScanProtocol
from src_train.synth.texture import apply_kernel
from src_train.synth.vessels import draw_vessel, juxtavascular_vessels, vessel_trees

log = logging.getLogger(__name__)

#: Stored HU range (int16 like LUNA16); the FOV padding lies outside it on purpose.
HU_STORE_RANGE = (-1024, 3071)


@dataclass
class SynthScan:
    """One synthetic scan.

    Attributes:
        ct: the CT (int16 HU, ``(index, row, col)``) with its geometry.
        truth: uint8 labels, same shape: 0 background, ``k`` the k-th nodule's true shape.
        nodules: the true nodules, in label order.
        candidates: candidate points (class 1 = near a true nodule, class 0 = lookalikes).
        protocol: the scanner protocol it was made with.
    """

    ct: CtVolume
    truth: np.ndarray
    nodules: list[TrueNodule]
    candidates: list[Nodule] = field(default_factory=list)
    protocol: ScanProtocol | None = None

    @property
    def annotations(self) -> list[Nodule]:
        """The nodules as LUNA16 annotations (center of mass, equivalent diameter)."""
        return [
            Nodule(t.series_uid, t.center_xyz_mm, t.diameter_mm, True, None, t.label)
            for t in self.nodules
        ]


def generate_scan(
    series_uid: str,
    seed: int,
    config: SynthConfig | None = None,
    *,
    kind_offset: int | None = None,
) -> SynthScan:
    """Make one synthetic chest CT with its true nodule labels (deterministic for ``seed``).

    Args:
        series_uid: UID to give the scan.
        seed: random seed; the same seed and config give identical arrays.
        config: ranges to draw from (default :class:`SynthConfig`).
        kind_offset: the first nodule's kind is ``TRUE_NODULE_KINDS[kind_offset % 7]`` and the
            next ones follow in order (a data set cycles through all kinds); random if None.

    Returns:
        A :class:`SynthScan`: int16 HU and uint8 truth, both ``(index, row, col)``, nodules in
        label order with world ``(x, y, z)`` mm centers.
    """
    cfg = config or SynthConfig()
    rng = np.random.default_rng(seed)
    protocol = scan_protocol(rng, cfg)
    geometry, n_full = draw_geometry(rng, cfg, protocol)
    anat = draw_anatomy(rng, cfg, geometry, protocol, n_full)
    spacing = np.asarray(geometry.spacing_irc_mm)
    edge_mm = float(spacing[1:].mean())
    hu, lung = draw_body(rng, geometry, anat)

    offset = int(rng.integers(len(TRUE_NODULE_KINDS))) if kind_offset is None else kind_offset
    specs = place_nodules(rng, cfg, lung, spacing, offset)
    vessels = vessel_trees(rng, cfg, geometry, anat, lung)
    vessels += juxtavascular_vessels(rng, cfg, anat, specs, 0.6 * float(spacing[1]))
    for vessel in vessels:
        draw_vessel(hu, lung, vessel, spacing, edge_mm)
    central, bronchi = airway_tree(rng, geometry, anat, lung)
    draw_airways(hu, lung, central, bronchi, spacing, edge_mm)

    truth = np.zeros(geometry.shape_irc, dtype=np.uint8)
    nodules = _draw_nodules(hu, truth, lung, specs, series_uid, geometry, edge_mm)

    ct_hu = apply_kernel(hu, protocol, geometry.spacing_irc_mm, rng)
    del hu
    ct_hu += np.float32(protocol.hu_offset)
    np.rint(ct_hu, out=ct_hu)
    np.clip(ct_hu, *HU_STORE_RANGE, out=ct_hu)
    volume = ct_hu.astype(np.int16)
    del ct_hu
    n_y, n_x = geometry.shape_irc[1:]
    yy, xx = np.ogrid[:n_y, :n_x]
    outside = (yy - (n_y - 1) / 2) ** 2 + (xx - (n_x - 1) / 2) ** 2 > (min(n_y, n_x) / 2) ** 2
    volume[:, outside] = anat.pad_hu

    candidates = draw_candidates(rng, cfg, series_uid, geometry, lung, nodules, vessels)
    ct = CtVolume(hu=volume, geometry=geometry, series_uid=series_uid)
    return SynthScan(ct=ct, truth=truth, nodules=nodules, candidates=candidates, protocol=protocol)


def _draw_nodules(
    hu: np.ndarray,
    truth: np.ndarray,
    lung: np.ndarray,
    specs: list[NoduleSpec],
    series_uid: str,
    geometry: Geometry,
    edge_mm: float,
) -> list[TrueNodule]:
    """Draw the placed nodules into ``hu`` and their labels into ``truth``; measure each on
    the voxels it left (center of mass, equivalent diameter, volume)."""
    spacing = np.asarray(geometry.spacing_irc_mm)
    nodules: list[TrueNodule] = []
    for spec in specs:
        label = len(nodules) + 1
        box, count = draw_nodule(hu, truth, lung, spec, label, spacing, edge_mm)
        if count == 0:
            log.debug("nodule of %.1f mm left no voxel; skipped", 2 * spec.radius_mm)
            continue
        where = np.argwhere(truth[box] == label)
        com_irc = where.mean(axis=0) + np.array([b.start for b in box])
        volume_mm3 = count * geometry.voxel_volume_mm3
        nodules.append(
            TrueNodule(
                series_uid=series_uid,
                label=label,
                center_xyz_mm=xyz_tuple(geometry.irc_to_xyz(com_irc)),
                diameter_mm=float(np.cbrt(6 * volume_mm3 / np.pi)),
                kind=spec.kind,
                volume_mm3=float(volume_mm3),
            )
        )
    return nodules
