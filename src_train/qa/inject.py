"""Label errors put into a synthetic folder's annotations at known rows: what QA is measured on.

The kinds are the errors point annotations from several readers carry:

* ``moved`` -- the center moved by 1-2 diameters in a random direction (kept inside the scan);
* ``diameter`` -- the diameter multiplied or divided by 2-3;
* ``lung`` -- a new annotation on plain lung (no dense voxel within its radius), far from
  every nodule;
* ``vessel`` -- a new annotation on a vessel: a dense voxel inside the lung field that belongs
  to no true nodule and lies far from every one;
* ``duplicate`` -- a second annotation of a nodule, its center jittered by up to a quarter of
  the radius, inserted anywhere in the file.

Draws (:func:`draw_errors`) are apart from writing (:func:`write_injected`), so a test can
look at what would be injected. Arrays are ``(index, row, col)``; centers world ``(x, y, z)``
mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from src_train.anatomy import lung_field
from src_train.atomic import write_text_atomic
from src_train.ct import load_ct
from src_train.luna import ANNOTATIONS_FILE, LunaFolder, Nodule
from src_train.masks.density import DEFAULT_THRESHOLD_HU

#: Every kind of injected error, in the order they are listed.
ERROR_KINDS = ("moved", "diameter", "lung", "vessel", "duplicate")
#: A new (lung, vessel) annotation keeps at least this far from every true nodule's edge, mm.
CLEARANCE_MM = 10.0
#: Diameters given to new annotations (lung, vessel), mm.
NEW_DIAMETER_MM = (4.0, 12.0)


@dataclass(frozen=True)
class LabelledRow:
    """One row of the annotation file after injection.

    Attributes:
        nodule: the annotation (``row`` = its position, 0-based, in the file written).
        kind: ``""`` for a good row, else one of :data:`ERROR_KINDS`.
    """

    nodule: Nodule
    kind: str


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _far_points(
    pool: np.ndarray, nodules: Sequence[Nodule], geometry_xyz: np.ndarray
) -> np.ndarray:
    """Indices of ``pool`` voxels whose world point keeps :data:`CLEARANCE_MM` from every
    nodule's surface."""
    keep = np.ones(len(pool), dtype=bool)
    for nodule in nodules:
        reach = CLEARANCE_MM + 0.5 * (nodule.diameter_mm or 0.0)
        keep &= np.linalg.norm(geometry_xyz - np.asarray(nodule.center_xyz_mm), axis=1) > reach
    return np.flatnonzero(keep)


def _new_site(
    folder: LunaFolder, uid: str, kind: str, rng: np.random.Generator
) -> tuple[float, float, float] | None:
    """A world point of series ``uid`` on plain lung or on a vessel, or None when it has none."""
    ct = folder.load(uid)
    hu = ct.hu
    field = lung_field(hu, ct.geometry.spacing_irc_mm)
    truth_path = folder.truth_path(uid)
    truth = load_ct(truth_path).hu > 0 if truth_path is not None else np.zeros(hu.shape, bool)
    near_truth = ndimage.binary_dilation(truth, iterations=2)
    is_dense = hu > DEFAULT_THRESHOLD_HU
    if kind == "lung":
        clear = ndimage.minimum_filter(~is_dense, size=5) & field
    else:
        clear = is_dense & (hu > -100) & ndimage.binary_erosion(field, iterations=3)
    clear &= ~near_truth
    pool = np.argwhere(clear)
    if len(pool) == 0:
        return None
    pool = pool[rng.permutation(len(pool))[:4000]]
    xyz = ct.geometry.irc_to_xyz(pool.astype(np.float64))
    far = _far_points(pool, folder.nodules(uid), xyz)
    if len(far) == 0:
        return None
    x, y, z = xyz[int(rng.choice(far))]
    return (float(x), float(y), float(z))


def _moved(folder: LunaFolder, nodule: Nodule, rng: np.random.Generator) -> Nodule | None:
    ct = folder.load(nodule.series_uid)
    d = nodule.diameter_mm or 5.0
    for _ in range(20):
        point = np.asarray(nodule.center_xyz_mm) + _unit(rng) * rng.uniform(1.0, 2.0) * d
        if bool(ct.geometry.contains_irc(ct.geometry.xyz_to_irc(point))):
            xyz = (float(point[0]), float(point[1]), float(point[2]))
            return Nodule(nodule.series_uid, xyz, nodule.diameter_mm)
    return None


def draw_errors(folder: LunaFolder, rng: np.random.Generator, per_kind: int) -> list[LabelledRow]:
    """The folder's annotations with ``per_kind`` errors of each kind drawn in (see the module
    docstring); rows in the order they will be written (``nodule.row`` = that position)."""
    originals = [n for uid in folder.series_uids for n in folder.nodules(uid)]
    rows: list[LabelledRow] = [LabelledRow(n, "") for n in originals]
    order = rng.permutation(len(originals))
    changed = order[: 2 * per_kind]
    for k, index in enumerate(changed):
        nodule = originals[int(index)]
        if k < per_kind:
            moved = _moved(folder, nodule, rng)
            if moved is not None:
                rows[int(index)] = LabelledRow(moved, "moved")
        else:
            factor = rng.uniform(2.0, 3.0)
            d = (nodule.diameter_mm or 5.0) * (factor if rng.integers(2) else 1.0 / factor)
            rows[int(index)] = LabelledRow(
                Nodule(nodule.series_uid, nodule.center_xyz_mm, float(d)), "diameter"
            )
    untouched = [int(i) for i in order[2 * per_kind :]]
    for kind in ("lung", "vessel"):
        added = 0
        for _ in range(per_kind * 5):
            if added == per_kind:
                break
            uid = folder.series_uids[int(rng.integers(len(folder.series_uids)))]
            site = _new_site(folder, uid, kind, rng)
            if site is not None:
                d = float(rng.uniform(*NEW_DIAMETER_MM))
                rows.insert(
                    int(rng.integers(len(rows) + 1)), LabelledRow(Nodule(uid, site, d), kind)
                )
                added += 1
    for index in untouched[:per_kind]:
        source = originals[index]
        jitter = _unit(rng) * rng.uniform(0.0, 0.25) * 0.5 * (source.diameter_mm or 4.0)
        center = tuple(float(v) for v in np.asarray(source.center_xyz_mm) + jitter)
        copy = Nodule(source.series_uid, center, source.diameter_mm)  # type: ignore[arg-type]
        rows.insert(int(rng.integers(len(rows) + 1)), LabelledRow(copy, "duplicate"))
    return [
        LabelledRow(
            Nodule(r.nodule.series_uid, r.nodule.center_xyz_mm, r.nodule.diameter_mm, row=i),
            r.kind,
        )
        for i, r in enumerate(rows)
    ]


def write_injected(root: str | Path, rows: Sequence[LabelledRow]) -> Path:
    """Replace ``root/annotations.csv`` with ``rows`` (LUNA16 columns, 6 decimals)."""
    lines = [["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]]
    for r in rows:
        x, y, z = r.nodule.center_xyz_mm
        d = r.nodule.diameter_mm
        lines.append(
            [
                r.nodule.series_uid,
                f"{x:.6f}",
                f"{y:.6f}",
                f"{z:.6f}",
                "" if d is None else f"{d:.6f}",
            ]
        )
    path = Path(root) / ANNOTATIONS_FILE
    text = "\n".join(",".join(line) for line in lines) + "\n"
    write_text_atomic(path, text, overwrite=True)
    return path


def read_labels(rows: Sequence[LabelledRow]) -> np.ndarray:
    """A bool array: True for the injected (bad) rows, in file order."""
    return np.array([bool(r.kind) for r in rows])


__all__ = ["ERROR_KINDS", "LabelledRow", "draw_errors", "read_labels", "write_injected"]
