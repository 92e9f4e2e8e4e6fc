"""Synthetic chest CT in LUNA16 layout, with the true nodule shapes beside the scans.

The project's embedded default data: every command runs on it out of the box and a real LUNA16
folder is a drop-in replacement. A scan holds a chest a radiologist recognises (see
``docs/generalisation.md``): two lungs shaped by the thorax and the mediastinum (the left one
smaller, with the heart's notch), the heart, aorta and pulmonary trunk, the trachea and
branching bronchi, a vessel tree from each hilum tapering toward the periphery, fissures, ribs,
vertebrae, diaphragm domes, parenchyma texture; then a scanner protocol (slice and pixel
spacing, smooth or sharp kernel with its noise, HU calibration offset, field-of-view padding,
partial coverage) drawn from a named family (:mod:`.protocols`).

Nodules are lobulated (a sphere whose radius is modulated by a few low-order angular harmonics,
then stretched and rotated). Their target diameters are drawn from the 1,186 LUNA16 reference
diameters (``assets/luna16_diameters.json``). Kinds: ``solid``, ``juxtapleural`` (a broad base
on the chest wall; the true shape stops at the pleura), ``edge`` (cut by the first or last
slice), ``ground-glass`` (-650..-450 HU: the -700 HU threshold sees most, not all, of it),
``part-solid`` (ground glass around a solid core), ``calcified`` (300-1000 HU) and
``juxtavascular`` (a vessel runs past it).

What is written for each nodule (``annotations.csv`` and ``truth/true_nodules.csv``):

* center = center of mass of the true shape's voxels, world ``(x, y, z)`` mm;
* ``diameter_mm`` = equivalent-sphere diameter ``(6 V / pi) ** (1/3)`` of the true shape inside
  the scan (so an ``edge`` nodule cut by the last slice reports what is visible);
* ``volume_mm3`` = voxel count x voxel volume.

Internally positions are "array millimetres": ``(z, y, x)`` mm from voxel ``(0, 0, 0)`` along
the array axes (IRC order). The scan's :class:`~src_train.ct.Geometry` maps them to the world;
only the final records are converted.

Modules, in the order a scan is made:

* :mod:`.config` -- :class:`SynthConfig` (the ranges), each scan's UID, seed and protocol;
* :mod:`.protocols` -- the scanner protocol families;
* :mod:`.primitives` -- random draws and the local box a shape is drawn in;
* :mod:`.anatomy` -- the geometry and where the organs are;
* :mod:`.body` -- the body drawn slice by slice: tissues, ribs, spine, heart, lungs, fissures;
* :mod:`.texture` -- smooth random fields and the reconstruction kernel with its noise;
* :mod:`.vessels` -- vessel trees and the tubes that touch nodules;
* :mod:`.airways` -- trachea and bronchi;
* :mod:`.nodule_shape` -- a lobulated nodule and how it is drawn with its true shape;
* :mod:`.nodule_placement` -- target diameters and where each kind of nodule goes;
* :mod:`.candidates` -- class-1 and look-alike class-0 candidates;
* :mod:`.scan` -- one scan, :func:`generate_scan`;
* :mod:`.dataset` -- the folder on disk, :func:`write_dataset`, :func:`same_dataset`.

The names below are the package's public API.
"""

from src_train.synth.config import (
    MAX_TRUTH_LABEL,
    UID_PREFIX,
    SynthConfig,
    scan_seed,
    synthetic_series_uid,
)
from src_train.synth.dataset import (
    CANDIDATES_FILE,
    DEFAULT_SCANS,
    DEFAULT_SEED,
    MARKER_FILE,
    describe_dataset,
    same_dataset,
    write_dataset,
)
from src_train.synth.nodule_placement import luna16_diameters_mm
from src_train.synth.scan import HU_STORE_RANGE, SynthScan, generate_scan

__all__ = [
    "CANDIDATES_FILE",
    "DEFAULT_SCANS",
    "DEFAULT_SEED",
    "HU_STORE_RANGE",
    "MARKER_FILE",
    "MAX_TRUTH_LABEL",
    "UID_PREFIX",
    "SynthConfig",
    "SynthScan",
    "describe_dataset",
    "generate_scan",
    "luna16_diameters_mm",
    "same_dataset",
    "scan_seed",
    "synthetic_series_uid",
    "write_dataset",
]
