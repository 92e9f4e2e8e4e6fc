"""The fast CPU path: the exported model run by OpenVINO equals eager PyTorch; fallbacks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from models import chest, random_model

from src_train.errors import ConfigError
from src_train.infer import InferenceOptions, TunerCache, backends, run_inference
from src_train.infer.backends import (
    EQUAL_TOLERANCE,
    ProbabilityGraph,
    candidate_engines,
    export_onnx,
    pad_to_multiple,
)
from src_train.model import ModelConfig, build_model

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.skipif(not backends.is_installed("openvino"), reason="openvino missing"),
]

#: One float16 step at probabilities near 1 (the runner stores probabilities as float16).
FLOAT16_STEP = 2.0**-11


def eager() -> InferenceOptions:
    """Eager PyTorch, NCHW (the reference)."""
    return InferenceOptions(device="cpu", engine="torch", channels_last=False, batch_size=3)


def segnet() -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model(ModelConfig(arch="segnet"))
    with torch.no_grad():
        model.input_norm.running_mean.fill_(-500.0)
        model.input_norm.running_var.fill_(500.0**2)
    return model.eval()


@pytest.mark.parametrize("shape", [(9, 64, 96), (7, 75, 53)], ids=["multiple", "odd"])
def test_the_runtime_gives_eager_pytorchs_probabilities(shape: tuple[int, int, int]) -> None:
    model = random_model()
    ct = chest(shape)
    reference = run_inference(ct, model, eager())
    fast = run_inference(ct, model, device="cpu", engine="openvino", batch_size=3)
    assert fast.settings is not None and fast.settings.engine == "openvino"
    assert "openvino" in fast.settings.describe()
    dp = np.abs(fast.prob.astype(np.float32) - reference.prob.astype(np.float32))
    assert dp.max() <= FLOAT16_STEP
    near_threshold = np.abs(reference.prob.astype(np.float32) - 0.5) <= FLOAT16_STEP
    assert not ((fast.mask != reference.mask) & ~near_threshold).any()
    assert len(fast.candidates) == len(reference.candidates)


def test_the_exported_graph_equals_the_module_within_the_stated_tolerance() -> None:
    model = random_model()
    runner = ProbabilityGraph(model).eval()
    graph = export_onnx(model, torch.zeros(1, 7, 8, 8))
    compiled = backends._compile_openvino(graph, threads=1)
    rng = np.random.default_rng(0)
    for shape in [(1, 7, 16, 24), (3, 7, 40, 32)]:  # batch, height and width are free
        x = (rng.random(shape, dtype=np.float32) * 2000 - 1000).astype(np.float32)
        with torch.inference_mode():
            want = runner(torch.from_numpy(x)).numpy()
        got = compiled(x)[0]
        assert got.shape == want.shape == (shape[0], *shape[2:])
        assert np.abs(got - want).max() <= EQUAL_TOLERANCE


def test_padding_repeats_the_edge_like_the_model() -> None:
    x = np.arange(2 * 1 * 3 * 5, dtype=np.float32).reshape(2, 1, 3, 5)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (2, 1, 4, 8)
    want = torch.nn.functional.pad(torch.from_numpy(x), (0, 3, 0, 1), mode="replicate")
    assert np.array_equal(padded, want.numpy())
    assert pad_to_multiple(padded, 4) is padded


def test_auto_lets_the_tuner_measure_the_runtime_and_exports_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real_export = backends.export_onnx

    def counted(module, example):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_export(module, example)

    monkeypatch.setattr(backends, "export_onnx", counted)
    model, tuners = random_model(), TunerCache()
    for _ in range(2):  # two series of one run share the export and the tuning
        run_inference(chest((12, 64, 64)), model, device="cpu", tuners=tuners)
    assert len(calls) == 1
    (tuner,) = tuners._tuners.values()
    tried = {execution for _threads, execution, _batch in tuner.timings()}
    assert {True, False, "openvino"} <= tried


def test_without_the_runtime_pytorch_runs_and_asking_for_it_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backends, "is_installed", lambda runtime: False)
    model, ct = random_model(), chest((6, 48, 48))
    result = run_inference(ct, model, device="cpu", batch_size=3)
    assert result.settings is not None and result.settings.engine == "torch"
    reference = run_inference(ct, model, eager())
    assert np.abs(result.prob.astype(np.float32) - reference.prob).max() <= FLOAT16_STEP
    with pytest.raises(ConfigError, match=r"openvino needs the packages openvino, onnx"):
        run_inference(ct, model, device="cpu", engine="openvino")


def test_a_model_the_exporter_cannot_take_runs_in_pytorch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SegNet's max-unpooling does not export: it runs eagerly, the reason logged once."""
    model, ct = segnet(), chest((6, 48, 48))
    tuners = TunerCache()
    with caplog.at_level(logging.WARNING, logger="src_train.infer.backends"):
        for _ in range(2):
            result = run_inference(ct, model, device="cpu", engine="auto", tuners=tuners)
    assert result.settings is not None and result.settings.engine == "torch"
    assert caplog.text.count("could not be exported") == 1
    reference = run_inference(ct, model, eager())
    assert np.abs(result.prob.astype(np.float32) - reference.prob).max() <= FLOAT16_STEP


def test_a_failed_export_is_logged_and_pytorch_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(module, example):  # type: ignore[no-untyped-def]
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(backends, "export_onnx", broken)
    with caplog.at_level(logging.WARNING, logger="src_train.infer.backends"):
        result = run_inference(chest((6, 48, 48)), random_model(), device="cpu", engine="openvino")
    assert result.settings is not None and result.settings.engine == "torch"
    assert "could not be exported" in caplog.text and "unsupported operator" in caplog.text


def test_the_runtime_is_offered_only_for_fp32_on_the_cpu() -> None:
    model, cpu = random_model(), torch.device("cpu")
    assert candidate_engines("auto", cpu, "fp32", model) == ["openvino"]
    assert candidate_engines("auto", cpu, "bf16", model) == []
    assert candidate_engines("auto", torch.device("cuda"), "fp32", model) == []
    assert candidate_engines("torch", cpu, "fp32", model) == []
    assert candidate_engines("auto", cpu, "fp32", model, format_pinned=True) == []
    assert candidate_engines("auto", cpu, "fp32", torch.nn.Conv2d(7, 1, 3)) == []
    with pytest.raises(ConfigError, match="Unknown engine 'tvm'"):
        candidate_engines("tvm", cpu, "fp32", model)


def test_cli_engine_option_is_not_a_settings_difference(
    tiny_synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models import checkpoint_file

    from src_train.cli import main

    ckpt = checkpoint_file(tmp_path)
    out = tmp_path / "out"
    base = ["infer", str(tiny_synth_dir), "--out", str(out), "--checkpoint", str(ckpt)]
    base += ["--device", "cpu", "--limit", "1"]
    assert main([*base, "--engine", "openvino"]) == 0
    assert "openvino batch" in capsys.readouterr().out
    assert main([*base, "--limit", "2", "--engine", "torch"]) == 0  # resumes, no refusal
    printed = capsys.readouterr().out
    assert "1 series computed, 1 skipped" in printed
    assert "channels-last batch" in printed or "NCHW batch" in printed
