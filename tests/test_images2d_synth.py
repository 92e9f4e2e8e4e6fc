"""Synthetic dermoscopy-like images: deterministic, lesions where the masks say, written in a
layout the folder reader pairs back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from src_train.errors import CancelledError, OutputExistsError
from src_train.images2d.dataset import load_image_set
from src_train.images2d.imageio import read_mask, read_rgb
from src_train.images2d.synth import (
    MARKER_FILE,
    SynthImageConfig,
    generate_image,
    write_image_set,
)

TINY = SynthImageConfig.tiny()


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_same_seed_same_image_other_index_other_image() -> None:
    a, b, c = generate_image(5, 0, TINY), generate_image(5, 0, TINY), generate_image(5, 1, TINY)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.mask, b.mask)
    assert a.rgb.shape != c.rgb.shape or not np.array_equal(a.rgb, c.rgb)


@pytest.mark.parametrize("index", range(6))
def test_lesion_is_darker_than_the_skin_around_it(index: int) -> None:
    image = generate_image(0, index, SynthImageConfig(rows=96, cols=128, hairs=(0, 0)))
    mask = image.mask
    assert image.rgb.dtype == np.uint8 and image.rgb.shape[:2] == mask.shape
    assert 0.02 < mask.mean() < 0.7, "one lesion, neither a speck nor the whole image"
    # a ring of skin just outside the lesion (the vignetting darkens far corners)
    ring = ndimage.binary_dilation(mask, iterations=12) & ~ndimage.binary_dilation(
        mask, iterations=4
    )
    luma = _luma(image.rgb)
    assert luma[mask].mean() < luma[ring].mean() - 10


def test_hairs_darken_pixels_outside_the_mask_too() -> None:
    bald = generate_image(1, 0, SynthImageConfig(rows=96, cols=128, hairs=(0, 0)))
    hairy = generate_image(1, 0, SynthImageConfig(rows=96, cols=128, hairs=(12, 12)))
    assert np.array_equal(bald.mask, hairy.mask), "hairs never change the truth"
    darker = _luma(hairy.rgb) < _luma(bald.rgb) - 40
    assert (darker & ~hairy.mask).sum() > 20


@pytest.mark.parametrize("layout", ["ph2", "flat"])
def test_written_set_reads_back_exactly(tmp_path: Path, layout: str) -> None:
    seen: list[int] = []
    paired = write_image_set(
        tmp_path / "set",
        4,
        seed=2,
        config=TINY,
        layout=layout,
        progress=lambda d, t, m: seen.append(d),
    )
    assert seen == [1, 2, 3, 4]
    assert paired.layout == ("ph2" if layout == "ph2" else "names")
    assert paired.keys == ("SYN001", "SYN002", "SYN003", "SYN004")
    for i, pair in enumerate(paired.pairs):
        expected = generate_image(2, i, TINY)
        assert np.array_equal(read_rgb(pair.image).rgb, expected.rgb), "lossless formats"
        assert np.array_equal(read_mask(pair.mask).mask, expected.mask)
    marker = json.loads((tmp_path / "set" / MARKER_FILE).read_text())
    assert marker["complete"] and marker["seed"] == 2 and marker["n_images"] == 4
    data = load_image_set(tmp_path / "set", size=32)
    assert data.images.shape == (4, 32, 32, 3) and data.masks.any(axis=(1, 2)).all()


def test_overwrite_rules(tmp_path: Path) -> None:
    out = tmp_path / "set"
    write_image_set(out, 2, config=TINY)
    with pytest.raises(OutputExistsError, match="not empty"):
        write_image_set(out, 2, config=TINY)
    write_image_set(out, 3, config=TINY, layout="flat", overwrite=True)
    assert not (out / "SYN001").exists() and (out / "images" / "SYN003.png").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="did not write"):
        write_image_set(foreign, 2, config=TINY, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_stop_request_between_images(tmp_path: Path) -> None:
    calls = iter([False, False, True])
    with pytest.raises(CancelledError, match="after 2 image"):
        write_image_set(tmp_path / "s", 5, config=TINY, should_stop=lambda: next(calls))
