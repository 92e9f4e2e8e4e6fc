"""A paired image folder loaded into arrays at one size, and its seeded train/val/test split.

:func:`load_image_set` reads every pair that :func:`~src_train.images2d.folder.find_pairs`
found, converts images to uint8 RGB and masks to bool, and resizes both to ``size x size``
(the usual study squeezes PH2's 768x560 to 256x256; the aspect ratio is not kept). What was
converted (greyscale, alpha, non-binary masks, sizes) is logged with the file names and kept
in :attr:`ImageSet.notes` for reports.

:func:`split_keys` draws the train/validation/test split from a seed: the default 100/50/50
is scaled to the set's size (a 60-image set splits 30/15/15).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from src_train.errors import ImageSetError
from src_train.images2d.folder import PairedFolder, find_pairs, name_list
from src_train.images2d.imageio import read_mask, read_rgb, resize_mask, resize_rgb

log = logging.getLogger(__name__)

#: Default side of the square images the models see, pixels.
DEFAULT_SIZE = 256

#: ``progress(done, total)`` while loading.
LoadProgress = Callable[[int, int], None]


@dataclass
class ImageSet:
    """Images and masks of one folder at one size.

    Attributes:
        keys: image names (without extension), in order.
        images: uint8 ``(N, row, col, 3)`` RGB.
        masks: bool ``(N, row, col)``.
        source: the pairing it was loaded from.
        original_sizes: ``(N, 2)`` rows, cols of each image file before resizing.
        notes: what was converted, ``{note: [file, ...]}`` (e.g. ``"mask not binary"``).
    """

    keys: tuple[str, ...]
    images: np.ndarray
    masks: np.ndarray
    source: PairedFolder
    original_sizes: np.ndarray
    notes: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def indices(self, keys: tuple[str, ...] | list[str]) -> np.ndarray:
        """Positions of ``keys`` in this set; an unknown key raises :class:`ImageSetError`."""
        position = {key: i for i, key in enumerate(self.keys)}
        missing = [key for key in keys if key not in position]
        if missing:
            raise ImageSetError(
                f"{self.source.root}: image(s) {name_list(missing)} of the split are no longer "
                "in the folder. Restore them, or start the comparison over (--overwrite)."
            )
        return np.asarray([position[key] for key in keys], dtype=np.int64)


def load_image_set(
    folder: str | os.PathLike[str] | PairedFolder,
    size: int = DEFAULT_SIZE,
    progress: LoadProgress | None = None,
    *,
    resize_masks: bool = False,
) -> ImageSet:
    """Read, convert and resize every image/mask pair of ``folder`` to ``size x size``.

    ``folder`` may be a path (paired by :func:`find_pairs`) or a :class:`PairedFolder`.
    Non-binary masks are thresholded and named in a warning; greyscale/RGBA images are
    converted; every image is resized (bilinear, antialiased) and every mask resized and
    thresholded so it stays binary. A mask whose size differs from its image's is refused
    (:class:`ImageSetError` naming both sizes and files: masks are labels, and a mask of
    another size may not cover the same field of view) unless ``resize_masks``; then it is
    resized with the image and named in a warning.
    """
    if size < 1:
        raise ImageSetError(f"Image size must be a positive number of pixels; got {size}.")
    paired = folder if isinstance(folder, PairedFolder) else find_pairs(folder)
    n = len(paired.pairs)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    original = np.empty((n, 2), dtype=np.int64)
    notes: dict[str, list[str]] = {}
    for i, pair in enumerate(paired.pairs):
        read = read_rgb(pair.image)
        mask = read_mask(pair.mask)
        if read.converted:
            notes.setdefault(f"image converted ({read.converted})", []).append(pair.image.name)
        if not mask.binary:
            notes.setdefault("mask not binary, thresholded", []).append(pair.mask.name)
        if mask.mask.shape != read.rgb.shape[:2]:
            if not resize_masks:
                (mr, mc), (ir, ic) = mask.mask.shape, read.rgb.shape[:2]
                raise ImageSetError(
                    f"{pair.mask} is {mc} x {mr} pixels but its image {pair.image} is "
                    f"{ic} x {ir}: a mask is a label map and is not resized to fit. Fix the "
                    "pair, or pass --resize-masks if they cover the same field of view."
                )
            notes.setdefault("mask size differs from image", []).append(pair.mask.name)
        if read.rgb.shape[:2] != (size, size):
            notes.setdefault("resized", []).append(pair.image.name)
        original[i] = read.rgb.shape[:2]
        images[i] = resize_rgb(read.rgb, (size, size))
        masks[i] = resize_mask(mask.mask, (size, size))
        if progress is not None:
            progress(i + 1, n)
    for note, names in notes.items():
        level = logging.INFO if note == "resized" or note.startswith("image") else logging.WARNING
        log.log(level, "%s: %d file(s) %s: %s", paired.root, len(names), note, name_list(names))
    keys = tuple(pair.key for pair in paired.pairs)
    return ImageSet(keys, images, masks, paired, original, notes)


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation/test counts for a set of ``train + val + test`` images, scaled to the
    set's size, and the seed of the draw.

    Attributes:
        train, val, test: counts of the reference study (100/50/50 of PH2's 200 images).
        seed: seed of the random draw (the same seed and keys give the same split).
    """

    train: int = 100
    val: int = 50
    test: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.train, self.val, self.test) < 1:
            raise ImageSetError(
                f"Split counts must be at least 1 each; got train {self.train}, val {self.val}, "
                f"test {self.test}."
            )

    def counts(self, n: int) -> tuple[int, int, int]:
        """``(train, val, test)`` for ``n`` images: the ratio kept, each part at least 1."""
        if n < 3:
            raise ImageSetError(
                f"An image set needs at least 3 pairs (train, validation, test); got {n}."
            )
        total = self.train + self.val + self.test
        val = max(1, round(n * self.val / total))
        test = max(1, round(n * self.test / total))
        while n - val - test < 1:  # tiny sets: give training the last image
            if val >= test:
                val -= 1
            else:
                test -= 1
        return n - val - test, val, test


@dataclass(frozen=True)
class Split:
    """Keys of the train, validation and test images (a run keeps its split)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                tuple(data["train"]), tuple(data["val"]), tuple(data["test"]), int(data["seed"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ImageSetError(f"A saved split is damaged ({exc}).") from exc


def split_keys(keys: tuple[str, ...] | list[str], config: SplitConfig | None = None) -> Split:
    """Seeded random split of ``keys`` into train/val/test (counts: :meth:`SplitConfig.counts`).

    The draw permutes the sorted keys, so it does not depend on the order they came in.
    """
    cfg = config or SplitConfig()
    ordered = sorted(keys)
    n_train, n_val, _ = cfg.counts(len(ordered))
    order = np.random.default_rng(cfg.seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in order]
    return Split(
        train=tuple(shuffled[:n_train]),
        val=tuple(shuffled[n_train : n_train + n_val]),
        test=tuple(shuffled[n_train + n_val :]),
        seed=cfg.seed,
    )
