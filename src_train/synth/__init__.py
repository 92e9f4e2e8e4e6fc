"""Synthetic chest CT in LUNA16 layout, with the true nodule shapes beside the scans.

The project's embedded default data: every command runs on it out of the box and a real LUNA16
folder is a drop-in replacement. A scan holds air, a body with subcutaneous fat and muscle, ribs,
sternum and spine, a mediastinum with the heart, liver domes at the base, the trachea at the top,
two lungs near -850 HU, branching vessels (bright tubes that sometimes touch a nodule), CT noise
and the scanner's circular field of view padded with -2000 or -3024 HU, as LUNA16 scans are.

Nodules are lobulated (a sphere whose radius is modulated by a few low-order angular harmonics,
then stretched and rotated). Their target diameters are drawn from the 1,186 LUNA16 reference
diameters (``assets/luna16_diameters.json``). Kinds: ``solid``, ``juxtapleural`` (touching the
chest wall; the true shape stops at the pleura), ``edge`` (cut by the first or last slice),
``ground-glass`` (-600..-400 HU: the -700 HU threshold sees most, not all, of it) and
``part-solid`` (ground glass around a solid core).

What is written for each nodule (``annotations.csv`` and ``truth/true_nodules.csv``):

* center = center of mass of the true shape's voxels, world ``(x, y, z)`` mm;
* ``diameter_mm`` = equivalent-sphere diameter ``(6 V / pi) ** (1/3)`` of the true shape inside
  the scan (so an ``edge`` nodule cut by the last slice reports what is visible);
* ``volume_mm3`` = voxel count x voxel volume.

Internally positions are "array millimetres": ``(z, y, x)`` mm from voxel ``(0, 0, 0)`` along
the array axes (IRC order). The scan's :class:`~src_train.ct.Geometry` maps them to the world;
only the final records are converted.

Modules, in the order a scan is made:

* :mod:`.config` -- :class:`SynthConfig` (the ranges), each scan's UID and seed;
* :mod:`.primitives` -- random draws and the local box a shape is drawn in;
* :mod:`.anatomy` -- the geometry and the body: tissues, ribs, heart, lungs;
* :mod:`.vessels` -- vessel trees and the tubes that touch nodules;
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
