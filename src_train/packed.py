"""Boolean volumes stored as bits: an eighth of the bytes, read a crop at a time.

A mask ``(index, row, col)`` is packed with ``np.packbits`` along ``col`` (the last axis, 8
voxels per byte, rows padded to whole bytes) and saved as a ``.npy`` file. :class:`PackedMask`
reads it through a memory map and unpacks only what an index asks for: a crop of rows and
columns touches the bytes of those rows that hold those columns, nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: Voxels per stored byte.
BITS_PER_BYTE = 8


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Pack a boolean volume ``(index, row, col)`` into uint8 ``(index, row, ceil(col / 8))``."""
    return np.packbits(np.asarray(mask, dtype=bool), axis=-1)


def packed_bytes(shape_irc: tuple[int, int, int]) -> int:
    """Bytes of the packed bits of a volume of this shape (without the ``.npy`` header)."""
    n_index, n_rows, n_cols = shape_irc
    return n_index * n_rows * -(-n_cols // BITS_PER_BYTE)


def _is_basic(part: Any) -> bool:
    return isinstance(part, (int, np.integer, slice))


class PackedMask:
    """A read-only boolean volume ``(index, row, col)`` kept packed as bits along ``col``.

    Indexing returns a new bool array with numpy's semantics; integers and slices on every
    axis unpack only the bytes they cover (other indices unpack the whole volume first).
    ``np.asarray(mask)`` unpacks everything.

    Args:
        bits: uint8 ``(index, row, ceil(col / 8))`` from :func:`pack_mask` (e.g. a memory map).
        n_cols: columns of the unpacked volume.
    """

    def __init__(self, bits: np.ndarray, n_cols: int) -> None:
        if bits.ndim != 3 or bits.dtype != np.uint8:
            raise ValueError(
                f"packed bits must be uint8 (index, row, bytes); got {bits.dtype} {bits.shape}"
            )
        if not (bits.shape[2] - 1) * BITS_PER_BYTE < n_cols <= bits.shape[2] * BITS_PER_BYTE:
            raise ValueError(f"{n_cols} columns do not fit {bits.shape[2]} bytes per row")
        self.bits = bits
        self.shape: tuple[int, int, int] = (int(bits.shape[0]), int(bits.shape[1]), int(n_cols))
        self.dtype = np.dtype(bool)
        self.ndim = 3

    @classmethod
    def load(cls, path: str | os.PathLike[str], n_cols: int) -> PackedMask:
        """Memory-map a ``.npy`` file of packed bits, read-only."""
        return cls(np.load(Path(path), mmap_mode="r"), n_cols)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"PackedMask(shape={self.shape})"

    def unpack(self) -> np.ndarray:
        """The whole volume as bool ``(index, row, col)``."""
        return np.unpackbits(self.bits, axis=-1, count=self.shape[2]).view(bool)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self.unpack()
        return full if dtype is None else full.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        parts = key if isinstance(key, tuple) else (key,)
        if len(parts) > 3 or any(p is Ellipsis or p is None for p in parts):
            return self.unpack()[key]
        parts = parts + (slice(None),) * (3 - len(parts))
        if not all(_is_basic(p) for p in parts):
            return self.unpack()[key]
        index, rows, cols = parts
        n_cols = self.shape[2]
        if isinstance(cols, slice):
            start, stop, step = cols.indices(n_cols)
            if step < 0:
                return self.unpack()[key]
            if stop <= start:
                return np.zeros(self.bits[index, rows, :0].shape, dtype=bool)
            first, last = start // BITS_PER_BYTE, -(-stop // BITS_PER_BYTE)
            chunk = np.unpackbits(self.bits[index, rows, first:last], axis=-1)
            offset = first * BITS_PER_BYTE
            return chunk[..., start - offset : stop - offset : step].view(bool)
        col = int(cols)
        if not -n_cols <= col < n_cols:
            raise IndexError(f"column {col} is out of bounds for a mask of {n_cols} columns")
        col %= n_cols
        byte = np.asarray(self.bits[index, rows, col // BITS_PER_BYTE])
        shift = BITS_PER_BYTE - 1 - col % BITS_PER_BYTE
        return ((byte >> shift) & 1).astype(bool)
