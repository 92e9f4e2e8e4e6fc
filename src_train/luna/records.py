"""What the LUNA16 files hold, one record per row: an annotated nodule or a candidate
(:class:`Nodule`), and a synthetic data set's true nodule (:class:`TrueNodule`).

Coordinates are world ``(x, y, z)`` millimetres."""

from __future__ import annotations

from dataclasses import dataclass

#: The diameter (mm) scoring gives a finding whose size is unknown: an empty ``diameter_mm``
#: field, or a negative one (LUNA16 writes ``-1`` in ``annotations_excluded.csv`` and its
#: evaluation script scores those as 10 mm). The one rule for unknown diameters in LunaSeg:
#: ``lunaseg eval``, ``lunaseg infer``, validation and the viewer all apply it through
#: :func:`src_train.evaluate.nodule_hits`; a file without a ``diameter_mm`` column at all is
#: refused for scoring (:func:`src_train.luna.read_annotations` with ``require_diameter``).
UNKNOWN_DIAMETER_MM = 10.0


@dataclass(frozen=True)
class Nodule:
    """One annotated nodule (or candidate) of a series.

    Attributes:
        series_uid: the series it belongs to.
        center_xyz_mm: center in world ``(x, y, z)`` mm.
        diameter_mm: annotated diameter in mm; ``None`` when the file gives none (candidates;
            scoring takes :data:`UNKNOWN_DIAMETER_MM`, mask methods fall back to ``grow``).
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


@dataclass(frozen=True)
class TrueNodule:
    """A nodule of a synthetic scan whose true shape is known.

    Attributes:
        series_uid: the series it belongs to.
        label: its value in the truth volume ``truth/<uid>.mhd`` (1-based, in annotation order).
        center_xyz_mm: center of mass of the true shape, world ``(x, y, z)`` mm.
        diameter_mm: equivalent-sphere diameter of the true shape inside the scan, mm.
        kind: one of :data:`TRUE_NODULE_KINDS`.
        volume_mm3: volume of the true shape inside the scan, cubic mm.
    """

    series_uid: str
    label: int
    center_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    kind: str
    volume_mm3: float


#: Kinds of synthetic nodules (``TrueNodule.kind``).
TRUE_NODULE_KINDS = (
    "solid",
    "juxtapleural",
    "edge",
    "ground-glass",
    "part-solid",
    "calcified",
    "juxtavascular",
)
