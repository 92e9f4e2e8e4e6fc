"""Turn core results (``src_train``) into napari layer data, and layers back into core objects.

Every layer this plugin makes carries the CT's affine (array ``(index, row, col)`` -> world
``(z, y, x)`` mm, from :meth:`Geometry.affine_irc_to_zyx`) or is given directly in world
``(z, y, x)`` mm, so all of them line up in 2-D and 3-D whatever the scan's direction matrix.
Layer metadata holds a ``"lunaseg"`` dict: the layer's ``role``, the ``series_uid`` and the
geometry, so widgets can rebuild a :class:`CtVolume` from a layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from napari_lunaseg._names import short_name as short_name  # the layers' names
from src_train.colors import (
    ANNOTATION_RGB,
    ERROR_COLORS_RGB,
    LUNG_WINDOW_HU,
    MASK_RGB,
    PREDICTION_RGB,
    TRUE_SHAPE_RGB,
)
from src_train.ct import CtVolume, Geometry
from src_train.errors import GeometryError
from src_train.luna import Nodule

#: Key of this plugin's entry in ``layer.metadata``.
META_KEY = "lunaseg"

#: Layer roles (``layer.metadata["lunaseg"]["role"]``).
ROLE_CT = "ct"
ROLE_MASK = "mask"
ROLE_TRUTH = "truth"
ROLE_NODULES = "nodules"
ROLE_BOXES = "boxes"
ROLE_PROB = "probability"
ROLE_PRED = "prediction"
ROLE_ERROR = "error"
ROLE_CANDIDATES = "candidates"
ROLE_GROWTH = "growth"
ROLE_PROBES = "probes"
ROLE_REVIEWED = "reviewed"
ROLE_REVIEW_BOX = "review box"
ROLE_REVIEW_EDIT = "review edit"
ROLE_REVIEW_ADD = "review add"

#: napari colour map of the probability layer (no green, orange or red: see ``colors``).
PROBABILITY_COLORMAP = "bop purple"
#: Ring width of nodule and candidate points, as a fraction of the point's size (thin enough
#: to leave the voxels under the ring's edge readable).
RING_WIDTH = 0.04
#: Point size (mm) used for a nodule without an annotated diameter.
DEFAULT_POINT_SIZE_MM = 6.0

LayerDataTuple = tuple[Any, dict[str, Any], str]


def rgba(rgb: Sequence[int], alpha: float = 1.0) -> tuple[float, float, float, float]:
    """0-255 RGB to a 0-1 RGBA tuple."""
    r, g, b = (float(v) / 255.0 for v in rgb)
    return (r, g, b, alpha)


def hex_color(rgb: Sequence[int]) -> str:
    """0-255 RGB as ``"#rrggbb"`` (what points and shapes layers take for one colour)."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def single_label_colormap(color: Sequence[float]) -> DirectLabelColormap:
    """A direct colour map showing label 1 in ``color`` and nothing else."""
    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: tuple(color)})


def uniform_label_colormap(color: Sequence[float]) -> DirectLabelColormap:
    """A direct colour map showing every label but 0 in ``color``."""
    return DirectLabelColormap(color_dict={None: tuple(color), 0: (0, 0, 0, 0)})


#: Display colours (RGBA, 0-1) of the generated mask and the prediction.
MASK_RGBA = rgba(MASK_RGB)
PRED_RGBA = rgba(PREDICTION_RGB)


def error_colormap() -> DirectLabelColormap:
    """The colour code of error volumes: TP green, FN orange, FP red (values 1/2/3)."""
    colors: dict[int | None, tuple[float, ...]] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    for value, rgb in ERROR_COLORS_RGB.items():
        colors[value] = rgba(rgb)
    return DirectLabelColormap(color_dict=colors)


def lunaseg_meta(role: str, geometry: Geometry, series_uid: str, **extra: Any) -> dict[str, Any]:
    """The ``metadata`` dict of a layer made by this plugin."""
    info = {"role": role, "series_uid": series_uid, "geometry": geometry.to_dict()}
    info.update(extra)
    return {META_KEY: info}


def layer_info(layer: Any) -> dict[str, Any]:
    """This plugin's metadata of a layer (empty for foreign layers)."""
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(META_KEY)
    return info if isinstance(info, dict) else {}


def ct_layer_data(ct: CtVolume, **extra: Any) -> LayerDataTuple:
    """Image layer data of a CT: lung window, grey, placed in world mm by the CT's affine."""
    kwargs = {
        "name": short_name(ct.series_uid),
        "affine": ct.geometry.affine_irc_to_zyx(),
        "contrast_limits": list(LUNG_WINDOW_HU),
        "colormap": "gray",
        "metadata": lunaseg_meta(
            ROLE_CT,
            ct.geometry,
            ct.series_uid,
            path=str(ct.path) if ct.path else None,
            **extra,
        ),
    }
    return (ct.hu, kwargs, "image")


def labels_layer_data(
    data: np.ndarray,
    ct: CtVolume,
    *,
    role: str,
    name: str,
    colormap: DirectLabelColormap | None = None,
    **kwargs: Any,
) -> LayerDataTuple:
    """Labels layer data aligned with ``ct`` (``data`` in IRC order, same shape as the CT)."""
    if tuple(data.shape) != ct.shape_irc:
        raise GeometryError(
            f"{name}: labels of shape {data.shape} do not match the CT {ct.shape_irc}."
        )
    layer_kwargs: dict[str, Any] = {
        "name": name,
        "affine": ct.geometry.affine_irc_to_zyx(),
        "metadata": lunaseg_meta(role, ct.geometry, ct.series_uid),
        "opacity": 0.6,
    }
    if colormap is not None:
        layer_kwargs["colormap"] = colormap
    layer_kwargs.update(kwargs)
    return (data, layer_kwargs, "labels")


def mask_layer_data(mask: np.ndarray, ct: CtVolume, **extra_meta: Any) -> LayerDataTuple:
    """The generated (ground-truth-from-points) mask as a uint8 labels layer."""
    data = np.ascontiguousarray(mask, dtype=np.uint8)
    layer = labels_layer_data(
        data,
        ct,
        role=ROLE_MASK,
        name=f"{short_name(ct.series_uid)} mask",
        colormap=single_label_colormap(MASK_RGBA),
        opacity=0.55,
    )
    layer[1]["metadata"][META_KEY].update(extra_meta)
    return layer


def truth_layer_data(truth: np.ndarray, ct: CtVolume) -> LayerDataTuple:
    """True nodule shapes (synthetic data) as labels (Mask QA shows them as outlines)."""
    return labels_layer_data(
        np.asarray(truth),
        ct,
        role=ROLE_TRUTH,
        name=f"{short_name(ct.series_uid)} true shapes",
        colormap=uniform_label_colormap(rgba(TRUE_SHAPE_RGB)),
        opacity=0.7,
    )


def nodule_points_data(
    nodules: Sequence[Nodule], ct: CtVolume, *, name: str | None = None
) -> LayerDataTuple:
    """Annotated nodules as points sized by their diameter (mm): fractional ``(index, row,
    col)`` placed by the CT's affine like every other layer, so no layer makes napari's slice
    slider step finer than the CT's slices."""
    centers = ct.geometry.xyz_to_irc(
        np.asarray([n.center_xyz_mm for n in nodules], dtype=float).reshape(-1, 3)
    )
    sizes = np.array(
        [n.diameter_mm if n.diameter_mm else DEFAULT_POINT_SIZE_MM for n in nodules], dtype=float
    )
    features = {
        "nodule": np.arange(1, len(nodules) + 1),
        "diameter_mm": np.array([n.diameter_mm or np.nan for n in nodules], dtype=float),
    }
    kwargs = {
        "name": name or f"{short_name(ct.series_uid)} nodules",
        "size": sizes if len(nodules) else DEFAULT_POINT_SIZE_MM,
        "features": features,
        "face_color": "transparent",
        "border_color": hex_color(ANNOTATION_RGB),
        "border_width": RING_WIDTH,
        "projection_mode": "rescale_spherical",
        "affine": ct.geometry.affine_irc_to_zyx(),
        "metadata": lunaseg_meta(ROLE_NODULES, ct.geometry, ct.series_uid),
    }
    return (centers, kwargs, "points")


def geometry_from_layer(layer: Any) -> Geometry:
    """The geometry of a 3-D layer: from this plugin's metadata, else from its transforms.

    A foreign layer's ``affine`` combined with its ``scale`` and ``translate`` (napari order
    ``(z, y, x)``) is converted back to SimpleITK's origin, spacing and direction.
    """
    info = layer_info(layer)
    shape = tuple(int(s) for s in np.shape(layer.data))
    if "geometry" in info:
        geometry = Geometry.from_dict(info["geometry"])
        if geometry.shape_irc == shape:
            return geometry
    if len(shape) != 3:
        raise GeometryError(
            f"Layer {layer.name!r} has {len(shape)} dimensions; LunaSeg needs a 3-D volume."
        )
    scale_translate = np.diag([*np.asarray(layer.scale, dtype=float), 1.0])
    scale_translate[:3, 3] = np.asarray(layer.translate, dtype=float)
    zyx = np.asarray(layer.affine.affine_matrix, dtype=float) @ scale_translate
    return Geometry.from_affine_irc_to_zyx(zyx, shape)


def ct_from_layer(layer: Any) -> CtVolume:
    """Rebuild a :class:`CtVolume` from an image layer (no copy of the voxel data)."""
    info = layer_info(layer)
    data = np.asarray(layer.data)
    geometry = geometry_from_layer(layer)
    uid = str(info.get("series_uid") or layer.name)
    path = Path(info["path"]) if info.get("path") else None
    return CtVolume(hu=data, geometry=geometry, series_uid=uid, path=path)
