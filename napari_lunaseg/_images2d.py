"""2-D image sets in the viewer: read a folder as layers, run a 2-D checkpoint on it, train one.

- Reader: a folder that :func:`~src_train.images2d.folder.find_pairs` pairs (PH2 layout, or
  images and masks paired by name) opens as an RGB image stack ``(image, row, col, 3)`` and a
  labels layer of its masks ``(image, row, col)``, every image resized to
  :data:`~src_train.images2d.dataset.DEFAULT_SIZE` pixels square as the models see them. The
  slider steps through the images. Layer metadata: role ``"imageset"`` / ``"imageset_mask"``,
  the image names (``keys``) and the folder, which plays the part a series UID plays for CT
  layers (layers of one set share it).
- Inference: when the Inference widget's chosen layer is such a stack, its Run starts
  a worker from :func:`image_set_worker` (over :func:`image_set_job`, which needs a
  2-D checkpoint: 3 input channels); results are a probability image, a prediction labels
  layer and, where the set's masks are open, the TP/FN/FP error layer in the colour code of
  CT, with the mean per-image IoU, Dice, precision and recall.
- Training: for an image-set data folder the Training widget's child process is ``lunaseg
  compare DATA --models M --losses L ...`` (:func:`image_set_command`) instead of ``lunaseg
  train``.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

from napari_lunaseg._layers import (
    MASK_RGBA,
    META_KEY,
    PRED_RGBA,
    PROBABILITY_COLORMAP,
    ROLE_ERROR,
    ROLE_PRED,
    ROLE_PROB,
    LayerDataTuple,
    error_colormap,
    layer_info,
    single_label_colormap,
)
from napari_lunaseg._viewer_utils import find_layer, upsert_layer
from src_train.errors import LunaSegError
from src_train.images2d.checkpoint_run import ImageSetPrediction, iter_image_set_prediction
from src_train.images2d.dataset import DEFAULT_SIZE, load_image_set
from src_train.images2d.folder import looks_like_image_set
from src_train.images2d.metrics import score_images
from src_train.images2d.options import CompareOptions
from src_train.infer import InferenceProgress
from src_train.metrics import error_volume
from src_train.options import option_args

log = logging.getLogger(__name__)

#: Layer roles of an opened image set.
ROLE_IMAGESET = "imageset"
ROLE_IMAGESET_MASK = "imageset_mask"

#: Opacity of the mask, prediction and error layers over the images.
OVERLAY_OPACITY = 0.5

#: Axis names of the image-set layers (the slider is the image's index in the set).
AXIS_LABELS = ("image", "row", "col")


def _meta(role: str, set_id: str, keys: list[str], **extra: Any) -> dict[str, Any]:
    """Layer metadata of an image-set layer (``set_id``, the folder, in ``series_uid``)."""
    return {META_KEY: {"role": role, "series_uid": set_id, "keys": keys, **extra}}


# -- reader ------------------------------------------------------------------------------------
def image_set_reader(path: Path) -> Any:
    """:func:`read_image_set` when ``path`` is a folder of paired images and masks, else None."""
    return read_image_set if looks_like_image_set(path) else None


def read_image_set(path: str | list[str]) -> list[LayerDataTuple] | list[tuple[None]]:
    """The images of a folder as an RGB stack and its masks as labels (see the module
    docstring); a folder that cannot be read is a notification and no layer."""
    folder = Path(path[0] if isinstance(path, list) else path)
    try:
        data = load_image_set(folder, DEFAULT_SIZE)
    except (LunaSegError, OSError) as exc:
        log.info("cannot open %s: %s", folder, exc)
        show_error(f"LunaSeg cannot open {folder.name}: {exc}")
        return [(None,)]
    set_id = str(data.source.root)
    keys = list(data.keys)
    name = data.source.root.name
    extra = {"layout": data.source.layout, "size": DEFAULT_SIZE}
    return [
        (
            data.images,
            {
                "name": f"{name} images",
                "rgb": True,
                "axis_labels": AXIS_LABELS,
                "metadata": _meta(ROLE_IMAGESET, set_id, keys, **extra),
            },
            "image",
        ),
        (
            data.masks.view(np.uint8),
            {
                "name": f"{name} masks",
                "axis_labels": AXIS_LABELS,
                "colormap": single_label_colormap(MASK_RGBA),
                "opacity": OVERLAY_OPACITY,
                "metadata": _meta(ROLE_IMAGESET_MASK, set_id, keys, **extra),
            },
            "labels",
        ),
    ]


def is_image_set_layer(layer: Any) -> bool:
    """True for the RGB stack :func:`read_image_set` made."""
    return isinstance(layer, Image) and layer_info(layer).get("role") == ROLE_IMAGESET


def image_set_layers(viewer: Any) -> list[Image]:
    """The image-set stacks open in ``viewer``."""
    return [layer for layer in viewer.layers if is_image_set_layer(layer)]


# -- inference ---------------------------------------------------------------------------------
def image_set_job(
    images: np.ndarray, checkpoint: Path, device: str, threshold: float
) -> Generator[InferenceProgress, None, ImageSetPrediction]:
    """The core's 2-D run (:func:`~src_train.images2d.checkpoint_run.iter_image_set_prediction`)
    over uint8 RGB images ``(N, row, col, 3)`` in the worker thread, as progress steps."""
    n = len(images)
    yield InferenceProgress(0, n, f"loading {checkpoint.name}")
    steps = iter_image_set_prediction(images, checkpoint, device, threshold)
    while True:
        try:
            done = next(steps)
        except StopIteration as end:
            return end.value
        yield InferenceProgress(done, n, f"{done}/{n} images")


def image_set_worker(layer: Image, checkpoint: Path, device: str, threshold: float) -> Any:
    """A napari worker (not started) running :func:`image_set_job` on ``layer``'s images; it
    yields :class:`InferenceProgress` and returns an :class:`ImageSetPrediction`."""
    return create_worker(
        image_set_job,
        np.asarray(layer.data),
        checkpoint,
        device,
        threshold,
        _ignore_errors=True,
        _start_thread=False,
    )


def show_image_set_prediction(
    viewer: Any, info: dict[str, Any], result: ImageSetPrediction
) -> tuple[dict[str, float], str, str]:
    """Add (or update) the probability, prediction and error layers of an image set; returns
    the mean per-image scores against the set's masks (empty when they are not open), a
    result line and a line of scores."""
    scores = _show_layers(viewer, info, result)
    n = len(result.mask)
    status = f"done in {result.seconds:.1f} s: {n} images"
    if not scores:
        return scores, status, "masks not open: no scores"
    labels = {"iou": "IoU", "dice": "Dice", "precision": "precision", "recall": "recall"}
    text = ", ".join(f"{label} {scores[key]:.3f}" for key, label in labels.items())
    return scores, status, f"mean over {n} images: {text}"


def _show_layers(viewer: Any, info: dict[str, Any], result: ImageSetPrediction) -> dict[str, float]:
    set_id, keys = str(info.get("series_uid", "")), list(info.get("keys") or [])
    name = Path(set_id).name
    upsert_layer(
        viewer,
        (
            result.prob,
            {
                "name": f"{name} probability",
                "axis_labels": AXIS_LABELS,
                "colormap": PROBABILITY_COLORMAP,
                "contrast_limits": [0.0, 1.0],
                "blending": "additive",
                "opacity": OVERLAY_OPACITY,
                "metadata": _meta(ROLE_PROB, set_id, keys),
            },
            "image",
        ),
    )
    upsert_layer(
        viewer,
        (
            np.ascontiguousarray(result.mask).view(np.uint8),
            {
                "name": f"{name} prediction",
                "axis_labels": AXIS_LABELS,
                "colormap": single_label_colormap(PRED_RGBA),
                "opacity": OVERLAY_OPACITY,
                "metadata": _meta(ROLE_PRED, set_id, keys),
            },
            "labels",
        ),
    )
    masks = find_layer(viewer, ROLE_IMAGESET_MASK, set_id)
    if masks is None or tuple(masks.data.shape) != result.mask.shape:
        return {}
    truth = np.asarray(masks.data).astype(bool)
    errors = upsert_layer(
        viewer,
        (
            error_volume(result.mask, truth),
            {
                "name": f"{name} errors",
                "axis_labels": AXIS_LABELS,
                "colormap": error_colormap(),
                "metadata": _meta(ROLE_ERROR, set_id, keys),
            },
            "labels",
        ),
    )
    errors.colormap = error_colormap()
    return score_images(result.mask, truth).mean()


# -- training ----------------------------------------------------------------------------------
def image_set_command(widget: Any, *, resume: bool = False) -> list[str]:
    """The Training widget's child-process arguments for an image-set data folder:
    ``lunaseg compare`` of its model and loss into its run folder (``OUT``)."""
    augment = [name for name, box in widget.augment.items() if box.value]
    values: dict[str, Any] = {
        "out": str(widget.run_dir.value),
        "models": (str(widget.model.value),),
        "losses": (str(widget.loss.value),),
        "epochs": int(widget.epochs.value),
        "batch_size": int(widget.batch_size.value),
        "augment": ",".join(augment) if augment else "none",
        "device": str(widget.device.value),
        "resume": resume,
        "overwrite": bool(widget.overwrite.value) and not resume,
    }
    # the flags come from CompareOptions' option metadata, as the CLI's parser does
    compare = ["-m", "src_train.cli", "compare", str(widget.data_dir.value)]
    return [*compare, *option_args(CompareOptions, values), "--progress-json"]
