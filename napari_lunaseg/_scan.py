"""The set of layers that shows one series: CT, true shapes, generated mask, nodule points."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_lunaseg._layers import (
    LayerDataTuple,
    ct_layer_data,
    mask_layer_data,
    nodule_points_data,
    truth_layer_data,
)
from src_train.ct import CtVolume
from src_train.luna import CsvProblem, Nodule
from src_train.masks import DEFAULT_THRESHOLD_HU, REFERENCE_METHOD, build_masks

log = logging.getLogger(__name__)


@dataclass
class ScanBundle:
    """What the viewer shows for one series.

    Attributes:
        ct: the CT volume.
        nodules: annotated nodules (world mm); empty when the series has no annotations.
        truth: true nodule labels ``(index, row, col)`` (synthetic data), or None.
        true_nodules: records of the true nodules (``label`` = value in ``truth``).
        luna_root: the LUNA16-layout folder the series came from, if any.
        problems: malformed annotation rows (or unusable files) passed over, with file, line
            and reason; the scan is shown without them.
    """

    ct: CtVolume
    nodules: list[Nodule] = field(default_factory=list)
    truth: np.ndarray | None = None
    true_nodules: list = field(default_factory=list)
    luna_root: Path | None = None
    problems: list[CsvProblem] = field(default_factory=list)


def bundle_from_path(path: Path) -> ScanBundle:
    """Load what ``path`` opens (:func:`~src_train.luna.series_to_open`: a series, or a LUNA16
    or subset folder's most-annotated series) and, in a LUNA16 layout, its annotations and true
    shapes. Annotations are read leniently: a malformed row is passed over and listed in
    ``problems``, so one bad row never hides the scan."""
    from src_train.ct import load_ct
    from src_train.luna import LunaFolder, find_luna_root, series_to_open

    series = series_to_open(path)
    ct = load_ct(series)
    bundle = ScanBundle(ct=ct)
    root = find_luna_root(series)
    if root is None:
        return bundle
    folder = LunaFolder(root, lenient=True)
    bundle.luna_root = root
    bundle.nodules = list(folder.nodules(ct.series_uid))
    bundle.problems = folder.problems  # filled as the CSV files are read (truth below too)
    truth_path = folder.truth_path(ct.series_uid)
    if truth_path is not None:
        truth_ct = load_ct(truth_path)
        if truth_ct.shape_irc == ct.shape_irc:
            bundle.truth = truth_ct.hu.astype(np.uint8, copy=False)
            bundle.true_nodules = list(folder.true_nodules(ct.series_uid))
        else:
            log.warning("true shapes %s do not match the CT's shape; not shown", truth_path)
    return bundle


def bundle_layers(bundle: ScanBundle, *, with_mask: bool = True) -> list[LayerDataTuple]:
    """Layer data for a bundle, bottom to top: CT, true shapes, generated mask, nodules."""
    ct = bundle.ct
    layers: list[LayerDataTuple] = [
        ct_layer_data(
            ct,
            nodules=list(bundle.nodules),
            true_nodules=list(bundle.true_nodules),
            luna_root=str(bundle.luna_root) if bundle.luna_root else None,
            problems=[
                {"path": str(p.path), "line": p.line, "reason": p.reason} for p in bundle.problems
            ],
        )
    ]
    if bundle.truth is not None:
        layers.append(truth_layer_data(bundle.truth, ct))
    if bundle.nodules:
        if with_mask:
            layers.append(generated_mask_layer(ct, bundle.nodules))
        layers.append(nodule_points_data(bundle.nodules, ct))
    return layers


def generated_mask_layer(
    ct: CtVolume,
    nodules: Sequence[Nodule],
    threshold_hu: float = DEFAULT_THRESHOLD_HU,
    method: str = REFERENCE_METHOD,
) -> LayerDataTuple:
    """The mask grown from the annotated points, as a labels layer."""
    mask, _records = build_masks(ct, list(nodules), threshold_hu=threshold_hu, method=method)
    return mask_layer_data(mask, ct, threshold_hu=threshold_hu, method=method)
