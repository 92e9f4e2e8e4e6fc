"""True shapes (synthetic data) against masks made from annotations: one matching rule, one Dice.

A synthetic data set stores every nodule's true shape (``truth/<uid>.mhd``, label ``k`` = true
nodule ``k``) and its record (:class:`~src_train.luna.TrueNodule`). To score a mask made from an
annotation, the annotation is paired with a true nodule by :func:`match_true` (the nearest
annotation within the true diameter, world mm) and the nodule's mask is compared with that
label in the union of their boxes (:meth:`SeriesTruth.nodule_dice`). The mask report, ``lunaseg
mask`` and the viewer's Mask QA table all score through this module, so they agree.

:func:`dense_surround` says how hidden a true shape is: the dense share of the tissue within
2 mm of it (a detection report groups nodules by it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from src_train.ct import CtVolume, load_ct
from src_train.errors import GeometryError
from src_train.luna import LunaFolder, Nodule, TrueNodule
from src_train.masks.boxes import Slices3, paste_into, union_box
from src_train.masks.build import NoduleMask
from src_train.metrics import dice

#: An annotation matches a true nodule within the true diameter, but at least this far (mm).
MATCH_MIN_DISTANCE_MM = 1.0

#: :func:`dense_surround` reads the voxels this close to a true shape (mm)...
SURROUND_SHELL_MM = 2.0
#: ...and counts those above this HU as dense: vessel, airway wall, chest wall, mediastinum
#: (lung parenchyma lies near -850 HU, ground glass from -650 HU up).
SURROUND_DENSE_HU = -500.0


def match_true(
    annotations: Sequence[Nodule], truths: Sequence[TrueNodule]
) -> list[tuple[TrueNodule, Nodule | None]]:
    """Pair each true nodule with the nearest annotation within its diameter (world mm).

    The distance limit is ``max(diameter_mm, MATCH_MIN_DISTANCE_MM)`` between the true center
    of mass and the annotated center; a true nodule with no annotation that close gets None.
    """
    if not annotations:
        return [(t, None) for t in truths]
    centers = np.asarray([a.center_xyz_mm for a in annotations], dtype=np.float64)
    pairs: list[tuple[TrueNodule, Nodule | None]] = []
    for truth in truths:
        dist = np.linalg.norm(centers - np.asarray(truth.center_xyz_mm), axis=1)
        k = int(np.argmin(dist))
        near = dist[k] <= max(truth.diameter_mm, MATCH_MIN_DISTANCE_MM)
        pairs.append((truth, annotations[k] if near else None))
    return pairs


def dense_surround(
    hu: np.ndarray,
    inside: np.ndarray,
    spacing_irc_mm: Sequence[float],
    *,
    shell_mm: float = SURROUND_SHELL_MM,
    dense_hu: float = SURROUND_DENSE_HU,
) -> float:
    """Share of the voxels around a shape that are dense: how far the tissue beside a nodule
    hides it (0: lung all round; a juxtapleural nodule about a third; one inside a vessel
    bundle most of it).

    Args:
        hu: HU ``(index, row, col)`` of a box holding the shape and ``shell_mm`` around it
            (as far as the volume reaches: voxels outside it are simply not counted).
        inside: bool, same shape: the shape's voxels.
        spacing_irc_mm: voxel size along index, row, col (distances are physical).
        shell_mm: the voxels whose distance from the shape is above 0 and at most this count.
        dense_hu: a voxel above this is dense.

    Returns:
        The dense share of those voxels; NaN when there are none (an empty shape, or one
        filling its box).
    """
    inside = np.asarray(inside, dtype=bool)
    if hu.shape != inside.shape:
        raise ValueError(f"hu {hu.shape} and inside {inside.shape} differ in shape.")
    if not inside.any():
        return math.nan
    distance = ndimage.distance_transform_edt(~inside, sampling=tuple(spacing_irc_mm))
    shell = (distance > 0) & (distance <= shell_mm)
    n = int(np.count_nonzero(shell))
    return float(np.count_nonzero(hu[shell] > dense_hu)) / n if n else math.nan


@dataclass
class SeriesTruth:
    """The true shapes of one series, each paired with its annotation.

    Attributes:
        series_uid: the series.
        labels: the truth volume ``(index, row, col)``, 0 = background, ``k`` = true nodule k.
        label_boxes: per label ``k``, its bounding slices (``label_boxes[k - 1]``) or None.
        pairs: every true nodule with the nearest annotation within its diameter (or None).
    """

    series_uid: str
    labels: np.ndarray
    label_boxes: list[Slices3 | None]
    pairs: list[tuple[TrueNodule, Nodule | None]]

    @classmethod
    def from_labels(
        cls,
        series_uid: str,
        labels: np.ndarray,
        annotations: Sequence[Nodule],
        truths: Sequence[TrueNodule],
    ) -> SeriesTruth:
        """Pair ``annotations`` with ``truths`` (:func:`match_true`) over a label volume."""
        boxes = ndimage.find_objects(np.asarray(labels).astype(np.int32, copy=False))
        return cls(series_uid, np.asarray(labels), list(boxes), match_true(annotations, truths))

    @property
    def annotated(self) -> list[Nodule]:
        """The annotations paired with a true nodule, in truth-label order."""
        return [a for _, a in self.pairs if a is not None]

    @property
    def unmatched(self) -> list[str]:
        """``"<uid> label <k>"`` for each true nodule without an annotation."""
        return [f"{self.series_uid} label {t.label}" for t, a in self.pairs if a is None]

    def truth_of(self, annotation: Nodule) -> TrueNodule | None:
        """The true nodule paired with ``annotation`` (compared by value), or None."""
        return next((t for t, a in self.pairs if a is not None and a == annotation), None)

    def nodule_dice(self, truth: TrueNodule, record: NoduleMask | None) -> tuple[float, int]:
        """``(Dice, true voxel count)`` of a record's mask against ``truth``'s label.

        Computed in the union of the record's box and the label's box; a missing or skipped
        record scores 0.
        """
        k = truth.label
        true_box = self.label_boxes[k - 1] if 0 < k <= len(self.label_boxes) else None
        boxes = (
            [] if true_box is None else [([s.start for s in true_box], [s.stop for s in true_box])]
        )
        if record is None or record.skipped:
            region = union_box(boxes)
            return 0.0, 0 if region is None else int(np.count_nonzero(self.labels[region] == k))
        region = union_box([*boxes, (record.box_lo_irc, record.box_hi_irc)])
        if region is None:  # an empty record and no true voxel
            return 0.0, 0
        true_local = self.labels[region] == k
        pred_local = paste_into(region, record.box_lo_irc, record.box_hi_irc, record.local_mask)
        return dice(pred_local, true_local), int(np.count_nonzero(true_local))

    def dense_surround(self, ct: CtVolume, truth: TrueNodule) -> float:
        """:func:`dense_surround` of ``truth``'s shape in ``ct`` (its series), read on the
        label's box widened by the shell; NaN for a label without voxels."""
        k = truth.label
        box = self.label_boxes[k - 1] if 0 < k <= len(self.label_boxes) else None
        if box is None:
            return math.nan
        spacing = ct.geometry.spacing_irc_mm
        wide = tuple(
            slice(max(s.start - pad, 0), min(s.stop + pad, n))
            for s, pad, n in zip(
                box,
                (math.ceil(SURROUND_SHELL_MM / d) for d in spacing),
                self.labels.shape,
                strict=True,
            )
        )
        return dense_surround(ct.hu[wide], self.labels[wide] == k, spacing)

    def record_dice(self, record: NoduleMask) -> float | None:
        """Dice of one annotation's record against its paired true nodule; None when the
        annotation has no true nodule (e.g. a nodule the phantom does not contain)."""
        truth = self.truth_of(record.nodule)
        return None if truth is None else self.nodule_dice(truth, record)[0]


def load_series_truth(folder: LunaFolder, ct: CtVolume) -> SeriesTruth | None:
    """The true shapes of ``ct``'s series in ``folder`` (None when it has no truth volume).

    Raises:
        GeometryError: when the truth volume's shape differs from the series'.
    """
    truth_path = folder.truth_path(ct.series_uid)
    if truth_path is None:
        return None
    labels = load_ct(truth_path).hu
    if labels.shape != ct.hu.shape:
        raise GeometryError(
            f"{truth_path}: shape {labels.shape} differs from its series {ct.hu.shape}; "
            "regenerate the data set."
        )
    return SeriesTruth.from_labels(
        ct.series_uid,
        labels,
        folder.nodules(ct.series_uid),
        folder.true_nodules(ct.series_uid),
    )
