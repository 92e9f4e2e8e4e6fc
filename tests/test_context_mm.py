"""Issue 22: context slices at fixed physical offsets (``--context-mm``): resampled between
slices, the same input at any slice thickness, recorded in the checkpoint and used by inference
and training alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from models import chest
from training import config_for

from src_train.context import context_stack, step_slices_of
from src_train.ct import CtVolume, Geometry
from src_train.datasets import SampleConfig, TrainingDataset
from src_train.errors import ConfigError
from src_train.infer import run_inference
from src_train.infer.detector import load_detector
from src_train.model import ModelConfig, build_model, load_checkpoint
from src_train.records.contract import contract_of_checkpoint
from src_train.records.spacing import spacing_warning
from src_train.train import LATEST, Trainer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_samples_between_slices_are_interpolated_and_the_ends_repeat() -> None:
    hu = (np.arange(10, dtype=np.int16) * 10)[:, None, None] * np.ones((1, 2, 3), np.int16)
    stack = context_stack(hu, np.array([0, 5, 9]), 2, step_slices=0.5)
    assert stack.shape == (3, 5, 2, 3) and stack.dtype == np.float32
    np.testing.assert_array_equal(
        stack[:, :, 0, 0], [[0, 0, 0, 5, 10], [40, 45, 50, 55, 60], [80, 85, 90, 90, 90]]
    )
    np.testing.assert_array_equal(  # a step of one slice is the voxel context
        context_stack(hu, np.arange(10), 3, step_slices=1.0), context_stack(hu, np.arange(10), 3)
    )
    assert step_slices_of(None, 2.5) is None and step_slices_of(2.0, 0.8) == pytest.approx(2.5)


def _ramp(slice_mm: float, n: int) -> CtVolume:
    """HU = 20 x z (mm): a scan whose value says where along z it was sampled."""
    z_mm = np.arange(n) * slice_mm
    hu = np.broadcast_to((20.0 * z_mm - 900.0)[:, None, None], (n, 8, 8)).astype(np.int16)
    geometry = Geometry(
        (n, 8, 8), (0.0, 0.0, 0.0), (0.7, 0.7, slice_mm), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    return CtVolume(hu=hu.copy(), geometry=geometry, series_uid=f"ramp{slice_mm}")


def test_the_mm_context_of_a_point_is_the_same_at_any_slice_thickness() -> None:
    context_mm = 2.0
    stacks = []
    for slice_mm, n in ((0.5, 81), (1.25, 33), (2.5, 17)):
        ct = _ramp(slice_mm, n)
        center = round(20.0 / slice_mm)  # z = 20 mm in every scan
        step = step_slices_of(context_mm, slice_mm)
        stacks.append(context_stack(ct.hu, np.array([center]), 3, step_slices=step)[0, :, 0, 0])
        voxel = context_stack(ct.hu, np.array([center]), 3)[0, :, 0, 0]
        # the voxel context spans 3 x the slice spacing either side: different per scan
        assert voxel[-1] - voxel[0] == pytest.approx(20.0 * 6 * slice_mm, abs=1)
    expected = 20.0 * (20.0 + context_mm * np.arange(-3, 4)) - 900.0
    for stack in stacks:
        np.testing.assert_allclose(stack, expected, atol=1.0)  # int16 rounding of the ramp


def test_inference_feeds_the_model_its_mm_context() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(context_mm=3.0)).eval()
    with torch.no_grad():
        model.input_norm.running_mean.fill_(-500.0)
        model.input_norm.running_var.fill_(500.0**2)
    ct = chest((9, 48, 48))  # 2 mm slices: samples every 1.5 slices
    ct.hu[:] += (np.arange(9, dtype=np.int16) * 80)[:, None, None]  # it changes along z
    result = run_inference(ct, model, device="cpu", precision="fp32", crop_to_body=False)
    with torch.no_grad():
        x = context_stack(ct.hu, np.arange(9), 3, step_slices=1.5)
        reference = torch.sigmoid(model(torch.from_numpy(x)))[:, 0].numpy()
        voxel = torch.sigmoid(model(torch.from_numpy(context_stack(ct.hu, np.arange(9)))))
    error = np.abs(result.prob.astype(np.float32) - reference).max()
    assert error < 3e-4  # float16 output of the same computation
    assert np.abs(voxel[:, 0].numpy() - reference).max() > 3 * error  # the definition matters
    with pytest.raises(ConfigError, match="context_mm must be a positive distance"):
        ModelConfig(context_mm=0.0)


def test_training_with_context_mm_records_it_and_its_crops_use_it(
    tiny_synth_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = config_for(tiny_synth_dir, cache_dir, run, epochs=1, epoch_samples=8, context_mm=1.5)
    trainer = Trainer(config)
    trainer.fit()
    ckpt = load_checkpoint(run / LATEST)
    assert ckpt.model_config.context_mm == 1.5
    contract = contract_of_checkpoint(ckpt)
    assert contract is not None and contract.options["context_mm"] == 1.5
    detector = load_detector(run / LATEST)
    assert "context every 1.5 mm" in detector.describe()

    # A crop's channels are the resampled context of its center slice.
    sample = SampleConfig(crop_size=32, window_size=32, context_mm=1.5)
    dataset = TrainingDataset(trainer.cache, trainer.train_uids, 4, sample)
    spec = dataset.spec(0)
    hu, _ = trainer.cache.arrays(trainer.train_uids[spec.series])
    slice_mm = Geometry.from_dict(
        trainer.cache.meta(trainer.train_uids[spec.series]).geometry
    ).spacing_irc_mm[0]
    image, _ = dataset.crop(spec)
    rows = slice(spec.row0, spec.row0 + 32)
    cols = slice(spec.col0, spec.col0 + 32)
    expected = context_stack(hu, np.array([spec.index]), 3, rows, cols, 1.5 / slice_mm)[0]
    np.testing.assert_array_equal(
        image.numpy()[:, : expected.shape[1], : expected.shape[2]], expected
    )


def test_the_spacing_warning_names_what_an_mm_context_expects() -> None:
    trained = {"slice": [0.6, 3.0], "pixel": [0.5, 0.95]}
    line = spacing_warning(
        trained, (10.0, 0.7, 0.7), "s1", "mm.pt", context_slices=3, context_mm=2.0
    )
    assert line is not None and "slices 10 mm apart (trained on 0.6-3 mm" in line
    assert "expects its context every 2 mm (3 either side)" in line
    assert "interpolated between slices 10 mm apart" in line
    assert spacing_warning(trained, (2.5, 0.7, 0.7), "s1", "mm.pt", 3, 2.0) is None
