"""Whole-series inference: values equal a plain pass, progress and cancel, OOM, tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import chest, random_model, reference_prob
from torch import nn

from src_train import devices
from src_train.errors import CancelledError, ConfigError
from src_train.infer import (
    TunerCache,
    run_inference,
)
from src_train.infer.runner import BODY_MARGIN_PX


# ---------------------------------------------------------------------------------------------
# run_inference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(9, 44, 52), (3, 37, 41), (1, 24, 24)])
def test_shapes_dtypes_and_values_match_a_plain_pass(shape: tuple[int, int, int]) -> None:
    """Odd sizes (not multiples of 8) and series thinner than 7 slices come back whole."""
    model = random_model()
    ct = chest(shape)
    res = run_inference(ct, model, device="cpu", precision="fp32", crop_to_body=False)
    assert res.prob.shape == shape and res.prob.dtype == np.float16
    assert res.mask.shape == shape and res.mask.dtype == bool
    np.testing.assert_array_equal(res.mask, res.prob >= np.float16(0.5))
    np.testing.assert_allclose(res.prob, reference_prob(model, ct), atol=2e-3)
    assert model.training is False and isinstance(model.down[0][1], nn.BatchNorm2d)  # untouched


@pytest.mark.parametrize(
    ("native_bf16", "amx", "expected"),
    [(True, True, "bf16"), (True, False, "fp32"), (False, False, "fp32")],
)
def test_auto_precision_on_a_cpu_is_bf16_only_where_amx_makes_it_faster(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool, amx: bool, expected: str
) -> None:
    """With AMX turned off, bf16 inference ran 0.75x the speed of fp32 on a Xeon with AVX-512
    bf16 (benchmarks/infer_precision.py): auto keeps fp32 there, as training does."""
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: amx)
    ct = chest((3, 24, 24))
    res = run_inference(ct, random_model(), device="cpu", crop_to_body=False)
    assert res.settings.precision == expected
    asked = run_inference(ct, random_model(), device="cpu", precision="bf16", crop_to_body=False)
    assert asked.settings.precision == "bf16"


@pytest.mark.parametrize(
    ("cap", "usable"),
    [
        (None, True),
        ("ALL", True),
        ("AVX512_CORE_AMX", True),
        ("AVX512_CORE_BF16", False),
        ("avx2", False),
    ],
)
def test_a_onednn_cap_below_amx_counts_as_no_amx(
    monkeypatch: pytest.MonkeyPatch, cap: str | None, usable: bool
) -> None:
    """ONEDNN_MAX_CPU_ISA keeps oneDNN off the AMX tiles: bf16 would not pay, so none is used."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert devices.cpu_has_amx() is usable
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert devices.cpu_has_amx() is False


def test_batch_size_and_crop_do_not_change_the_result() -> None:
    model = random_model(3)
    ct = chest((7, 192, 224))
    ref = reference_prob(model, ct)
    for batch in (1, 3):
        res = run_inference(ct, model, device="cpu", precision="fp32", batch_size=batch)
        r0, r1, c0, c1 = res.settings.crop_irc
        assert (r1 - r0) * (c1 - c0) < ct.hu.shape[1] * ct.hu.shape[2]  # the crop saved work
        body = np.zeros(ct.hu.shape, dtype=bool)
        body[
            :, r0 + BODY_MARGIN_PX : r1 - BODY_MARGIN_PX, c0 + BODY_MARGIN_PX : c1 - BODY_MARGIN_PX
        ] = True
        assert (ct.hu[:, ~body[0]] <= -500).all()  # everything dense lies inside
        np.testing.assert_allclose(res.prob[body], ref[body], atol=2e-3)
        assert res.settings.batch_size == batch


class LeftToRight(nn.Module):
    """Logits = the centre slice's left-to-right HU difference / 100: mirroring the slice negates
    them, so a mirrored average is sigmoid(g) / 2 + sigmoid(-g) / 2 = 0.5 at every pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = torch.tensor([[[[-1.0, 0.0, 1.0]]]]) / 100.0
        return nn.functional.conv2d(x[:, 3:4], kernel, padding=(0, 1))


@pytest.mark.parametrize("batch", [1, 4])
def test_mirror_averages_the_pass_over_mirrored_slices(batch: int) -> None:
    """--mirror: each probability is the mean of the plain pass and of the pass over the slice
    mirrored left-right, mirrored back (the known answer 0.5 for LeftToRight), cropped or not."""
    ct = chest((6, 40, 56))
    for crop in (False, True):
        options = {"device": "cpu", "precision": "fp32", "batch_size": batch, "crop_to_body": crop}
        plain = run_inference(ct, LeftToRight(), **options)
        res = run_inference(ct, LeftToRight(), mirror=True, **options)
        r0, r1, c0, c1 = res.settings.crop_irc
        box = res.prob[:, r0:r1, c0:c1]
        assert np.abs(plain.prob[:, r0:r1, c0:c1] - 0.5).max() > 0.49  # the body's edges
        np.testing.assert_array_equal(box, np.float16(0.5))
        np.testing.assert_array_equal(res.mask, res.prob >= np.float16(0.5))


def test_bf16_is_close_to_fp32() -> None:
    model = random_model(5)
    ct = chest((5, 48, 48))
    fp32 = run_inference(ct, model, device="cpu", precision="fp32").prob.astype(np.float32)
    bf16 = run_inference(ct, model, device="cpu", precision="bf16").prob.astype(np.float32)
    assert np.abs(fp32 - bf16).mean() < 0.02


def test_progress_reaches_the_total_and_cancel_stops() -> None:
    model = random_model()
    ct = chest((10, 32, 32))
    calls: list[tuple[int, int]] = []
    run_inference(
        ct, model, device="cpu", batch_size=3, progress=lambda d, t, m: calls.append((d, t))
    )
    assert calls == [(0, 10), (3, 10), (6, 10), (9, 10), (10, 10)]  # before the first batch too
    polls = iter([False, False, True])
    with pytest.raises(CancelledError, match="after 6 of 10 slices"):
        run_inference(ct, model, device="cpu", batch_size=3, should_stop=lambda: next(polls))


class OomAbove(nn.Module):
    """Raises an out-of-memory error for batches larger than ``limit`` (as CUDA would)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.inner = random_model()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_batch() -> None:
    ct = chest((12, 32, 32))
    res = run_inference(ct, OomAbove(2), device="cpu", batch_size=8, precision="fp32")
    assert res.settings.batch_size == 2
    np.testing.assert_allclose(res.prob, reference_prob(OomAbove(99).inner, ct), atol=2e-3)
    with pytest.raises(ConfigError, match="even with one slice"):
        run_inference(ct, OomAbove(0), device="cpu", batch_size=4)


def test_bad_options_raise_config_errors() -> None:
    ct = chest((3, 24, 24))
    with pytest.raises(ConfigError, match="threshold"):
        run_inference(ct, random_model(), threshold=1.5)
    with pytest.raises(ConfigError, match="fp16"):
        run_inference(ct, random_model(), device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="batch_size"):
        run_inference(ct, random_model(), batch_size=0)


def test_the_measured_choice_is_reused_for_similar_series() -> None:
    tuners = TunerCache()
    first = run_inference(chest((40, 40, 40)), random_model(), device="cpu", tuners=tuners)
    second = run_inference(chest((12, 40, 44)), random_model(), device="cpu", tuners=tuners)
    assert first.settings.tuned and not second.settings.tuned and len(tuners) == 1
    assert (first.settings.threads, first.settings.channels_last, first.settings.batch_size) == (
        second.settings.threads,
        second.settings.channels_last,
        second.settings.batch_size,
    )
