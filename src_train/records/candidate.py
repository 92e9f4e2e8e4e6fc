"""The candidate record: one connected component of a predicted mask, as every stage after
the segmenter sees it (inference writes it, the second stage ranks it, validation scores it).
Made by :func:`src_train.infer.candidates.group_candidates`."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: A point or axis triple that is not known (fields of candidates made before they existed).
UNKNOWN_TRIPLE = (math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class CandidateNodule:
    """One connected component of the predicted mask.

    Attributes:
        series_uid: the series it was found in.
        center_xyz_mm: probability-weighted center of mass, world ``(x, y, z)`` mm.
        center_irc: the same center in fractional array coordinates ``(index, row, col)``.
        diameter_mm: diameter of the sphere with the component's volume, mm.
        voxel_count: voxels in the component.
        probability: the candidate's score, higher = more likely a nodule: as
            :attr:`CandidateConfig.score` chose it (the highest or the mean voxel probability
            inside it), or a ranker's score (:mod:`src_train.classify.ranker`).
        mean_probability: mean voxel probability inside it.
        max_probability: highest voxel probability inside it.
        peak_irc: the voxel ``(index, row, col)`` of the highest probability (inside the
            component, unlike the center of a curved one).
        peak_xyz_mm: the same voxel in world ``(x, y, z)`` mm.
        axes_mm: full axis lengths (mm, longest first) of the ellipsoid with the component's
            second moments: a sphere has three equal axes, a vessel one long axis.
        segmenter_probability: the segmenter's score before a ranker replaced ``probability``.
    """

    series_uid: str
    center_xyz_mm: tuple[float, float, float]
    center_irc: tuple[float, float, float]
    diameter_mm: float
    voxel_count: int
    probability: float
    mean_probability: float = math.nan
    max_probability: float = math.nan
    peak_irc: tuple[float, float, float] = UNKNOWN_TRIPLE
    peak_xyz_mm: tuple[float, float, float] = UNKNOWN_TRIPLE
    axes_mm: tuple[float, float, float] = UNKNOWN_TRIPLE
    segmenter_probability: float = math.nan

    @property
    def elongation(self) -> float:
        """Longest over shortest axis of :attr:`axes_mm` (1 for a ball; NaN when unknown)."""
        longest, _, shortest = self.axes_mm
        return longest / max(shortest, _MIN_AXIS_MM)


#: Shortest axis (mm) an elongation is divided by (a one-voxel-thin component has axis 0).
_MIN_AXIS_MM = 0.5
