"""Find the images and masks of a 2-D image folder and pair them by file name.

Two layouts are recognised:

- ``"ph2"``: the PH2 dermoscopy set, ``<ID>/<ID>_Dermoscopic_Image/<ID>.bmp`` with the mask
  ``<ID>/<ID>_lesion/<ID>_lesion.bmp`` (anywhere below the folder). Other PH2 files (the
  ``<ID>_roi`` colour regions, the spreadsheet) are not images of the set and are ignored.
- ``"names"``: any tree of ``.bmp .png .jpg .jpeg .tif .tiff`` files. A file is a mask when its
  name ends with a mask suffix (``a_mask.png``, ``a_lesion.bmp``, ``ISIC_001_segmentation.png``,
  see :data:`MASK_SUFFIXES`) or when it lies in a mask folder (``masks/a.png``, see
  :data:`MASK_FOLDERS`); every other file is an image. An image and a mask pair when the
  image's name without extension equals the mask's without its suffix (case-insensitive).

Images without a mask and masks without an image are listed in the result (and logged), and
left out. An empty folder, a folder of CT series, or one with images but no masks raises
:class:`~src_train.errors.ImageSetError` with a one-line message.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from src_train.ct import CT_FILE_SUFFIXES
from src_train.errors import ImageSetError
from src_train.images2d.imageio import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: File-name endings (before the extension) that mark a mask; the rest of the name is the key.
MASK_SUFFIXES = (
    "_mask",
    "-mask",
    "_masks",
    "_lesion",
    "_segmentation",
    "_seg",
    "_label",
    "_labels",
    "_gt",
)

#: Folder names (any level below the root) whose image files are masks.
MASK_FOLDERS = frozenset(
    {
        "mask",
        "masks",
        "label",
        "labels",
        "lesion",
        "lesions",
        "segmentation",
        "segmentations",
        "annotation",
        "annotations",
        "gt",
        "ground_truth",
        "groundtruth",
        "ground-truth",
    }
)

#: PH2 folder-name endings of an image's dermoscopic picture and of its lesion mask.
PH2_IMAGE_FOLDER = "_Dermoscopic_Image"
PH2_MASK_FOLDER = "_lesion"

#: How many names an error or warning lists before "and N more".
NAMES_SHOWN = 5


@dataclass(frozen=True)
class ImagePair:
    """One image and its mask; ``key`` is the image's name without extension."""

    key: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class PairedFolder:
    """What :func:`find_pairs` found.

    Attributes:
        root: the folder searched.
        layout: ``"ph2"`` or ``"names"`` (see the module docstring).
        pairs: paired images, sorted by key.
        unmatched_images: images without a mask (left out).
        unmatched_masks: masks without an image (left out).
    """

    root: Path
    layout: str
    pairs: tuple[ImagePair, ...]
    unmatched_images: tuple[Path, ...] = ()
    unmatched_masks: tuple[Path, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Keys of the pairs, in order."""
        return tuple(p.key for p in self.pairs)


def name_list(paths: list[Path] | tuple[Path, ...] | list[str], root: Path | None = None) -> str:
    """``"a.png, b.png, c.png and 4 more"`` (paths relative to ``root`` when given)."""
    names = [
        str(Path(p).relative_to(root)) if root is not None and Path(p).is_absolute() else str(p)
        for p in paths
    ]
    shown = ", ".join(names[:NAMES_SHOWN])
    rest = len(names) - NAMES_SHOWN
    return shown + (f" and {rest} more" if rest > 0 else "")


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files below ``root`` whose lower-case name ends with one of ``suffixes`` (no hidden
    files or folders), sorted."""
    found = [
        path
        for path in root.rglob("*")
        if path.name.lower().endswith(suffixes) and path.is_file() and not _is_hidden(path, root)
    ]
    return sorted(found)


def _mask_key(path: Path, root: Path) -> str | None:
    """The key of ``path`` if it is a mask (by suffix or folder), else None."""
    stem = path.stem.lower()
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    folders = {part.lower() for part in path.relative_to(root).parts[:-1]}
    return stem if folders & MASK_FOLDERS else None


def _unique(entries: list[tuple[str, Path]], what: str, root: Path) -> dict[str, Path]:
    """``key -> path``; two files with one key raise :class:`ImageSetError` naming them."""
    by_key: dict[str, list[Path]] = {}
    for key, path in entries:
        by_key.setdefault(key, []).append(path)
    clashes = {key: paths for key, paths in by_key.items() if len(paths) > 1}
    if clashes:
        key, paths = next(iter(sorted(clashes.items())))
        raise ImageSetError(
            f"{root}: {len(clashes)} {what} name(s) occur more than once, e.g. "
            f"{name_list(paths, root)}; images and masks pair by name, so rename or remove "
            "the duplicates."
        )
    return {key: paths[0] for key, paths in by_key.items()}


def _ph2_entries(files: list[Path]) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """PH2 images and masks among ``files`` as ``(key, path)`` lists."""
    images, masks = [], []
    for path in files:
        parent = path.parent.name
        if parent == path.stem + PH2_IMAGE_FOLDER:
            images.append((path.stem, path))
        elif parent == path.stem and path.stem.endswith(PH2_MASK_FOLDER):
            masks.append((path.stem[: -len(PH2_MASK_FOLDER)], path))
    return images, masks


def _name_entries(
    files: list[Path], root: Path
) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Images and masks among ``files`` by the ``"names"`` rules, as ``(key, path)`` lists."""
    images, masks = [], []
    for path in files:
        key = _mask_key(path, root)
        if key is None:
            images.append((path.stem.lower(), path))
        else:
            masks.append((key, path))
    return images, masks


def _refuse_non_image_folder(root: Path) -> None:
    """Raise the right one-line :class:`ImageSetError` for a folder with no image files."""
    ct_files = _files(root, CT_FILE_SUFFIXES)  # a folder of these is not an image set
    if ct_files:
        raise ImageSetError(
            f"{root} holds CT series ({name_list(ct_files[:2], root)}...), not 2-D images. "
            "Point at a folder of images and masks (.png, .jpg, .bmp, .tif); a CT folder in "
            "LUNA16 layout goes to 'lunaseg train'."
        )
    raise ImageSetError(
        f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}). Point at the folder that holds "
        "the images and their masks."
    )


def find_pairs(folder: str | os.PathLike[str]) -> PairedFolder:
    """Find and pair the images and masks below ``folder`` (see the module docstring).

    Raises :class:`ImageSetError` when the folder is missing or empty, holds CT series instead
    of images, holds no masks, or when no image has a mask of its name.
    """
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ImageSetError(f"Image folder {folder} does not exist or is not a folder.")
    files = _files(root, IMAGE_SUFFIXES)
    if not files:
        _refuse_non_image_folder(root)
    image_entries, mask_entries = _ph2_entries(files)
    layout = "ph2"
    if not image_entries:
        image_entries, mask_entries = _name_entries(files, root)
        layout = "names"
    else:
        log.info("%s: PH2 layout (%d dermoscopic images)", root, len(image_entries))
    if not mask_entries:
        raise ImageSetError(
            f"{root}: found {len(image_entries)} images but no masks. Name each mask after its "
            "image with a suffix (a.png -> a_mask.png, a_lesion.bmp, a_segmentation.png) or put "
            "the masks in a folder called masks/ under the same names."
        )
    images = _unique(image_entries, "image", root)
    masks = _unique(mask_entries, "mask", root)
    keys = sorted(images.keys() & masks.keys())
    if not keys:
        raise ImageSetError(
            f"{root}: none of the {len(images)} images has a mask of the same name (images "
            f"{name_list(sorted(images.values())[:2], root)}; masks "
            f"{name_list(sorted(masks.values())[:2], root)}). Name a mask after its image."
        )
    lone_images = tuple(sorted(images[k] for k in images.keys() - masks.keys()))
    lone_masks = tuple(sorted(masks[k] for k in masks.keys() - images.keys()))
    if lone_images:
        log.warning(
            "%s: %d image(s) without a mask, left out: %s",
            root,
            len(lone_images),
            name_list(lone_images, root),
        )
    if lone_masks:
        log.warning(
            "%s: %d mask(s) without an image, left out: %s",
            root,
            len(lone_masks),
            name_list(lone_masks, root),
        )
    pairs = tuple(ImagePair(images[k].stem, images[k], masks[k]) for k in keys)
    return PairedFolder(root, layout, pairs, lone_images, lone_masks)


def looks_like_image_set(folder: str | os.PathLike[str]) -> bool:
    """True when :func:`find_pairs` pairs at least one image with its mask in ``folder``
    (for callers that choose between readers: a viewer, the Training widget)."""
    try:
        return Path(folder).is_dir() and bool(find_pairs(folder).pairs)
    except ImageSetError:
        return False
