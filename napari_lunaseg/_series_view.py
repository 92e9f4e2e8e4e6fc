"""The series Mask QA shows, as the review panel needs it (:class:`SeriesView`): what Mask QA
hands over when its series or masks change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari.layers import Image

from src_train.ct import CtVolume
from src_train.luna import Nodule
from src_train.masks import NoduleMask, SeriesTruth


@dataclass
class SeriesView:
    """The series Mask QA shows, as the review panel needs it.

    Attributes:
        ct: the CT (HU, ``(index, row, col)``, geometry).
        ct_layer: its image layer.
        annotations: its annotated nodules.
        generated: their masks grown without review (Mask QA's records).
        method, threshold_hu: how Mask QA grows masks now.
        truth: the true shapes (synthetic data; Mask QA's, paired with the annotations) or
            None.
        luna_root: the data folder it came from (None: reviews cannot be saved).
    """

    ct: CtVolume
    ct_layer: Image
    annotations: list[Nodule]
    generated: list[NoduleMask]
    method: str
    threshold_hu: float
    truth: SeriesTruth | None = None
    luna_root: Path | None = None
