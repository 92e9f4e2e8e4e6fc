"""GUI tests of 2-D image sets: File > Open of an image folder, the Inference widget running a
2-D checkpoint on it in the colour code, the Training widget starting a 2-D run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PLUGIN, dock
from conftest import layer_with_role as _role

from src_train.colors import ERROR_FP, ERROR_TP, FP_RGB, TP_RGB
from src_train.images2d.dataset import DEFAULT_SIZE, load_image_set
from src_train.images2d.synth import SynthImageConfig, write_image_set

pytestmark = pytest.mark.gui

JOB_TIMEOUT_MS = 180_000
#: Logit of the "everything is lesion" checkpoint: sigmoid(10) = 0.99995.
SURE_LOGIT = 10.0


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> Path:
    """Six small synthetic dermoscopy-like images with masks, in PH2 layout."""
    out = tmp_path_factory.mktemp("images2d") / "PH2Dataset"
    write_image_set(out, 6, seed=2, config=SynthImageConfig.tiny())
    return out


def _checkpoint(path: Path, in_channels: int, image_size: int, everything: bool) -> Path:
    """A small U-Net checkpoint; ``everything``: its head outputs +SURE_LOGIT everywhere."""
    import torch

    from src_train.model import ModelConfig, build_model, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(in_channels=in_channels, depth=2, filters=4)
    model = build_model(config)
    if everything:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.fill_(SURE_LOGIT)
    save_checkpoint(path, model, config, extra={"image_size": image_size})
    return path


def test_an_image_folder_opens_as_an_rgb_stack_with_its_masks(viewer, image_set: Path) -> None:
    viewer.open(str(image_set), plugin=PLUGIN)
    images, masks = _role(viewer, "imageset"), _role(viewer, "imageset_mask")
    assert images is not None and masks is not None
    expected = load_image_set(image_set, DEFAULT_SIZE)
    assert images.rgb and images.data.shape == (6, DEFAULT_SIZE, DEFAULT_SIZE, 3)
    np.testing.assert_array_equal(images.data, expected.images)
    np.testing.assert_array_equal(masks.data.astype(bool), expected.masks)
    assert set(np.unique(masks.data)) == {0, 1}
    assert (
        images.metadata["lunaseg"]["keys"]
        == list(expected.keys)
        == [f"SYN{i:03d}" for i in range(1, 7)]
    )
    viewer.dims.set_current_step(0, 3)  # the slider steps through the images
    assert viewer.dims.current_step[0] == 3 and viewer.dims.axis_labels[0] == "image"


def test_a_folder_that_is_no_image_set_is_left_to_other_readers(tmp_path: Path) -> None:
    from napari_lunaseg._reader import get_reader

    (tmp_path / "notes.txt").write_text("no images here")
    assert get_reader(str(tmp_path)) is None


def test_inference_on_an_image_set_shows_the_colour_code(
    viewer, qtbot, image_set: Path, tmp_path: Path
) -> None:
    """A checkpoint that calls every pixel lesion: its errors are TP inside the true lesion and
    FP outside it, and its IoU on each image is the lesion's share of the image."""
    viewer.open(str(image_set), plugin=PLUGIN)
    widget = dock(viewer, "Inference")
    stack = _role(viewer, "imageset")
    widget.image.value = stack  # the image-set stack is among the widget's choices
    widget.checkpoint.value = str(_checkpoint(tmp_path / "all.pt", 3, 32, everything=True))
    widget.device.value = "cpu"
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)

    pred, errors = _role(viewer, "prediction"), _role(viewer, "error")
    truth = _role(viewer, "imageset_mask").data.astype(bool)
    assert pred is not None and errors is not None, widget.status.text()
    assert pred.data.shape == truth.shape and pred.data.all()
    np.testing.assert_array_equal(errors.data, np.where(truth, ERROR_TP, ERROR_FP))
    for value, rgb in ((ERROR_TP, TP_RGB), (ERROR_FP, FP_RGB)):
        colour = errors.colormap.map(np.array([value]))[0]
        np.testing.assert_allclose(colour[:3], np.array(rgb) / 255, atol=1e-3)
    lesion_share = truth.reshape(len(truth), -1).mean(axis=1)
    assert widget.metrics["iou"] == pytest.approx(lesion_share.mean())
    assert widget.metrics["recall"] == pytest.approx(1.0)
    assert "mean over 6 images: IoU" in widget.metrics_label.text()


def test_a_ct_checkpoint_on_an_image_set_is_a_clear_error(
    viewer, qtbot, image_set: Path, tmp_path: Path
) -> None:
    viewer.open(str(image_set), plugin=PLUGIN)
    widget = dock(viewer, "Inference")
    widget.image.value = _role(viewer, "imageset")
    widget.checkpoint.value = str(_checkpoint(tmp_path / "ct.pt", 7, 64, everything=False))
    widget.device.value = "cpu"
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    assert "is a CT model (7 input channels)" in widget.status.text()
    assert _role(viewer, "prediction") is None


def test_training_widget_starts_a_2d_run_on_an_image_folder(
    viewer, qtbot, image_set: Path, tmp_path: Path
) -> None:
    from napari_lunaseg._session import session_for
    from src_train.model import load_checkpoint

    widget = dock(viewer, "Training")
    inference = dock(viewer, "Inference")
    run = tmp_path / "compare"
    widget.data_dir.value = str(image_set)
    widget.run_dir.value = str(run)
    widget.model.value = "segnet"
    widget.loss.value = "dice"
    widget.epochs.value = 2
    widget.batch_size.value = 2
    widget.device.value = "cpu"
    command = widget.command()
    assert command[2:4] == ["compare", str(image_set)]
    assert command[command.index("--models") + 1] == "segnet"
    widget.start_button.click()
    assert widget.running, widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    assert widget.exit_code == 0, widget.status.text()
    assert len(widget.epochs_seen) == 2 and widget.table.rowCount() == 2
    best = run / "runs" / "segnet_dice_s0" / "checkpoint_best.pt"
    assert widget.best_checkpoint == best and session_for(viewer).best_checkpoint == best
    assert Path(str(inference.checkpoint.value)) == best
    assert load_checkpoint(best).model_config.in_channels == 3
    assert (run / "report.md").is_file()
