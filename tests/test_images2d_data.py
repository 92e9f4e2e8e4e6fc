"""2-D image folders: reading any image mode, pairing (PH2 layout, suffixes, mask folders),
bad input with one-line messages, resizing that keeps masks binary, the seeded split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src_train.errors import ImageSetError
from src_train.images2d.dataset import SplitConfig, load_image_set, split_keys
from src_train.images2d.folder import find_pairs, looks_like_image_set
from src_train.images2d.imageio import read_mask, read_rgb, resize_mask, resize_rgb


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def _disk(rows: int, cols: int, radius: float) -> np.ndarray:
    rr, cc = np.mgrid[0:rows, 0:cols]
    return np.hypot(rr - rows / 2 + 0.5, cc - cols / 2 + 0.5) < radius


# -- reading -----------------------------------------------------------------------------------
def test_images_of_any_mode_become_uint8_rgb(tmp_path: Path) -> None:
    grey = _save(tmp_path / "grey.png", np.full((5, 7), 77, np.uint8))
    rgba = _save(tmp_path / "rgba.png", np.tile(np.uint8([10, 20, 30, 0]), (5, 7, 1)))
    deep = _save(tmp_path / "deep.png", np.array([[0, 25700, 65535]], np.uint16))
    palette = tmp_path / "palette.png"
    Image.fromarray(np.full((5, 7, 3), (200, 100, 50), np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    ).save(palette)
    got = {p.stem: read_rgb(p) for p in (grey, rgba, deep, palette)}
    for read in got.values():
        assert read.rgb.dtype == np.uint8 and read.rgb.ndim == 3 and read.rgb.shape[2] == 3
    assert (got["grey"].rgb == 77).all() and got["grey"].converted == "greyscale"
    assert (got["rgba"].rgb == [10, 20, 30]).all() and "alpha" in got["rgba"].converted
    assert got["deep"].rgb[0, :, 0].tolist() == [0, 100, 255]
    assert tuple(got["palette"].rgb[2, 3]) == (200, 100, 50)
    assert read_rgb(_save(tmp_path / "rgb.bmp", np.zeros((4, 4, 3), np.uint8))).converted == ""


@pytest.mark.parametrize("on_value", [1, 128, 255])
def test_two_valued_masks_are_binary(tmp_path: Path, on_value: int) -> None:
    truth = _disk(20, 24, 6)
    read = read_mask(_save(tmp_path / "m.png", truth.astype(np.uint8) * on_value))
    assert read.binary and np.array_equal(read.mask, truth)


def test_non_binary_mask_is_thresholded_at_half_its_maximum(tmp_path: Path) -> None:
    values = np.array([[0, 3, 120, 130, 250, 255]], np.uint8)
    read = read_mask(_save(tmp_path / "jpeg_like.png", values))
    assert not read.binary
    assert read.mask.tolist() == [[False, False, False, True, True, True]]


def test_colour_mask_counts_its_brightest_channel(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1:3, 1:3] = (255, 0, 0)
    read = read_mask(_save(tmp_path / "red.png", rgb))
    assert read.binary and read.mask.sum() == 4 and read.mask[1, 1]


def test_unreadable_and_multi_frame_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageSetError, match=r"broken\.png"):
        read_rgb(bad)
    stack = tmp_path / "stack.tif"
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 50, 100)]
    frames[0].save(stack, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageSetError, match="3 frames"):
        read_rgb(stack)


# -- resizing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (300, 220), (37, 90)])
def test_resized_masks_stay_binary_and_keep_their_shape(size: tuple[int, int]) -> None:
    mask = _disk(200, 160, 50)
    out = resize_mask(mask, size)
    assert out.dtype == np.bool_ and out.shape == size
    scale = np.array(size) / np.array(mask.shape)
    expected_area = mask.sum() * scale.prod()
    assert out.sum() == pytest.approx(expected_area, rel=0.04)
    # the same ellipse drawn directly at the new size
    rr, cc = np.mgrid[0 : size[0], 0 : size[1]]
    ellipse = np.hypot((rr + 0.5) / scale[0] - 100, (cc + 0.5) / scale[1] - 80) < 50
    iou = (out & ellipse).sum() / (out | ellipse).sum()
    assert iou > 0.93


def test_resized_image_keeps_colours() -> None:
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[:, :40] = (200, 30, 10)
    rgb[:, 40:] = (10, 90, 250)
    out = resize_rgb(rgb, (32, 32))
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert tuple(out[16, 2]) == (200, 30, 10) and tuple(out[16, 29]) == (10, 90, 250)
    assert np.array_equal(resize_rgb(rgb, (60, 80)), rgb)


# -- pairing -----------------------------------------------------------------------------------
def _ph2(root: Path, keys: list[str]) -> None:
    for key in keys:
        _save(root / key / f"{key}_Dermoscopic_Image" / f"{key}.bmp", np.zeros((6, 8, 3), np.uint8))
        _save(root / key / f"{key}_lesion" / f"{key}_lesion.bmp", np.full((6, 8), 255, np.uint8))
        _save(root / key / f"{key}_roi" / f"{key}_R1_Label4.bmp", np.zeros((6, 8), np.uint8))


def test_ph2_layout_is_recognised(tmp_path: Path) -> None:
    root = tmp_path / "PH2Dataset" / "PH2 Dataset images"
    _ph2(root, ["IMD002", "IMD003", "IMD004"])
    (tmp_path / "PH2Dataset" / "PH2_dataset.txt").write_text("clinical diagnosis\n")
    paired = find_pairs(tmp_path / "PH2Dataset")
    assert paired.layout == "ph2"
    assert paired.keys == ("IMD002", "IMD003", "IMD004")
    pair = paired.pairs[0]
    assert pair.image.name == "IMD002.bmp" and pair.mask.name == "IMD002_lesion.bmp"
    assert paired.unmatched_images == () and paired.unmatched_masks == (), "ROI files ignored"


def test_pairing_by_suffix_and_mask_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    img, msk = np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.uint8)
    _save(tmp_path / "images" / "a.png", img)
    _save(tmp_path / "masks" / "a.png", msk)
    _save(tmp_path / "b.jpg", img)
    _save(tmp_path / "b_mask.png", msk)
    _save(tmp_path / "ISIC_0001.JPG", img)
    _save(tmp_path / "ISIC_0001_Segmentation.png", msk)
    _save(tmp_path / "lonely.png", img)
    _save(tmp_path / "orphan_lesion.bmp", msk)
    _save(tmp_path / ".hidden" / "x.png", img)
    with caplog.at_level(logging.WARNING):
        paired = find_pairs(tmp_path)
    assert paired.layout == "names"
    assert paired.keys == ("a", "b", "ISIC_0001")
    assert paired.pairs[0].mask == tmp_path.resolve() / "masks" / "a.png"
    assert [p.name for p in paired.unmatched_images] == ["lonely.png"]
    assert [p.name for p in paired.unmatched_masks] == ["orphan_lesion.bmp"]
    assert "lonely.png" in caplog.text and "orphan_lesion.bmp" in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "holds no images"),
        (lambda root: (root / "x.txt").write_text("x"), "holds no images"),
        (
            lambda root: [
                (root / "subset0").mkdir(),
                (root / "subset0" / "1.2.3.mhd").write_text("NDims = 3\n"),
                (root / "subset0" / "1.2.3.raw").write_bytes(b"\0"),
            ],
            "holds CT series",
        ),
        (  # every ending a CT series is read from counts, NRRD's detached header included
            lambda root: (root / "chest.nhdr").write_text("NRRD0004\n"),
            "holds CT series",
        ),
        (
            lambda root: _save(root / "a.png", np.zeros((4, 4, 3), np.uint8)),
            "but no masks",
        ),
        (
            lambda root: [
                _save(root / "a.png", np.zeros((4, 4, 3), np.uint8)),
                _save(root / "b_mask.png", np.zeros((4, 4), np.uint8)),
            ],
            "none of the 1 images has a mask",
        ),
        (
            lambda root: [
                _save(root / "a.png", np.zeros((4, 4, 3), np.uint8)),
                _save(root / "x" / "a.jpg", np.zeros((4, 4, 3), np.uint8)),
                _save(root / "a_mask.png", np.zeros((4, 4), np.uint8)),
            ],
            "more than once",
        ),
    ],
    ids=["empty", "no-images", "ct", "ct-nhdr", "no-masks", "no-pairs", "duplicates"],
)
def test_bad_folders_raise_one_line_messages(tmp_path: Path, make, message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    with pytest.raises(ImageSetError, match=message) as info:
        find_pairs(root)
    assert "\n" not in str(info.value) and str(root.resolve()) in str(info.value)
    assert not looks_like_image_set(root)


def test_an_image_set_is_told_from_other_folders(tmp_path: Path) -> None:
    _ph2(tmp_path / "PH2", ["IMD002"])
    assert looks_like_image_set(tmp_path / "PH2")
    assert not looks_like_image_set(tmp_path / "nowhere")
    assert not looks_like_image_set(tmp_path / "PH2" / "IMD002" / "IMD002_lesion" / "x.bmp")


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ImageSetError, match="does not exist"):
        find_pairs(tmp_path / "nowhere")


# -- loading -----------------------------------------------------------------------------------
def test_load_converts_resizes_and_names_non_binary_masks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _save(tmp_path / "images" / "big.png", np.full((120, 90, 3), 180, np.uint8))
    _save(tmp_path / "masks" / "big.png", _disk(120, 90, 30).astype(np.uint8) * 255)
    _save(tmp_path / "images" / "grey.png", np.full((40, 50), 90, np.uint8))
    _save(tmp_path / "masks" / "grey.png", _disk(40, 50, 12).astype(np.uint8))
    _save(tmp_path / "images" / "rgba.png", np.full((64, 64, 4), 60, np.uint8))
    soft = np.where(_disk(64, 64, 20), 250, 4).astype(np.uint8)
    soft[0, 0] = 128
    _save(tmp_path / "masks" / "rgba.png", soft)
    with caplog.at_level(logging.WARNING):
        data = load_image_set(tmp_path, size=32)
    assert data.keys == ("big", "grey", "rgba")
    assert data.images.shape == (3, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (3, 32, 32) and data.masks.dtype == np.bool_
    assert (data.images[1] == 90).all()
    assert data.original_sizes.tolist() == [[120, 90], [40, 50], [64, 64]]
    assert data.notes["mask not binary, thresholded"] == ["rgba.png"]
    assert "rgba.png" in caplog.text and "not binary" in caplog.text
    # the disk's area fraction survives the resize
    fractions = data.masks.mean(axis=(1, 2))
    expected = [_disk(120, 90, 30).mean(), _disk(40, 50, 12).mean(), _disk(64, 64, 20).mean()]
    assert fractions == pytest.approx(expected, abs=0.03)


# -- split -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "counts"), [(200, (100, 50, 50)), (60, (30, 15, 15)), (7, (3, 2, 2)), (3, (1, 1, 1))]
)
def test_default_split_scales_to_the_set(n: int, counts: tuple[int, int, int]) -> None:
    assert SplitConfig().counts(n) == counts


def test_split_is_seeded_disjoint_and_order_free() -> None:
    keys = [f"k{i:02d}" for i in range(40)]
    a = split_keys(keys, SplitConfig(seed=3))
    b = split_keys(list(reversed(keys)), SplitConfig(seed=3))
    c = split_keys(keys, SplitConfig(seed=4))
    assert a == b and a != c
    assert (len(a.train), len(a.val), len(a.test)) == (20, 10, 10)
    assert sorted(a.train + a.val + a.test) == keys
    assert type(a).from_dict(a.to_dict()) == a


def test_too_small_a_set_cannot_split() -> None:
    with pytest.raises(ImageSetError, match="at least 3"):
        split_keys(["a", "b"])


def test_a_mask_of_another_size_than_its_image_is_refused_unless_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24 item 10: such a mask was resized and used with only a warning."""
    from src_train.cli import main

    _save(tmp_path / "images" / "a.png", np.full((40, 60, 3), 120, np.uint8))
    _save(tmp_path / "masks" / "a.png", _disk(40, 60, 10).astype(np.uint8) * 255)
    _save(tmp_path / "images" / "b.png", np.full((40, 60, 3), 120, np.uint8))
    _save(tmp_path / "masks" / "b.png", _disk(20, 30, 5).astype(np.uint8) * 255)
    with pytest.raises(ImageSetError) as refused:
        load_image_set(tmp_path, size=32)
    message = str(refused.value)
    assert "b.png is 30 x 20 pixels" in message and "is 60 x 40" in message
    assert str(tmp_path / "masks" / "b.png") in message
    assert str(tmp_path / "images" / "b.png") in message and "--resize-masks" in message
    with caplog.at_level(logging.WARNING):
        data = load_image_set(tmp_path, size=32, resize_masks=True)
    assert data.notes["mask size differs from image"] == ["b.png"] and "b.png" in caplog.text
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "out"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.png is 30 x 20 pixels" in err
