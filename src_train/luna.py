"""The LUNA16 folder layout: find series, parse annotation and candidate CSVs.

Layout (the synthetic default uses exactly the same)::

    DATA/subset0..subset9/<seriesuid>.mhd (+ .raw or .zraw)
    DATA/annotations.csv                    seriesuid,coordX,coordY,coordZ,diameter_mm
    DATA/annotations_with_malignancy.csv    (optional; preferred for nodules when present)
    DATA/candidates.csv                     seriesuid,coordX,coordY,coordZ,class
    DATA/truth/<seriesuid>.mhd              (synthetic data only) uint8 true nodule labels
    DATA/truth/nodules.csv                  (synthetic data only) one row per true nodule

Coordinates in these files are world ``(x, y, z)`` millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Nodule:
    """One annotated nodule (or candidate) of a series.

    Attributes:
        series_uid: the series it belongs to.
        center_xyz_mm: centre in world ``(x, y, z)`` mm.
        diameter_mm: annotated diameter in mm; ``None`` when the file gives none (candidates).
        is_nodule: True for annotations and class-1 candidates.
        malignant: the malignancy flag when the malignancy file provides one.
        row: 1-based line number in its CSV file (for error messages and stable ordering).
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    diameter_mm: float | None = None
    is_nodule: bool = True
    malignant: bool | None = None
    row: int = 0
