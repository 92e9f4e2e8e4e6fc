"""Writer contribution: a labels layer to ``.mhd``/``.nii.gz`` with the CT's geometry kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error

from src_train.ct import Geometry, save_volume
from src_train.errors import LunaSegError


class _MetaLayer:
    """Just enough of a layer (data + transforms + metadata) for ``geometry_from_layer``."""

    def __init__(self, data: Any, meta: dict[str, Any]) -> None:
        from napari.utils.transforms import Affine

        self.data = data
        self.name = meta.get("name", "labels")
        self.metadata = meta.get("metadata") or {}
        ndim = np.ndim(data)
        self.scale = meta.get("scale", np.ones(ndim))
        self.translate = meta.get("translate", np.zeros(ndim))
        affine = meta.get("affine")
        if affine is None:
            self.affine = Affine(ndim=ndim)
        elif isinstance(affine, Affine):
            self.affine = affine
        else:
            self.affine = Affine(affine_matrix=np.asarray(affine))


def labels_geometry(data: Any, meta: dict[str, Any]) -> Geometry:
    """Geometry of a labels layer given as napari writer ``(data, meta)``."""
    from napari_lunaseg._layers import geometry_from_layer

    return geometry_from_layer(_MetaLayer(data, meta))


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a 3-D labels layer as a volume with the CT's origin, spacing and direction.

    ``.mhd`` (+``.raw``), ``.nii``, ``.nii.gz``, ``.nrrd`` and ``.mha`` are written; the file is
    written atomically. Returns the written path (empty list on failure, with a notification).
    """
    dest = Path(path)
    try:
        geometry = labels_geometry(data, meta)
        array = np.asarray(data)
        if array.dtype == bool or (array.size and array.min() >= 0 and array.max() <= 255):
            array = array.astype(np.uint8, copy=False)
        save_volume(
            array,
            geometry,
            dest,
            compress=dest.name.lower().endswith(".gz"),
            overwrite=True,
        )
    except LunaSegError as exc:
        show_error(f"LunaSeg cannot write {dest.name}: {exc}")
        return []
    return [str(dest)]
