"""CT volumes and their geometry (reading and writing them: :mod:`.files`).

Arrays are indexed ``(index, row, col)`` -- "IRC", i.e. ``(z, y, x)`` in array order -- while
world coordinates are ``(x, y, z)`` in millimetres, as in LUNA16's CSV files and in SimpleITK.
This module is the only place where the axis order is reversed or axes are reordered: everything
else asks a :class:`Geometry` to convert, and :func:`reorientation` / :meth:`CtVolume.canonical`
to bring a volume to the canonical frame models see (array col/row/index along world +x/+y/+z).

SimpleITK's convention, used throughout::

    xyz_mm = origin_xyz_mm + direction @ (spacing_xyz_mm * index_xyz)

with ``index_xyz = (col, row, index)`` and ``direction`` the 3x3 matrix whose columns are the
world directions of the array's x, y and z axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from src_train.errors import (
    GeometryError,
)

#: Swaps the first and third homogeneous coordinates: (x, y, z, 1) <-> (z, y, x, 1).
_REVERSE_AXES = np.eye(4)[[2, 1, 0, 3]]


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie in the world.

    Attributes:
        shape_irc: array shape ``(index, row, col)`` = ``(z, y, x)``.
        origin_xyz_mm: world position of voxel ``(0, 0, 0)``'s center, ``(x, y, z)`` mm.
        spacing_xyz_mm: voxel size along the array's x, y, z axes in mm.
        direction: 3x3 direction matrix, row-major, as SimpleITK's ``GetDirection()`` returns it.
    """

    shape_irc: tuple[int, int, int]
    origin_xyz_mm: tuple[float, float, float]
    spacing_xyz_mm: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.shape_irc) != 3 or min(self.shape_irc) < 1:
            raise GeometryError(f"A volume needs three non-empty axes; got shape {self.shape_irc}.")
        if np.size(self.origin_xyz_mm) != 3 or not np.all(np.isfinite(self.origin_xyz_mm)):
            raise GeometryError(f"The origin must be 3 finite mm values; got {self.origin_xyz_mm}.")
        if np.size(self.spacing_xyz_mm) != 3 or not np.all(np.asarray(self.spacing_xyz_mm) > 0):
            # (also catches NaN, which compares False)
            raise GeometryError(
                f"Voxel spacing must be 3 positive mm values; got {self.spacing_xyz_mm} mm."
            )
        if np.size(self.direction) != 9 or not np.all(np.isfinite(self.direction)):
            raise GeometryError(
                f"The direction matrix must be 9 finite numbers (3x3, row-major); got "
                f"{self.direction}. Fix the series header."
            )
        matrix = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if abs(abs(np.linalg.det(matrix)) - 1.0) > 1e-3:
            raise GeometryError(
                f"The direction matrix {self.direction} is not a rotation/reflection "
                "(|det| != 1); fix the series header."
            )
        # Normalise to plain Python types so geometries compare, hash and serialise cleanly.
        object.__setattr__(self, "shape_irc", tuple(int(v) for v in self.shape_irc))
        object.__setattr__(self, "origin_xyz_mm", tuple(float(v) for v in self.origin_xyz_mm))
        object.__setattr__(self, "spacing_xyz_mm", tuple(float(v) for v in self.spacing_xyz_mm))
        object.__setattr__(self, "direction", tuple(float(v) for v in matrix.ravel()))

    # -- derived quantities -------------------------------------------------------------------
    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 direction matrix (columns: world directions of the array's x, y, z axes)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def spacing_irc_mm(self) -> tuple[float, float, float]:
        """Voxel size along the array axes ``(index, row, col)`` in mm."""
        sx, sy, sz = self.spacing_xyz_mm
        return (sz, sy, sx)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in cubic millimetres."""
        return float(np.prod(self.spacing_xyz_mm))

    def affine_xyz(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(col, row, index, 1)`` to ``(x, y, z, 1)`` mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing_xyz_mm)[None, :]
        affine[:3, 3] = self.origin_xyz_mm
        return affine

    def affine_irc_to_zyx(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(index, row, col, 1)`` to world ``(z, y, x, 1)`` mm.

        This is the ``affine`` a viewer whose axes are in array order (napari) needs so that
        every layer of a series lines up in world millimetres.
        """
        return _REVERSE_AXES @ self.affine_xyz() @ _REVERSE_AXES

    @classmethod
    def from_affine_irc_to_zyx(cls, affine: np.ndarray, shape_irc: Sequence[int]) -> Geometry:
        """Inverse of :meth:`affine_irc_to_zyx`: the geometry a viewer's 4x4 matrix describes.

        ``affine`` maps homogeneous ``(index, row, col, 1)`` to world ``(z, y, x, 1)`` mm (napari's
        layer transform with scale and translate folded in); the spacing is the length of each
        column and the direction what remains.
        """
        matrix = np.asarray(affine, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise GeometryError(f"Expected a 4x4 affine matrix; got shape {matrix.shape}.")
        xyz = _REVERSE_AXES @ matrix @ _REVERSE_AXES  # maps (col, row, index, 1) to (x, y, z, 1)
        linear = xyz[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        if not np.all(spacing > 0):
            raise GeometryError(f"The affine matrix has a zero-length axis: {matrix.tolist()}.")
        return cls(
            shape_irc=tuple(int(s) for s in shape_irc),  # type: ignore[arg-type]
            origin_xyz_mm=tuple(xyz[:3, 3]),  # type: ignore[arg-type]
            spacing_xyz_mm=tuple(spacing),  # type: ignore[arg-type]
            direction=tuple((linear / spacing[None, :]).ravel()),
        )

    # -- conversions ---------------------------------------------------------------------------
    def irc_to_xyz(self, irc: Sequence[float] | np.ndarray) -> np.ndarray:
        """Convert array coordinates ``(..., 3)`` in IRC order to world ``(x, y, z)`` mm."""
        irc_arr = np.asarray(irc, dtype=np.float64)
        cri = irc_arr[..., ::-1]
        scaled = cri * np.asarray(self.spacing_xyz_mm)
        return scaled @ self.direction_matrix.T + np.asarray(self.origin_xyz_mm)

    def xyz_to_irc(self, xyz_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """Convert world ``(x, y, z)`` mm ``(..., 3)`` to fractional array coordinates (IRC)."""
        xyz_arr = np.asarray(xyz_mm, dtype=np.float64)
        # direction is orthonormal up to rounding; solve rather than transpose for robustness.
        local = np.linalg.solve(
            self.direction_matrix, (xyz_arr - np.asarray(self.origin_xyz_mm)).reshape(-1, 3).T
        ).T.reshape(xyz_arr.shape)
        cri = local / np.asarray(self.spacing_xyz_mm)
        return cri[..., ::-1]

    def xyz_to_irc_index(self, xyz_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """World ``(x, y, z)`` mm to the integer IRC index of the voxel containing the point."""
        return np.rint(self.xyz_to_irc(xyz_mm)).astype(np.int64)

    def contains_irc(self, irc: Sequence[float] | np.ndarray) -> np.ndarray:
        """True where integer IRC indices ``(..., 3)`` lie inside the volume."""
        irc_arr = np.asarray(irc)
        shape = np.asarray(self.shape_irc)
        return np.all((irc_arr >= 0) & (irc_arr < shape), axis=-1)

    # -- SimpleITK interop ---------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        """Geometry of a 3-D SimpleITK image."""
        size_xyz = image.GetSize()
        return cls(
            shape_irc=(size_xyz[2], size_xyz[1], size_xyz[0]),
            origin_xyz_mm=image.GetOrigin(),
            spacing_xyz_mm=image.GetSpacing(),
            direction=image.GetDirection(),
        )

    def apply_to(self, image: sitk.Image) -> None:
        """Copy origin, spacing and direction onto a SimpleITK image of the same shape."""
        image.SetOrigin(self.origin_xyz_mm)
        image.SetSpacing(self.spacing_xyz_mm)
        image.SetDirection(self.direction)

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """Plain-JSON form (for checkpoints, logs and layer metadata)."""
        return {
            "shape_irc": list(self.shape_irc),
            "origin_xyz_mm": list(self.origin_xyz_mm),
            "spacing_xyz_mm": list(self.spacing_xyz_mm),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        """Inverse of :meth:`to_dict`; :class:`GeometryError` when a key is missing."""
        missing = [
            k
            for k in ("shape_irc", "origin_xyz_mm", "spacing_xyz_mm", "direction")
            if k not in data
        ]
        if missing:
            raise GeometryError(
                f"Geometry record lacks {', '.join(missing)}; it was not written by LunaSeg's "
                "Geometry.to_dict."
            )
        return cls(
            shape_irc=tuple(data["shape_irc"]),  # type: ignore[arg-type]
            origin_xyz_mm=tuple(data["origin_xyz_mm"]),  # type: ignore[arg-type]
            spacing_xyz_mm=tuple(data["spacing_xyz_mm"]),  # type: ignore[arg-type]
            direction=tuple(data["direction"]),
        )


#: The canonical frame every volume is brought to before it meets a model: the array's
#: x (col), y (row) and z (index) axes point along world +x, +y, +z (LPS in LUNA16's files, whose
#: directions are mostly the identity), i.e. the direction matrix closest to the identity.
CANONICAL_DIRECTION_NAME = "identity (array col/row/index along world +x/+y/+z)"

#: All orders of the three array axes (x, y, z = col, row, index), for the canonical search.
_AXIS_PERMUTATIONS = tuple(itertools.permutations(range(3)))


@dataclass(frozen=True)
class Reorientation:
    """How a volume's array is reordered into the canonical frame (and back).

    The canonical array's axis ``k`` (0 = x/col, 1 = y/row, 2 = z/index) is the file array's
    axis ``source_axis_xyz[k]`` (same lettering), reversed where ``flip_xyz[k]``. Transposes
    and reversals are views: nothing is copied. World coordinates of every voxel are unchanged:
    the canonical :class:`Geometry` describes the same voxels in the new order.

    Attributes:
        source_axis_xyz: for each canonical axis x, y, z, the file axis it comes from.
        flip_xyz: for each canonical axis, whether the file axis runs against it.
        file_geometry: the geometry of the file's array.
        geometry: the geometry of the canonical array.
    """

    source_axis_xyz: tuple[int, int, int]
    flip_xyz: tuple[bool, bool, bool]
    file_geometry: Geometry
    geometry: Geometry

    @property
    def is_identity(self) -> bool:
        """True when the file already stores the canonical order (views are the arrays)."""
        return self.source_axis_xyz == (0, 1, 2) and not any(self.flip_xyz)

    @property
    def _irc_axes(self) -> tuple[int, ...]:
        # canonical IRC axis j = xyz axis 2 - j, coming from file xyz axis p, = file IRC 2 - p
        return tuple(2 - self.source_axis_xyz[2 - j] for j in range(3))

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """A view of a file-order array ``(index, row, col)`` in the canonical order."""
        view = np.transpose(array, self._irc_axes) if self._irc_axes != (0, 1, 2) else array
        flips = tuple(
            slice(None, None, -1) if self.flip_xyz[2 - j] else slice(None) for j in range(3)
        )
        return view[flips] if any(self.flip_xyz) else view

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """A view of a canonical-order array in the file's order (inverse of
        :meth:`to_canonical`), e.g. a probability volume computed on the canonical CT."""
        flips = tuple(
            slice(None, None, -1) if self.flip_xyz[2 - j] else slice(None) for j in range(3)
        )
        view = array[flips] if any(self.flip_xyz) else array
        return np.transpose(view, np.argsort(self._irc_axes)) if not self.is_identity else view


def reorientation(geometry: Geometry) -> Reorientation:
    """The :class:`Reorientation` that brings ``geometry``'s array to the canonical frame.

    Chooses the axis order whose direction matrix is closest to the identity (largest summed
    absolute diagonal; every direction LunaSeg reads is a rotation/reflection) and reverses the
    axes that then point against world +x, +y, +z. An oblique scan keeps its small rotation.
    """
    direction = geometry.direction_matrix
    source = max(
        _AXIS_PERMUTATIONS,
        key=lambda perm: sum(abs(direction[k, perm[k]]) for k in range(3)),
    )
    flips = tuple(bool(direction[k, source[k]] < 0) for k in range(3))
    size_xyz = geometry.shape_irc[::-1]
    spacing = np.asarray(geometry.spacing_xyz_mm)
    columns = np.empty((3, 3))
    origin = np.asarray(geometry.origin_xyz_mm, dtype=np.float64).copy()
    for k, (axis, flip) in enumerate(zip(source, flips, strict=True)):
        columns[:, k] = direction[:, axis] * (-1.0 if flip else 1.0)
        if flip:  # the canonical first voxel is the file's last along that axis
            origin += direction[:, axis] * spacing[axis] * (size_xyz[axis] - 1)
    canonical = Geometry(
        shape_irc=tuple(size_xyz[source[k]] for k in (2, 1, 0)),  # type: ignore[arg-type]
        origin_xyz_mm=tuple(origin),  # type: ignore[arg-type]
        spacing_xyz_mm=tuple(spacing[list(source)]),  # type: ignore[arg-type]
        direction=tuple(columns.ravel()),
    )
    return Reorientation(
        source_axis_xyz=tuple(int(a) for a in source),  # type: ignore[arg-type]
        flip_xyz=flips,  # type: ignore[arg-type]
        file_geometry=geometry,
        geometry=canonical,
    )


def xyz_to_zyx_mm(points_xyz_mm: Sequence[float] | np.ndarray) -> np.ndarray:
    """World points ``(..., 3)`` in ``(x, y, z)`` mm reordered to ``(z, y, x)`` mm (napari's order).

    Always returns a new float64 array of shape ``(N, 3)``.
    """
    return np.asarray(points_xyz_mm, dtype=np.float64).reshape(-1, 3)[:, ::-1].copy()


@dataclass
class CtVolume:
    """A CT series: Hounsfield units in array order plus its geometry.

    Attributes:
        hu: voxel values in HU, shape ``(index, row, col)``; int16 when the file is integer.
            Treat as read-only: several consumers may share it.
        geometry: where the voxels lie in the world.
        series_uid: the series' identifier: a file's name without its ending (as LUNA16 names
            its files), a DICOM folder's SeriesInstanceUID
            (:func:`~src_train.ct.series_uid_of`).
        path: the file or folder it was read from, if any.
    """

    hu: np.ndarray
    geometry: Geometry
    series_uid: str
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise GeometryError(
                f"Series {self.series_uid!r}: expected a 3-D volume, got shape {self.hu.shape}."
            )
        if tuple(self.hu.shape) != self.geometry.shape_irc:
            raise GeometryError(
                f"Series {self.series_uid!r}: array shape {self.hu.shape} does not match "
                f"its geometry {self.geometry.shape_irc}."
            )

    @property
    def shape_irc(self) -> tuple[int, int, int]:
        """Array shape ``(index, row, col)``."""
        return self.geometry.shape_irc

    def canonical(self) -> tuple[CtVolume, Reorientation]:
        """This series in the canonical frame (see :func:`reorientation`) and the mapping.

        The returned volume's ``hu`` is a view (no copy) of this one's; its geometry places
        every voxel at the same world position. Models always see canonical volumes, so a scan
        stored head-to-feet or feet-to-head, with swapped rows and columns, gives the same input.
        """
        turn = reorientation(self.geometry)
        if turn.is_identity:
            return self, turn
        view = CtVolume(
            hu=turn.to_canonical(self.hu),
            geometry=turn.geometry,
            series_uid=self.series_uid,
            path=self.path,
        )
        return view, turn
